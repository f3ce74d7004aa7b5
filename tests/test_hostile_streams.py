"""The targeted edits of issue #26 that once crashed, hung or leaked: each must now be a BitstreamError.

Each stream is decoded in a fuzz worker process (``tests/fuzzing.py``), so a regression shows as a crash or a
hang of the worker rather than taking the test run down."""

from __future__ import annotations

import pytest

from fuzzing import Worker, fields_of, seed_streams, set_field

LMSFC = ("lmsfc", "lmsfc-nocm", "tamsf")
TILED = ("elic-feat", "tcm-feat", "mfiba-elic", "mfiba-tcm")
NAN = float("nan")

CASES = [
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


@pytest.fixture(scope="module")
def workers():
    """The worker of the codec asked for; the cases are grouped by codec, so one process lives at a time."""
    alive: dict[str, Worker] = {}

    def get(codec: str) -> Worker:
        for name in [n for n in alive if n != codec]:
            alive.pop(name).close()
        return alive.setdefault(codec, Worker(codec))

    yield get
    for worker in alive.values():
        worker.close()


CASES.sort(key=lambda case: case[0])  # grouped by codec: one worker start each


@pytest.mark.parametrize(("codec", "field", "value"), CASES, ids=[f"{c}-{f}-{v}" for c, f, v in CASES])
def test_a_lying_field_is_rejected(codec, field, value, cache_dir, workers):
    data = seed_streams(codec, cache_dir)[0]
    target = next(f for f in fields_of(codec, data) if f.name == field)
    assert workers(codec).decode(set_field(data, target, value)) == "rejected"


def test_the_limits_reject_what_a_worker_could_not_survive():
    """Without the checks these sizes mean a tensor of gigabytes: the limits stop them before any allocation."""
    from fcmbench.errors import BitstreamError
    from fcmbench.limits import MAX_FEATURE_VALUES, check_level_shapes

    with pytest.raises(BitstreamError, match="level 'p2' height 65535"):
        check_level_shapes({"p2": (256, 65535, 64)}, (4096, 4096))
    with pytest.raises(BitstreamError, match=f"at most {MAX_FEATURE_VALUES}"):
        check_level_shapes({str(i): (2048, 4096, 4096) for i in range(2)}, (4096, 4096))
