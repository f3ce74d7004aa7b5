"""Streams written by an earlier version of fcmbench decode to the same values with this one, for every shipped
codec (and code to the same bytes from the same input, for the codecs fcmbench computes itself).

The streams and what they decoded to are in ``tests/golden`` (``make_golden.py`` wrote them). A codec whose streams
change meaning on purpose bumps its ``stream_version`` and the golden streams are written again.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from fcmbench.codecs.learned.mosaic import TiledFeatureCodec
from fcmbench.core import registry
from fcmbench.core.bitstream import Container

GOLDEN = Path(__file__).resolve().parent / "golden"
sys.path.insert(0, str(GOLDEN))
import make_golden  # noqa: E402

ENTRIES = json.loads((GOLDEN / "manifest.json").read_text())["streams"]
EXTERNAL = {"vtm-feature", "vtm-image"}  # their encoder is a separate program, whose version may differ


def entry_id(entry: dict) -> str:
    return Path(entry["stream"]).stem


@pytest.fixture(scope="module")
def sources() -> dict:
    torch.set_num_threads(1)
    return make_golden.inputs()


def codec_for(entry: dict):
    return make_golden.codec(entry["method"], entry.get("settings", {}))


def rounding_steps(codec, data: bytes) -> dict[str, tuple[float, float]]:
    """Tiled codecs round each decoded level to 8 bits of its range: per level, one step and the largest magnitude.
    Another CPU's float kernels can put a value of the synthesis on the other side of a rounding boundary, one step
    away; any other codec decodes to the same values everywhere."""
    if not isinstance(codec, TiledFeatureCodec):
        return {}
    levels = codec.read_levels(Container.from_bytes(data, codec.name, codec.stream_version))
    return {level.name: ((level.high - level.low) / 255, max(abs(level.low), abs(level.high))) for level in levels}


FLIPPED = 0.01  # the share of a tiled level's values allowed one rounding step away


def assert_close(mine: dict, golden: dict, what: str, steps: dict[str, tuple[float, float]] | None = None) -> None:
    assert set(mine) == set(golden), what
    for level, stats in golden.items():
        got = mine[level]
        assert got["shape"] == stats["shape"], f"{what} level {level}"
        step, bound = (steps or {}).get(level, (0.0, 0.0))
        flips = FLIPPED * math.prod(stats["shape"])
        tolerance = {"sum": flips * step, "sum_sq": flips * step * (2 * bound + step)}
        for key in ("sum", "sum_sq"):
            assert math.isclose(got[key], stats[key], rel_tol=1e-5, abs_tol=max(1e-3, tolerance[key])), \
                f"{what} level {level} {key}"
        values = pytest.approx(stats["sample"], rel=1e-4, abs=1e-4 + step)
        assert got["sample"] == values, f"{what} level {level} values"


@pytest.mark.parametrize("entry", ENTRIES, ids=entry_id)
def test_golden_stream_decodes_to_the_same_values(entry):
    torch.set_num_threads(1)
    data = (GOLDEN / "streams" / entry["stream"]).read_bytes()
    codec = codec_for(entry)
    steps = rounding_steps(codec, data)
    assert_close(make_golden.summary(codec.decode(data)), entry["decoded"], entry["stream"], steps)


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e["method"] not in EXTERNAL], ids=entry_id)
def test_same_input_codes_to_the_same_bytes(entry, sources):
    source = sources[entry["source"]]
    if make_golden.digest(source) != entry["input_sha256"]:
        pytest.skip("the shapes_rcnn front computes other bits here than where the golden input was made (its "
                    "weights changed, or this CPU's float kernels differ)")
    codec = codec_for(entry)
    point = codec.parse_rate(entry["rate"])
    assert codec.encode(source, point) == (GOLDEN / "streams" / entry["stream"]).read_bytes()


def test_every_shipped_codec_has_golden_streams():
    shipped = set(registry.methods.without_aliases(registry.methods.names()))
    assert {entry["method"] for entry in ENTRIES} == shipped
