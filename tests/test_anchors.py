"""VVC anchors: packing, VVenC round trips, the VTM back-end's plumbing, and every failure path."""

import stat
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fcmbench.codecs.anchors.packing import pack, plan_layout, unpack
from fcmbench.codecs.anchors.vtm_feature import VTMFeatureAnchor
from fcmbench.codecs.anchors.vtm_image import VTMImageAnchor
from fcmbench.codecs.anchors.vvc import VTM, Frame, VVenC, ffmpeg_binary, vvc_backend
from fcmbench.core.codec import CodecOptions, RatePoint
from fcmbench.core.errors import FcmbenchError
from fcmbench.core.featureset import FeatureSet

FASTER = {"vtm-feature": {"preset": "faster"}, "vtm-image": {"preset": "faster"}}  # VVenC preset faster

shapes_strategy = st.lists(st.tuples(st.integers(1, 70), st.integers(1, 12), st.integers(1, 12)), min_size=1,
                           max_size=5)


@settings(max_examples=60, deadline=None)
@given(shapes=shapes_strategy, seed=st.integers(0, 2**16))
def test_packing_round_trips_exactly(shapes, seed):
    rng = np.random.default_rng(seed)
    levels = {f"p{i}": rng.integers(0, 1024, size=s).astype(np.uint16) for i, s in enumerate(shapes)}
    layout = plan_layout({k: v.shape for k, v in levels.items()})
    frame = pack(levels, layout)
    assert frame.shape == (layout.padded_height, layout.padded_width)
    assert frame.shape[0] % 8 == 0 and frame.shape[1] % 8 == 0
    back = unpack(frame, layout)
    assert list(back) == list(levels)
    for name in levels:
        np.testing.assert_array_equal(back[name], levels[name])


def test_fpn_layout_is_near_square_and_stacked():
    layout = plan_layout({"0": (256, 200, 336), "1": (256, 100, 168), "2": (256, 50, 84), "3": (256, 25, 42)})
    assert layout.width == 16 * 336
    assert [spec.rows * spec.height for spec in layout.levels] == [3200, 800, 200, 50]  # as CTTC packs P2..P5


def fpn_features(seed=0) -> FeatureSet:
    """Smooth, ReLU-like levels (like real FPN features) with P6 derived from P5 as torchvision does."""
    gen = torch.Generator().manual_seed(seed)
    levels = {}
    for name, side in (("0", 32), ("1", 16), ("2", 8), ("3", 4)):
        low = torch.randn(16, side // 2, side // 2, generator=gen)
        levels[name] = torch.nn.functional.interpolate(low[None], size=(side, side), mode="bilinear")[0].relu()
    levels["pool"] = torch.nn.functional.max_pool2d(levels["3"][None], 1, 2)[0]
    return FeatureSet(levels, (120, 128), (128, 128), {"pool": "3"})


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float) -> float:
    return float(10 * torch.log10(peak**2 / ((a - b) ** 2).mean()))


def test_vvenc_round_trip_small_frame():
    backend = VVenC("faster")
    y = (np.add.outer(np.arange(48), np.arange(64)) * 8 % 1024).astype(np.uint16)
    data = backend.encode(Frame(y), qp=0)
    back = backend.decode(data, 64, 48, monochrome=True, bit_depth=10)
    assert back.y.shape == (48, 64)
    assert np.abs(back.y.astype(int) - y.astype(int)).max() <= 2  # QP 0 is near lossless


def test_feature_anchor_psnr_rises_as_qp_falls():
    x = fpn_features()
    codec = VTMFeatureAnchor(CodecOptions(settings=FASTER))
    peak = float(max(t.max() for t in x.values()))
    sizes, quality = [], []
    for qp in (47, 37, 27, 17):
        data = codec.encode(x, RatePoint(f"qp{qp}", qp))
        y = codec.decode(data)
        assert list(y) == list(x) and all(y[k].shape == x[k].shape for k in x)
        assert torch.equal(y["pool"], torch.nn.functional.max_pool2d(y["3"][None], 1, 2)[0])
        assert set(codec.bytes_per_level(data)) == {"vvc", "_header"}
        sizes.append(len(data))
        quality.append(psnr(torch.cat([x[k].flatten() for k in x]), torch.cat([y[k].flatten() for k in y]), peak))
    assert sizes == sorted(sizes) and quality == sorted(quality)
    assert quality[-1] > 40


def test_feature_anchor_decodes_identically_in_another_process(tmp_path):
    codec = VTMFeatureAnchor(CodecOptions(settings=FASTER))
    data = codec.encode(fpn_features(1), RatePoint("qp32", 32))
    mine = codec.decode(data)
    (tmp_path / "stream.bin").write_bytes(data)
    script = ("import sys, torch; from fcmbench.codecs.anchors.vtm_feature import VTMFeatureAnchor; "
              "x = VTMFeatureAnchor().decode(open(sys.argv[1], 'rb').read()); torch.save(dict(x.levels), sys.argv[2])")
    import subprocess
    subprocess.run([sys.executable, "-c", script, tmp_path / "stream.bin", tmp_path / "out.pt"], check=True)
    other = torch.load(tmp_path / "out.pt")
    assert all(torch.equal(mine[k], other[k]) for k in mine)


def test_image_anchor_round_trip_and_rate():
    gen = torch.Generator().manual_seed(0)
    image = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 8, generator=gen), size=(61, 83),
                                            mode="bilinear")[0]  # odd sides: padding and cropping
    codec = VTMImageAnchor(CodecOptions(settings=FASTER))
    low, high = (codec.encode(image, RatePoint(f"qp{q}", q)) for q in (47, 22))
    assert len(low) < len(high)
    decoded = codec.decode(high)
    assert decoded.shape == image.shape
    assert psnr(image, decoded, 1.0) > 30
    assert psnr(image, codec.decode(low), 1.0) < psnr(image, decoded, 1.0)


def test_corrupt_vvc_bitstream_is_a_clear_error():
    codec = VTMFeatureAnchor(CodecOptions(settings=FASTER))
    data = bytearray(codec.encode(fpn_features(), RatePoint("qp37", 37)))
    with pytest.raises(FcmbenchError):
        codec.decode(bytes(data[:-40]))
    data[60:80] = bytes(20)
    try:
        codec.decode(bytes(data))
    except FcmbenchError:
        pass  # a damaged picture may decode to garbage; it must never crash with anything else


FAKE_VTM = '''#!{python}
"""A stand-in for VTM used to test fcmbench's VTM plumbing: it parses VTM's options and codes with ffmpeg."""
import subprocess, sys
import numpy as np
FFMPEG = {ffmpeg!r}
MODE = {mode!r}
print("VVCSoftware: VTM Encoder Version 12.0 [Linux][GCC 12.2.0][64 bit] [SIMD=AVX2]")
args = sys.argv[1:]
if not args:
    sys.exit(1)
if MODE == "fail":
    print("fake failure: out of memory while coding", file=sys.stderr)
    sys.exit(3)
opts = {{}}
i = 0
while i < len(args):
    if args[i].startswith("--"):
        key, _, value = args[i][2:].partition("=")
        opts[key] = value
        i += 1
    else:
        opts[args[i][1:]] = args[i + 1]
        i += 2
if "d" in opts:  # DecoderApp
    raw = subprocess.run([FFMPEG, "-loglevel", "error", "-f", "vvc", "-i", opts["b"], "-f", "rawvideo",
                          "-pix_fmt", "yuv420p10le", "pipe:1"], capture_output=True, check=True).stdout
    open(opts["o"], "wb").write(raw)
    sys.exit(0)
if MODE == "silent":
    sys.exit(0)
w, h = int(opts["wdt"]), int(opts["hgt"])
depth = int(opts["InputBitDepth"])
samples = np.fromfile(opts["i"], dtype="u1" if depth == 8 else "<u2").astype("<u2") << (10 - depth)
if opts["InputChromaFormat"] == "400":
    samples = np.concatenate([samples, np.full(2 * (w // 2) * (h // 2), 512, "<u2")])
subprocess.run([FFMPEG, "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "yuv420p10le", "-s", f"{{w}}x{{h}}",
                "-i", "pipe:0", "-c:v", "libvvenc", "-qp", opts["q"], "-qpa", "0", "-preset", "faster", "-f", "vvc",
                "-y", opts["b"]], input=samples.tobytes(), check=True)
'''


def fake_vtm(folder: Path, mode: str = "ok") -> Path:
    (folder / "bin").mkdir(parents=True)
    (folder / "cfg").mkdir()
    (folder / "cfg" / "encoder_intra_vtm.cfg").write_text("# all intra\n")
    for name in ("EncoderAppStatic", "DecoderAppStatic"):
        path = folder / "bin" / name
        path.write_text(textwrap.dedent(FAKE_VTM.format(python=sys.executable, ffmpeg=ffmpeg_binary(), mode=mode)))
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return folder


def test_vtm_backend_plumbing_with_a_stand_in(tmp_path):
    backend = vvc_backend(fake_vtm(tmp_path / "vtm"))
    assert isinstance(backend, VTM) and backend.version == "12.0" and "VTM 12.0" in backend.name
    codec = VTMFeatureAnchor(CodecOptions(settings={"vtm-feature": {"vtm_dir": str(tmp_path / "vtm")}}))
    x = fpn_features()
    y = codec.decode(codec.encode(x, RatePoint("qp22", 22)))
    assert psnr(x["0"], y["0"], float(x["0"].max())) > 30
    assert "VTM 12.0" in codec.describe()


def test_failing_encoder_names_binary_qp_and_stderr(tmp_path):
    vtm = fake_vtm(tmp_path / "vtm", "fail")
    codec = VTMFeatureAnchor(CodecOptions(settings={"vtm-feature": {"vtm_dir": str(vtm)}}))
    with pytest.raises(FcmbenchError, match=r"(?s)QP 37.*EncoderAppStatic.*exited with code 3.*out of memory"):
        codec.encode(fpn_features(), RatePoint("qp37", 37))


def test_encoder_without_output_and_missing_vtm(tmp_path, monkeypatch):
    vtm = fake_vtm(tmp_path / "vtm", "silent")
    codec = VTMFeatureAnchor(CodecOptions(settings={"vtm-feature": {"vtm_dir": str(vtm)}}))
    with pytest.raises(FcmbenchError, match="wrote no bitstream"):
        codec.encode(fpn_features(), RatePoint("qp37", 37))
    with pytest.raises(FcmbenchError, match="FCMBENCH_VTM_DIR"):
        vvc_backend(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FcmbenchError, match="EncoderApp not found"):
        vvc_backend(tmp_path / "empty")
    not_vtm = tmp_path / "notvtm" / "bin"
    not_vtm.mkdir(parents=True)
    for name in ("EncoderApp", "DecoderApp"):
        (not_vtm / name).write_text("#!/bin/sh\necho hello\n")
        (not_vtm / name).chmod(0o755)
    (tmp_path / "notvtm" / "cfg").mkdir()
    (tmp_path / "notvtm" / "cfg" / "encoder_intra_vtm.cfg").write_text("")
    with pytest.raises(FcmbenchError, match="version banner"):
        vvc_backend(tmp_path / "notvtm")


@pytest.mark.slow
def test_anchors_end_to_end_through_the_cli(tmp_path, tiny_coco):
    import csv
    import sqlite3

    from conftest import run_cli

    out = tmp_path / "run"
    common = ["--dataset", "coco", "--images", tiny_coco[0], "--annotations", tiny_coco[1], "--task-model",
              "shapes_rcnn", "--weights", "none", "--limit", "2", "--codec-opt", "vtm-feature.preset=faster",
              "--codec-opt", "vtm-image.preset=faster", "--out", out]
    result = run_cli("run", "--methods", "vtm-image,vtm-feature", "--rates", "qp47,qp32", *common)
    assert "VVenC" in result.stderr
    report = run_cli("report", "--out", out)
    assert "vtm-image" in report.stdout
    with open(out / "rd.csv") as handle:
        rows = {(r["method"], r["rate"]): float(r["bpp"]) for r in csv.DictReader(handle)}
    # raw: the uncompressed reference the runner adds, whatever --rates says
    assert set(rows) == {(m, q) for m in ("vtm-image", "vtm-feature") for q in ("qp47", "qp32")} | {("raw",
                                                                                                 "float32")}
    assert rows[("vtm-image", "qp47")] < rows[("vtm-image", "qp32")]
    assert "VVenC" in (out / "report.html").read_text()

    failing = tmp_path / "failing"
    vtm = fake_vtm(tmp_path / "vtm", "fail")
    bad = run_cli("run", "--methods", "vtm-feature", *common[:-1], failing, "--codec-opt", f"vtm-feature.vtm_dir={vtm}",
                  check=False)
    assert bad.returncode == 2
    assert "on image 1" in bad.stderr and "exited with code 3" in bad.stderr and "Traceback" not in bad.stderr
    with sqlite3.connect(failing / "results.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 0
