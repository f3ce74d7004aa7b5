"""The detectron2-layout task models without the parity fixtures: model-zoo ``.pkl`` loading and its errors,
batches, the split, the CLI end to end, L-MSFC checkpoints in the published layout on X101 features, and (only
where detectron2 is installed) a direct comparison with detectron2."""

from __future__ import annotations

import csv
import importlib.util
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_cli
from fcmbench.codecs.learned.lmsfc import LMSFCCodec
from fcmbench.core import registry
from fcmbench.core.codec import CodecOptions
from fcmbench.core.errors import FcmbenchError
from fcmbench.models.lmsfc import LMSFCContext
from fcmbench.tasks import TaskModelOptions
from fcmbench.tasks.detectron2_rcnn import (
    COCO_IDS,
    CONFIGS,
    D2GeneralizedRCNN,
    Detectron2RCNN,
    read_detectron2_pkl,
    resized_size,
)

pytestmark = pytest.mark.usefixtures("one_thread")
NAMES = ("d2-faster-rcnn-r50-fpn", "d2-mask-rcnn-r50-fpn", "d2-faster-rcnn-x101-fpn", "d2-mask-rcnn-x101-fpn")


def random_state(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Weights in detectron2's layout: convs/linears ~ N(0, 1/fan_in), FrozenBN near identity, small biases."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, value in D2GeneralizedRCNN(CONFIGS[name]).state_dict().items():
        shape = tuple(value.shape)
        if key.endswith("running_var") or (key.endswith("norm.weight")):
            array = 1 + 0.1 * rng.random(shape)
        elif len(shape) > 1:
            array = rng.standard_normal(shape) * np.sqrt(1.0 / np.prod(shape[1:]))
        else:
            array = 0.01 * rng.standard_normal(shape)
        state[key] = array.astype(np.float32)
    return state


def write_pkl(path: Path, state: dict, **extra) -> Path:
    """A model-zoo style file: ``{"model": {key: ndarray}, "__author__": ...}``."""
    with open(path, "wb") as handle:
        pickle.dump({"model": state, "__author__": "Detectron2 Model Zoo", **extra}, handle)
    return path


@pytest.fixture(scope="module")
def r50_pkl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pkl(tmp_path_factory.mktemp("d2") / "model_final_test.pkl", random_state("d2-mask-rcnn-r50-fpn"))


def small(name: str, model_state: dict | None = None, short: int = 160, long: int = 256) -> Detectron2RCNN:
    """A d2 task model resizing to a small size (the X101 at 800 px takes ~15 s per image on one thread), with
    no score threshold (random weights score about 1/81 per class, below the stock 0.05)."""
    network = D2GeneralizedRCNN(replace(CONFIGS[name], min_size_test=short, max_size_test=long, score_thresh=0.0))
    state = model_state or random_state(name)
    network.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return Detectron2RCNN(name, network, "test")


def test_names_are_registered_and_listing_imports_no_model():
    assert set(NAMES) <= set(registry.task_models.names())
    assert len(COCO_IDS) == 80 and len(set(COCO_IDS)) == 80 and max(COCO_IDS) == 90


def test_faster_x101_is_the_mask_x101_without_the_mask_head():
    faster = D2GeneralizedRCNN(CONFIGS["d2-faster-rcnn-x101-fpn"]).state_dict()
    mask = D2GeneralizedRCNN(CONFIGS["d2-mask-rcnn-x101-fpn"]).state_dict()
    assert set(mask) - set(faster) == {k for k in mask if k.startswith("roi_heads.mask_head.")}
    assert all(faster[k].shape == mask[k].shape for k in faster)


def test_resize_follows_detectron2s_shortest_edge_rule():
    assert resized_size(480, 640) == (800, 1067)
    assert resized_size(426, 640) == (800, 1202)
    assert resized_size(100, 1000) == (133, 1333)  # capped by the long side


def test_model_zoo_pkl_loads_by_name_with_config_buffers(tmp_path):
    state = random_state("d2-faster-rcnn-r50-fpn")
    # older model-zoo files also carry the pixel statistics and the cell anchors: accepted when they agree
    extra = {"pixel_mean": np.array([103.53, 116.28, 123.675], dtype=np.float32).reshape(3, 1, 1),
             "pixel_std": np.ones((3, 1, 1), dtype=np.float32),
             "proposal_generator.anchor_generator.cell_anchors.0": np.zeros((3, 4), dtype=np.float32)}
    path = write_pkl(tmp_path / "model_final_280758.pkl", {**state, **extra}, matching_heuristics=True)
    task = registry.task_models.get("d2-faster-rcnn-r50-fpn")(TaskModelOptions(str(path)))
    loaded = task.model.state_dict()
    assert all(np.array_equal(loaded[k].numpy(), v) for k, v in state.items())
    assert task.weights_id.startswith("model_final_280758.pkl:") and task.iou_types == ("bbox",)


@pytest.mark.parametrize(("change", "message"), [
    (lambda s: s.pop("roi_heads.box_head.fc1.weight"), "missing keys 1: roi_heads.box_head.fc1.weight"),
    (lambda s: s.update(extra=np.zeros(1, np.float32)), "unexpected keys 1: extra"),
    (lambda s: s.update({"roi_heads.box_predictor.cls_score.bias": np.zeros(3, np.float32)}),
     "mismatched 1: roi_heads.box_predictor.cls_score.bias (3,) (expected (81,))"),
    (lambda s: s.update(pixel_std=np.full((3, 1, 1), 57.0, np.float32)), "pixel_std"),
])
def test_a_file_that_does_not_fit_is_one_clear_error(tmp_path, change, message):
    state = random_state("d2-faster-rcnn-r50-fpn")
    change(state)
    path = write_pkl(tmp_path / "bad.pkl", state)
    with pytest.raises(FcmbenchError, match="does not fit task model d2-faster-rcnn-r50-fpn") as err:
        registry.task_models.get("d2-faster-rcnn-r50-fpn")(TaskModelOptions(str(path)))
    assert message in str(err.value) and str(path) in str(err.value) and "model_final_280758.pkl" in str(err.value)


def test_unreadable_and_hostile_files_are_refused(tmp_path):
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(FcmbenchError, match="is not a detectron2 checkpoint"):
        read_detectron2_pkl(garbage)
    with pytest.raises(FcmbenchError, match="does not exist"):
        read_detectron2_pkl(tmp_path / "absent.pkl")

    class Hostile:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    hostile = tmp_path / "hostile.pkl"
    hostile.write_bytes(pickle.dumps({"model": Hostile()}))
    with pytest.raises(FcmbenchError, match="refusing to load"):
        read_detectron2_pkl(hostile)
    assert not (tmp_path / "pwned").exists()


def test_split_batch_and_unsplit_agree(r50_pkl):
    state = {k: v.numpy() for k, v in read_detectron2_pkl(r50_pkl).items()}
    task = small("d2-mask-rcnn-r50-fpn", state)
    gen = torch.Generator().manual_seed(0)
    # two images of one padded size and one of another
    images = [torch.rand(3, 96, 128, generator=gen), torch.rand(3, 96, 128, generator=gen),
              torch.rand(3, 128, 96, generator=gen)]
    features = task.front_batch(images)
    assert list(features[0]) == ["p2", "p3", "p4", "p5", "p6"] and features[0].derived == {"p6": "p5"}
    assert features[0].input_size == (160, 213) and features[0]["p2"].shape == (256, 40, 56)
    single = [task.front(image) for image in images]
    for batched, alone in zip(features, single, strict=True):  # batch_groups: equal to the bit
        assert all(torch.equal(batched[name], alone[name]) for name in batched)
    predictions = task.back_batch(features)
    for batched, feature, image in zip(predictions, features, images, strict=True):
        alone = task.back(feature)
        assert set(batched) == {"boxes", "scores", "labels", "masks"}
        assert all(torch.equal(batched[key], alone[key]) for key in batched)
        assert batched["masks"].shape[-2:] == image.shape[-2:] and len(batched["masks"]) == len(batched["boxes"])
    results = task.to_coco_results(7, predictions[0])
    assert results and {r["category_id"] for r in results} <= set(COCO_IDS) and "segmentation" in results[0]


@pytest.mark.slow
def test_cli_runs_raw_with_a_model_zoo_pkl_and_evaluates(tmp_path, tiny_coco, r50_pkl):
    out = tmp_path / "run"
    result = run_cli("run", "--methods", "raw", "--task-model", "d2-mask-rcnn-r50-fpn", "--weights", r50_pkl,
                     "--dataset", "coco", "--images", tiny_coco[0], "--annotations", tiny_coco[1], "--limit", "2",
                     "--out", out)
    assert "2 item(s) computed" in result.stderr
    run_cli("report", "--out", out)
    with open(out / "rd.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["method"] == "raw" and float(row["bbox_mAP"]) >= 0 and float(row["segm_mAP"]) >= 0


@pytest.mark.slow
def test_cli_bad_weights_file_is_one_error_line(tmp_path, tiny_coco):
    bad = tmp_path / "model_final_bad.pkl"
    bad.write_bytes(b"\x80\x04garbage")
    result = run_cli("run", "--methods", "raw", "--task-model", "d2-mask-rcnn-x101-fpn", "--weights", bad,
                     "--dataset", "coco", "--images", tiny_coco[0], "--annotations", tiny_coco[1], "--limit", "1",
                     "--out", tmp_path / "run", check=False)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(bad) in errors[0] and "Traceback" not in result.stderr


def test_published_lmsfc_checkpoint_codes_x101_features(tmp_path, tiny_coco):
    """An L-MSFC checkpoint in the published layout (LMSFCContext(256, 128) as the authors' train.py saves it,
    random weights) found at ROOT/lmsfc/d2-mask-rcnn-x101-fpn/q1.pt, coding X101 features (random weights, images
    resized to 160 px) of a few images, decoded and run through the heads to COCO results."""
    torch.manual_seed(0)
    codec_net = LMSFCContext(256, 128)
    target = tmp_path / "lmsfc" / "d2-mask-rcnn-x101-fpn" / "q1.pt"
    target.parent.mkdir(parents=True)
    # what the authors' train.py saves: the weights under "state_dict", update() never run (empty CDF buffers)
    torch.save({"global_step": 0, "state_dict": codec_net.state_dict(), "loss": 0.0}, target)
    codec = LMSFCCodec(CodecOptions(task_model="d2-mask-rcnn-x101-fpn", checkpoints=tmp_path))
    q1 = next(r for r in codec.rate_points() if r.label == "q1")
    task = small("d2-mask-rcnn-x101-fpn")
    images = sorted(tiny_coco[0].iterdir())[:2]
    for index, path in enumerate(images):
        image = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255
        features = task.front(image)
        data = codec.encode(features, q1)
        decoded = codec.decode(data)
        assert list(decoded) == list(features) and all(decoded[k].shape == features[k].shape for k in features)
        results = task.to_coco_results(index, task.back(decoded))
        assert all(r["category_id"] in COCO_IDS and "segmentation" in r for r in results)
        assert 8 * len(data) / features.original_pixels > 0


@pytest.mark.skipif(importlib.util.find_spec("detectron2") is None, reason="detectron2 is not installed")
@pytest.mark.parametrize(("config_file", "name"), [
    ("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml", "d2-mask-rcnn-r50-fpn"),
    ("COCO-InstanceSegmentation/mask_rcnn_X_101_32x8d_FPN_3x.yaml", "d2-mask-rcnn-x101-fpn"),
])
def test_matches_detectron2_itself(config_file, name):  # pragma: no cover - needs detectron2
    """The same weights in detectron2's network and ours, one low-contrast image (no saturation), no score
    threshold on either side: FPN levels and final instances agree within the parity tolerances."""
    from detectron2 import model_zoo
    from detectron2.modeling import build_model

    cfg = model_zoo.get_config(config_file)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    reference = build_model(cfg).eval()
    state = {k: torch.from_numpy(v) for k, v in random_state(name).items()}
    missing, unexpected = reference.load_state_dict(state, strict=False)
    assert not missing and not unexpected
    ours = D2GeneralizedRCNN(replace(CONFIGS[name], score_thresh=0.0)).eval()
    ours.load_state_dict(state)
    gen = torch.Generator().manual_seed(0)
    hwc = (torch.rand(160, 224, 3, generator=gen) * 40 + 100).to(torch.uint8)  # RGB, already "resized"
    with torch.inference_mode():
        theirs = reference([{"image": hwc.flip(-1).permute(2, 0, 1).float(), "height": 160, "width": 224}])
        their_features = reference.backbone(reference.preprocess_image(
            [{"image": hwc.flip(-1).permute(2, 0, 1).float()}]).tensor)
        features = ours.backbone(ours.normalize_and_pad([hwc]))
        (det,) = ours.heads(features, [(160, 224)])
        mine = ours.postprocess(det, (160, 224), (160, 224))
    for level in features:
        scale = their_features[level].std().item()
        torch.testing.assert_close(features[level], their_features[level], rtol=0, atol=1e-4 * scale)
    expected = theirs[0]["instances"]
    assert len(mine["boxes"]) == len(expected)
    torch.testing.assert_close(mine["boxes"], expected.pred_boxes.tensor, rtol=0, atol=0.05)
    torch.testing.assert_close(mine["scores"], expected.scores, rtol=0, atol=1e-4)
    torch.testing.assert_close(mine["labels"], expected.pred_classes)


def test_model_zoo_download_goes_to_the_cache_or_fails_clearly(tmp_path, monkeypatch, r50_pkl):
    import shutil
    import urllib.error

    import torch.hub

    monkeypatch.setenv("FCMBENCH_CACHE", str(tmp_path))
    urls = []

    def offline(url, dst, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(FcmbenchError, match="could not download https://dl.fbaipublicfiles.com/detectron2/.*--weights"):
        registry.task_models.get("d2-mask-rcnn-r50-fpn")(TaskModelOptions(None))

    def online(url, dst, **kwargs):
        urls.append(url)
        shutil.copy(r50_pkl, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", online)
    task = registry.task_models.get("d2-mask-rcnn-r50-fpn")(TaskModelOptions(None))
    again = registry.task_models.get("d2-mask-rcnn-r50-fpn")(TaskModelOptions(None))  # from the cache
    assert urls == [CONFIGS["d2-mask-rcnn-r50-fpn"].zoo_url] and task.weights_id == again.weights_id
    assert task.weights_id.startswith("model_final_f10217.pkl:")
