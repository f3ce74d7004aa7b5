"""A codec from another package registers through the entry point and runs with no change to fcmbench."""

import csv
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

from fcmbench.bitstream import Container
from fcmbench.codec import Codec, RatePoint
from fcmbench.featureset import FeatureSet
from fcmbench.tensorio import pack_shape, unpack_shape


class HalfCodec(Codec):
    """Every level as float16: a third-party codec in a dozen lines."""

    name = "half"

    @classmethod
    def rate_points(cls):
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


def test_plugin_package_installs_and_runs(tmp_path, tiny_coco):
    package = tmp_path / "fcmbench-half"
    package.mkdir()
    (package / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (package / "fcmbench_half.py").write_text(PLUGIN_CODE)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(package)], check=True)
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200"}

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
