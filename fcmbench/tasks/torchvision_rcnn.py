"""torchvision R-CNNs (Faster, Mask, Keypoint; R50-FPN) split after the backbone (P2..P6)."""

from __future__ import annotations

import hashlib
import urllib.error
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from torchvision.models import detection
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from fcmbench.core.errors import FcmbenchError
from fcmbench.core.featureset import FeatureSet
from fcmbench.tasks.base import (
    TaskModel,
    TaskModelOptions,
    batch_groups,
    file_sha256,
    in_batches,
    native_kernels,
)

RANDOM_WEIGHTS_WARNING = "task model uses RANDOM weights (--weights none): accuracies are meaningless"


class TorchvisionRCNN(TaskModel):
    """Any torchvision ``GeneralizedRCNN`` with an FPN backbone, cut between backbone and RPN."""

    def __init__(self, name: str, model: GeneralizedRCNN, weights_id: str, device: str = "cpu",
                 warnings: tuple[str, ...] = ()) -> None:
        self.name = name
        self.model = model.eval().to(device)
        self.device = device
        self.weights_id = weights_id
        self.warnings = warnings
        self.iou_types = ("bbox",) + (("segm",) if model.roi_heads.has_mask() else ()) + (
            ("keypoints",) if model.roi_heads.has_keypoint() else ())
        self._levels = _fpn_names(self.model)
        # torchvision's LastLevelMaxPool makes the last level from the one before it (kernel 1, stride 2):
        # codecs may skip sending it.
        pooled = isinstance(self.model.backbone.fpn.extra_blocks, LastLevelMaxPool)
        self.derived = {self._levels[-1]: self._levels[-2]} if pooled else {}

    @property
    def level_names(self) -> tuple[str, ...]:
        return self._levels

    @torch.inference_mode()
    def front_batch(self, images: list[torch.Tensor]) -> list[FeatureSet]:
        """On a GPU, images whose padded sizes agree go through the backbone together, every image padded as if
        it were alone, so a neighbour never changes its padding; on the CPU one at a time (``batch_groups``)."""
        alone = [self.model.transform([image.to(self.device)])[0] for image in images]
        out: list[FeatureSet | None] = [None] * len(images)
        for members in batch_groups(alone, lambda image_list: image_list.tensors.shape, self.device):
            with native_kernels(self.device):
                features = self.model.backbone(torch.cat([alone[i].tensors for i in members]))
            for row, i in enumerate(members):
                levels = {name: tensor[row].float().cpu() for name, tensor in features.items()}
                out[i] = FeatureSet(levels, tuple(images[i].shape[-2:]), tuple(alone[i].image_sizes[0]),
                                    self.derived)
        return out

    def front(self, image: torch.Tensor) -> FeatureSet:
        return self.front_batch([image])[0]

    @torch.inference_mode()
    def back_batch(self, features: list[FeatureSet]) -> list[dict[str, torch.Tensor]]:
        for feature in features:
            self.require_levels(feature)
        return in_batches(features, self._batch_shape, self.device, self._back_group)

    def back(self, features: FeatureSet) -> dict[str, torch.Tensor]:
        return self.back_batch([features])[0]

    def _batch_shape(self, features: FeatureSet) -> tuple:
        return features.shapes(), self._padded_shape(features.input_size)

    def _back_group(self, group: list[FeatureSet]) -> list[dict[str, torch.Tensor]]:
        batch = OrderedDict((name, torch.stack([f[name] for f in group]).to(self.device))
                            for name in self.level_names)
        sizes = [f.input_size for f in group]
        placeholder = torch.zeros(1, device=self.device).expand(len(group), 3, *self._padded_shape(sizes[0]))
        image_list = ImageList(placeholder, sizes)
        with native_kernels(self.device):
            proposals, _ = self.model.rpn(image_list, batch)
            detections, _ = self.model.roi_heads(batch, proposals, image_list.image_sizes)
        detections = self.model.transform.postprocess(detections, sizes, [f.original_size for f in group])
        return [{key: value.cpu() for key, value in one.items()} for one in detections]

    def training_loss(self, features: FeatureSet, levels: dict[str, torch.Tensor], target: dict) -> torch.Tensor:
        """The network's own RPN + ROI-head training losses on (reconstructed) ``levels`` ``[1, C, H, W]``,
        with the network frozen: gradients reach only the levels (TA-MSF's task loss)."""
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        batch = OrderedDict((name, levels[name]) for name in self.level_names)
        image_list = ImageList(self._padded_placeholder(features.input_size), [features.input_size])
        target = resize_target(target, features.original_size, features.input_size)
        self.model.rpn.train()
        self.model.roi_heads.train()
        try:
            proposals, rpn_losses = self.model.rpn(image_list, batch, [target])
            _, head_losses = self.model.roi_heads(batch, proposals, image_list.image_sizes, [target])
        finally:
            self.model.rpn.eval()
            self.model.roi_heads.eval()
        return sum(rpn_losses.values()) + sum(head_losses.values())

    def _padded_placeholder(self, input_size: tuple[int, int]) -> torch.Tensor:
        # The RPN's anchor generator reads only the padded batch shape; a zero-stride view costs nothing.
        return torch.zeros(1, device=self.device).expand(1, 3, *self._padded_shape(input_size))

    def _padded_shape(self, input_size: tuple[int, int]) -> tuple[int, int]:
        step = self.model.transform.size_divisible
        return tuple(-(-side // step) * step for side in input_size)

    @torch.inference_mode()
    def predict(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        with native_kernels(self.device):
            output = self.model([image.to(self.device)])[0]
        return {key: value.cpu() for key, value in output.items()}

    def preprocessing_id(self) -> str:
        t = self.model.transform
        # "native-conv": native_kernels's choice, whose features differ from oneDNN's in the last bits
        return (f"resize{t.min_size}-{t.max_size}-mean{list(t.image_mean)}-std{list(t.image_std)}"
                f"-div{t.size_divisible}-native-conv")


def resize_target(target: dict, original: tuple[int, int], size: tuple[int, int]) -> dict:
    """Ground truth in original pixels -> the network input's pixels (what the heads are trained on)."""
    if tuple(original) == tuple(size):
        return target
    sy, sx = size[0] / original[0], size[1] / original[1]
    boxes = target["boxes"] * torch.tensor([sx, sy, sx, sy])
    resized = {**target, "boxes": boxes}
    if "masks" in target:
        masks = torch.nn.functional.interpolate(target["masks"][None].float(), size=tuple(size), mode="nearest")
        resized["masks"] = masks[0].to(target["masks"].dtype)
    return resized


def _fpn_names(model: GeneralizedRCNN) -> tuple[str, ...]:
    # Run a tiny tensor through the backbone once: the names come from the network itself.
    with torch.inference_mode():
        probe = next(model.parameters())
        out = model.backbone(torch.zeros(1, 3, 64, 64, device=probe.device, dtype=probe.dtype))
    return tuple(out)


def build(name: str, builder: Callable, weights_enum, options: TaskModelOptions, **kwargs) -> TorchvisionRCNN:
    """Build from the weight enum (downloads where there is internet), a local file, or random weights."""
    notes: tuple[str, ...] = ()
    if options.weights == "none":
        warnings.warn(RANDOM_WEIGHTS_WARNING, stacklevel=2)
        torch.manual_seed(0)
        model = builder(weights=None, weights_backbone=None, **kwargs)
        weights_id, notes = "random-seed0", (RANDOM_WEIGHTS_WARNING,)
    elif options.weights:
        classes = local_classes(Path(options.weights))
        # a detector fine-tuned by train-task (e.g. on KITTI) has fewer classes than COCO's 91
        model = builder(weights=None, weights_backbone=None, **({"num_classes": classes} if classes else {}), **kwargs)
        weights_id = load_local_weights(model, Path(options.weights), name)
    else:
        weights = weights_enum.DEFAULT
        try:
            model = builder(weights=weights, **kwargs)
        except (urllib.error.URLError, OSError, RuntimeError) as err:
            raise FcmbenchError(
                f"could not get torchvision weights {weights} for {name} ({type(err).__name__}: {err}). "
                "Without internet, pass --weights PATH to a local state dict, or --weights none for random weights."
            ) from None
        weights_id = f"{weights}:{hashlib.sha256(weights.url.encode()).hexdigest()[:16]}"
    return TorchvisionRCNN(name, model, weights_id, options.device, notes)


def local_classes(path: Path) -> int | None:
    """The number of classes (background included) of a local R-CNN state dict, or None if it does not say
    (load_local_weights then explains what is wrong with the file)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - reported by load_local_weights
        return None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    weight = state.get("roi_heads.box_predictor.cls_score.weight") if isinstance(state, dict) else None
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) else None


def load_local_weights(model: torch.nn.Module, path: Path, name: str) -> str:
    """Load a state dict file into ``model`` strictly; returns the file's SHA-256."""
    if not path.is_file():
        raise FcmbenchError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise FcmbenchError(f"weights file {path} is not a PyTorch checkpoint: {err}") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).splitlines()[:3]
        raise FcmbenchError(
            f"weights file {path} does not fit task model {name}: {' '.join(first)}"
        ) from None
    return file_sha256(path)


def faster_rcnn_r50_fpn(options: TaskModelOptions) -> TorchvisionRCNN:
    return build("faster_rcnn_r50_fpn", detection.fasterrcnn_resnet50_fpn,
                 detection.FasterRCNN_ResNet50_FPN_Weights, options)


def faster_rcnn_r50_fpn_v2(options: TaskModelOptions) -> TorchvisionRCNN:
    return build("faster_rcnn_r50_fpn_v2", detection.fasterrcnn_resnet50_fpn_v2,
                 detection.FasterRCNN_ResNet50_FPN_V2_Weights, options)


def mask_rcnn_r50_fpn(options: TaskModelOptions) -> TorchvisionRCNN:
    return build("mask_rcnn_r50_fpn", detection.maskrcnn_resnet50_fpn,
                 detection.MaskRCNN_ResNet50_FPN_Weights, options)


def keypoint_rcnn_r50_fpn(options: TaskModelOptions) -> TorchvisionRCNN:
    return build("keypoint_rcnn_r50_fpn", detection.keypointrcnn_resnet50_fpn,
                 detection.KeypointRCNN_ResNet50_FPN_Weights, options)
