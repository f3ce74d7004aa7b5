"""A codec from another package registers through the entry point and runs with no change to fcmbench."""

import csv
import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import FCMBENCH

pytestmark = pytest.mark.slow

PLUGIN_CODE = '''
import numpy as np
import torch

from fcmbench.core.bitstream import Container
from fcmbench.core.codec import FeatureCodec, RatePoint
from fcmbench.core.featureset import FeatureSet
from fcmbench.core.tensorio import pack_shape, unpack_shape


class HalfCodec(FeatureCodec):
    """Every level as float16: a third-party codec in a dozen lines."""

    name = "half"

    def rate_points(self):
        return [RatePoint("fp16", 16)]

    def encode(self, x, rate):
        segments = {k: pack_shape(tuple(t.shape)) + t.numpy().astype("<f2").tobytes() for k, t in x.items()}
        return Container(self.name, x.original_size, x.input_size, segments=segments).to_bytes()

    def decode(self, data):
        box = Container.from_bytes(data, expected_codec=self.name)
        levels = {}
        for k, payload in box.segments.items():
            shape, offset = unpack_shape(payload)
            levels[k] = torch.from_numpy(np.frombuffer(payload[offset:], "<f2").reshape(shape).astype("float32"))
        return FeatureSet(levels, box.original_size, box.input_size)

    trainer = "fcmbench_half:train"


def train(request):
    """A plugin's trainer, through fcmbench's own training data helpers: the largest feature magnitude."""
    import json
    from pathlib import Path

    from fcmbench.core.training import Trained
    from fcmbench.training.data import task_model_of, training_features

    task = task_model_of(request)
    _, items, features, _ = training_features(request, task)
    peak = max(float(t.abs().max()) for f in features for t in f.values())
    path = Path(request.out) / "half" / task.name / "peak.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"peak": peak, "images": len(items), "steps": request.steps}))
    return Trained(path, f"peak {peak:.3g}")
'''

PYPROJECT = '''
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "fcmbench-half"
version = "0.1.0"

[project.entry-points."fcmbench.methods"]
half = "fcmbench_half:HalfCodec"
'''


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict:
    """The environment of a process that sees the plugin package, installed as a user would."""
    package = tmp_path_factory.mktemp("plugin") / "fcmbench-half"
    package.mkdir()
    (package / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (package / "fcmbench_half.py").write_text(PLUGIN_CODE)
    site = package.parent / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(package)], check=True)
    return {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200"}


def test_plugin_package_installs_and_runs(tmp_path, tiny_coco, plugin_env):
    env = plugin_env

    listed = subprocess.run([str(FCMBENCH), "list"], capture_output=True, text=True, env=env, check=True)
    assert "half" in listed.stdout and "fp16" in listed.stdout

    out = tmp_path / "run"
    run = subprocess.run([str(FCMBENCH), "run", "--methods", "half,raw", "--dataset", "coco", "--images",
                          str(tiny_coco[0]), "--annotations", str(tiny_coco[1]), "--task-model", "shapes_rcnn",
                          "--weights", "none", "--limit", "2", "--out", str(out)],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    report = subprocess.run([str(FCMBENCH), "report", "--out", str(out)], capture_output=True, text=True,
                            env=env, check=True)
    assert "half" in report.stdout
    with open(out / "rd.csv") as handle:
        bpp = {row["method"]: float(row["bpp"]) for row in csv.DictReader(handle)}
    assert bpp["half"] == pytest.approx(bpp["raw"] / 2, rel=0.01)


def test_a_plugin_codec_trains_through_fcmbench_train(tmp_path, plugin_env):
    out = tmp_path / "checkpoints"
    trained = subprocess.run([str(FCMBENCH), "train", "half", "--task-model", "shapes_rcnn", "--weights", "none",
                              "--dataset", "shapes", "--images", "2", "--steps", "7", "--out", str(out)],
                             capture_output=True, text=True, env=plugin_env)
    assert trained.returncode == 0, trained.stderr
    written = json.loads((out / "half" / "shapes_rcnn" / "peak.json").read_text())
    assert written["images"] == 2 and written["steps"] == 7 and written["peak"] > 0
    assert "saved" in trained.stdout and "peak" in trained.stdout

    refused = subprocess.run([str(FCMBENCH), "train", "raw", "--task-model", "shapes_rcnn", "--out", str(out)],
                             capture_output=True, text=True, env=plugin_env)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "raw has no trainer" in refused.stderr and "half" in refused.stderr and "lmsfc" in refused.stderr
