"""Hostile bitstreams for every codec: a structure-aware hypothesis fuzzer (``tests/fuzzing.py``) and the
regression corpus of every stream that ever failed. Each case is decoded in a long-lived worker process under
a memory limit and a per-case alarm; the only acceptable outcomes are a valid decode or an FcmbenchError.

CI runs ``FCMBENCH_FUZZ_CASES`` (default 200) cases per codec; ``make fuzz`` runs 10,000.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings

from fuzzing import CODECS, GOOD, Worker, corpus, fields_of, keep, mutated, seed_streams, set_field

CASES = int(os.environ.get("FCMBENCH_FUZZ_CASES", "200"))
pytestmark = pytest.mark.fuzz

# The targeted edits of issue #26 that once crashed (segfault in the rANS decoder), hung, allocated gigabytes,
# decoded NaN or leaked a RuntimeError/ValueError/ZeroDivisionError: (codec, field, value), each must be rejected.
LMSFC = ("lmsfc", "lmsfc-nocm", "tamsf")
TILED = ("elic-feat", "tcm-feat", "mfiba-elic", "mfiba-tcm")
NAN = float("nan")

TARGETED = [
    *[("elic-feat", f"level 0 {axis}", 65535) for axis in ("height", "width")],
    *[(codec, f"P2 {axis}", value) for codec in LMSFC for axis in ("height", "width") for value in (0, 65535)],
    ("vtm-feature", "level 0 channels", 0), ("vtm-feature", "level 1 width", 0),
    ("vtm-feature", "level 0 height", 65535), ("vtm-feature", "min", NAN), ("vtm-feature", "max", float("inf")),
    *[(codec, f"level {level} {axis}", value) for codec in TILED for level, axis, value in
      (("0", "height", 65535), ("1", "width", 0), ("2", "height", 1), ("0", "min", NAN), ("1", "max", -3.4e38))],
    *[(codec, field, value) for codec in ("raw", "quant", "lmsfc", "elic-feat", "vtm-feature", "elic")
      for field, value in (("input width", 0), ("original height", 65535), ("input height", 4097))],
    ("elic", "height", 65535), ("tcm", "width", 0), ("vtm-image", "coded height", 65535),
    ("quant", "bit depth", 0),
]


@pytest.fixture(scope="module", params=CODECS)
def codec(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def worker(codec):
    """One decoder process per codec; pytest groups the tests by codec, so one lives at a time."""
    process = Worker(codec)
    yield process
    process.close()


def test_seed_streams_decode(codec, cache_dir, worker):
    """The fuzzer starts from real streams that decode (else every case would be a rejection)."""
    assert [worker.decode(data) for data in seed_streams(codec, cache_dir)] == ["decoded", "decoded"]


def test_regression_corpus_is_decoded_or_rejected(codec, worker):
    outcomes = {path.name: worker.decode(path.read_bytes()) for path in corpus(codec)}
    assert {name: o for name, o in outcomes.items() if o not in GOOD} == {}


def test_the_issues_lying_fields_are_rejected(codec, cache_dir, worker):
    data = seed_streams(codec, cache_dir)[0]
    fields = {f.name: f for f in fields_of(codec, data)}
    outcomes = {(field, value): worker.decode(set_field(data, fields[field], value))
                for name, field, value in TARGETED if name == codec}
    assert outcomes  # every codec has targeted edits
    assert {case: o for case, o in outcomes.items() if o != "rejected"} == {}


def test_hostile_streams_are_decoded_or_rejected(codec, cache_dir, worker):
    seeds = seed_streams(codec, cache_dir)
    outcomes, failed = Counter(), {}

    # every case runs (no shrinking through a subprocess); each failure is kept for the corpus
    @settings(max_examples=CASES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(data=mutated(codec, seeds))
    def one_case(data: bytes) -> None:
        outcome = worker.decode(data)
        outcomes[outcome.split(" at ")[0]] += 1
        if outcome not in GOOD:
            failed[str(keep(codec, data))] = outcome

    one_case()
    summary = {"codec": codec, "cases": sum(outcomes.values()), "outcomes": dict(outcomes),
               "restarts": worker.restarts}
    print(json.dumps(summary))
    if os.environ.get("FCMBENCH_FUZZ_LOG"):
        with open(os.environ["FCMBENCH_FUZZ_LOG"], "a") as log:
            log.write(json.dumps(summary) + "\n")
    assert failed == {}, f"{len(failed)} streams failed (kept in tests/fuzz_corpus): {failed}"
