"""Write the golden streams: one stream per shipped codec and rate point, made by this version of fcmbench.

``tests/test_golden_streams.py`` decodes them with the code under test, so a refactoring that changes what a
stream means fails there. Regenerate only when a codec's ``stream_version`` is bumped or its shipped checkpoints
are retrained on purpose, and only that codec's streams (the others keep what an earlier version wrote):

    .venv/bin/python tests/golden/make_golden.py [METHOD ...]

Learned codecs and anchors code the shapes_rcnn front features (or the image) of one seeded shapes scene,
cropped to 128 x 128 to keep the streams small; ``raw`` and ``quant`` code a small seeded feature set.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

from fcmbench.core import registry
from fcmbench.core.codec import CodecOptions, ImageCodec
from fcmbench.core.featureset import FeatureSet

HERE = Path(__file__).resolve().parent
STREAMS = HERE / "streams"
MANIFEST = HERE / "manifest.json"
SCENE_SEED, SIDE = 7, 128
SAMPLES = 64  # values per level (evenly strided) kept beside the statistics


def scene() -> torch.Tensor:
    """The seeded shapes scene, top-left 128 x 128, as a float image [3, H, W]."""
    from fcmbench.datasets.base import load_image
    from fcmbench.datasets.coco import CocoDataset
    from fcmbench.datasets.shapes import write_split

    folder = Path(tempfile.mkdtemp())
    write_split(folder, count=1, seed=SCENE_SEED)
    item = CocoDataset(folder / "images", folder / "annotations.json").items()[0]
    return load_image(item)[:, :SIDE, :SIDE].contiguous()


def small_features() -> FeatureSet:
    generator = torch.Generator().manual_seed(SCENE_SEED)
    levels = {"0": torch.randn(4, 8, 8, generator=generator), "1": 3 * torch.randn(4, 4, 4, generator=generator)}
    return FeatureSet(levels, (32, 32), (32, 32))


def inputs() -> dict[str, FeatureSet | torch.Tensor]:
    from fcmbench.tasks.base import TaskModelOptions

    image = scene()
    task = registry.task_models.get("shapes_rcnn")(TaskModelOptions())
    with torch.inference_mode():
        features = task.front(image)
    return {"image": image, "features": features, "small": small_features()}


def digest(x: FeatureSet | torch.Tensor) -> str:
    tensors = [x] if isinstance(x, torch.Tensor) else [x[name] for name in x]
    hasher = hashlib.sha256()
    for tensor in tensors:
        hasher.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    return hasher.hexdigest()


def summary(x: FeatureSet | torch.Tensor) -> dict[str, dict]:
    """Per level (or for the image): shape, sum, sum of squares and a strided sample of values."""
    levels = {"image": x} if isinstance(x, torch.Tensor) else {name: x[name] for name in x}
    out = {}
    for name, tensor in levels.items():
        flat = tensor.detach().to(torch.float64).flatten()
        stride = max(1, flat.numel() // SAMPLES)
        out[name] = {"shape": list(tensor.shape), "sum": float(flat.sum()), "sum_sq": float((flat**2).sum()),
                     "sample": flat[::stride][:SAMPLES].tolist()}
    return out


def source_of(method: str, coder) -> str:
    if method in ("raw", "quant"):
        return "small"
    return "image" if isinstance(coder, ImageCodec) else "features"


def codec(method: str, settings: dict[str, str]):
    """The shipped codec as the golden streams were made: shapes_rcnn features, VVC at preset faster."""
    vvc = {"preset": "faster"} if method.startswith("vtm-") else {}
    return registry.methods.get(method)(CodecOptions(task_model="shapes_rcnn", settings={method: vvc | settings}))


RASTER = ("lmsfc", "tamsf")  # also coded in CompressAI's raster order (the default is the wavefront)


def entry(method: str, settings: dict[str, str], point, sources: dict) -> dict:
    """Code the method's source at one point, write the stream, and describe it and what it decodes to."""
    coder = codec(method, settings)
    source = source_of(method, coder)
    data = coder.encode(sources[source], point)
    suffix = "".join(f"-{value}" for value in settings.values())
    path = STREAMS / f"{method}-{point.label}{suffix}.bin"
    path.write_bytes(data)
    print(f"{path.name}: {len(data)} bytes", file=sys.stderr)
    return {"method": method, "rate": point.label, "rate_value": point.value, "source": source,
            "settings": settings, "input_sha256": digest(sources[source]), "stream": path.name, "bytes": len(data),
            "stream_sha256": hashlib.sha256(data).hexdigest(), "decoded": summary(coder.decode(data))}


def streams_of(method: str, sources: dict) -> list[dict]:
    points = codec(method, {}).rate_points()
    entries = [entry(method, {}, point, sources) for point in dict.fromkeys([points[0], points[-1]])]
    if method in RASTER:
        entries.append(entry(method, {"order": "raster"}, points[0], sources))
    return entries


def main(methods: list[str]) -> None:
    """Every shipped codec's streams, or only those of ``methods`` in place of theirs (the others are kept)."""
    torch.set_num_threads(1)
    sources = inputs()
    STREAMS.mkdir(exist_ok=True)
    if not methods:
        entries = [e for method in registry.methods.without_aliases(registry.methods.names())
                   for e in streams_of(method, sources)]
    else:
        previous, entries = json.loads(MANIFEST.read_text())["streams"], []
        for old in previous:
            if old["method"] in methods:
                (STREAMS / old["stream"]).unlink(missing_ok=True)
        for old in previous:
            if old["method"] not in methods:
                entries.append(old)
            elif not any(e["method"] == old["method"] for e in entries):
                entries += streams_of(old["method"], sources)
    MANIFEST.write_text(json.dumps({"scene_seed": SCENE_SEED, "side": SIDE, "streams": entries}, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
