"""detectron2's model-zoo R-CNNs (Faster / Mask R-CNN, R50-FPN and X101-32x8d-FPN, "3x" configs) in plain PyTorch.

The MPEG FCM test conditions and L-MSFC use detectron2's ``faster_rcnn_X_101_32x8d_FPN_3x`` and
``mask_rcnn_X_101_32x8d_FPN_3x``; detectron2 itself needs a C++/CUDA build. This module is our reimplementation
of its inference path from the configs' description, built from torchvision blocks (``roi_align`` with
``aligned=True``, ``batched_nms``, ``FrozenBatchNorm2d``), with the module tree laid out so that every
``state_dict`` key equals detectron2's: a model-zoo ``model_final_*.pkl`` loads by name.

What the network computes (detectron2's defaults for these configs):
- input: RGB uint8 -> resize (short side 800, long side at most 1333, PIL bilinear on uint8) -> BGR float
  -> ``(x - PIXEL_MEAN) / PIXEL_STD`` -> zero-pad bottom/right to a multiple of 32;
- ResNet / ResNeXt with FrozenBN (eps 1e-5), the stride in the 1x1 conv for the MSRA R50 and in the 3x3 for X101;
- FPN (sum fusion, nearest 2x upsampling), P6 = max-pool of P5 with kernel 1, stride 2; the split is after it;
- RPN: 3 anchors per position (ratios 0.5, 1, 2; sizes 32..512 on P2..P6, offset 0), per level top 1000 by
  logit, clipped, non-empty, NMS 0.7 per level, top 1000 per image;
- ROI heads: ROIAlignV2 (7x7 box, 14x14 mask, sampling ratio 0, canonical box 224 at level 4), two FC 1024,
  class-specific box deltas (weights 10, 10, 5, 5, dw/dh clamped at log(1000/16)), softmax scores, score
  threshold 0.05, per-class NMS 0.5, 100 detections; mask head 4 conv + deconv + class-specific 1x1;
- postprocess: boxes scaled per axis to the original size, clipped, empty ones dropped; 28x28 mask
  probabilities pasted by bilinear sampling at pixel centres, foreground where >= 0.5.

Parity with real detectron2 is checked against recorded fixtures in ``tests/test_detectron2_parity.py``.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import urllib.error
import warnings
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.ops import FrozenBatchNorm2d, batched_nms, roi_align

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

MODEL_ZOO = "https://dl.fbaipublicfiles.com/detectron2/"
LEVELS = ("p2", "p3", "p4", "p5", "p6")
# detectron2's contiguous COCO classes 0..79 -> COCO category ids
COCO_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32,
            33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59,
            60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90)
RANDOM_WEIGHTS_WARNING = "task model uses RANDOM weights (--weights none): accuracies are meaningless"


@dataclass(frozen=True)
class D2Config:
    """The config values that matter at inference (names follow detectron2's config keys)."""

    zoo_path: str  # COCO-.../<config>/<run>/model_final_<id>.pkl
    depth: int = 50
    num_groups: int = 1
    width_per_group: int = 64
    stride_in_1x1: bool = True
    mask_on: bool = False
    pixel_mean: tuple[float, float, float] = (103.53, 116.28, 123.675)  # BGR
    pixel_std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    min_size_test: int = 800
    max_size_test: int = 1333
    size_divisibility: int = 32
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    pre_nms_topk: int = 1000
    post_nms_topk: int = 1000
    rpn_nms_thresh: float = 0.7
    rpn_min_box_size: float = 0.0
    num_classes: int = 80
    box_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_image: int = 100
    mask_threshold: float = 0.5

    @property
    def zoo_url(self) -> str:
        return MODEL_ZOO + self.zoo_path


R50 = {"depth": 50, "num_groups": 1, "width_per_group": 64, "stride_in_1x1": True}
X101 = {"depth": 101, "num_groups": 32, "width_per_group": 8, "stride_in_1x1": False,
        "pixel_std": (57.375, 57.120, 58.395)}
CONFIGS: dict[str, D2Config] = {
    "d2-faster-rcnn-r50-fpn": D2Config("COCO-Detection/faster_rcnn_R_50_FPN_3x/137849458/model_final_280758.pkl",
                                       **R50),
    "d2-mask-rcnn-r50-fpn": D2Config(
        "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x/137849600/model_final_f10217.pkl", mask_on=True, **R50),
    "d2-faster-rcnn-x101-fpn": D2Config(
        "COCO-Detection/faster_rcnn_X_101_32x8d_FPN_3x/139173657/model_final_68b088.pkl", **X101),
    "d2-mask-rcnn-x101-fpn": D2Config(
        "COCO-InstanceSegmentation/mask_rcnn_X_101_32x8d_FPN_3x/139653917/model_final_2d9806.pkl", mask_on=True,
        **X101),
}


# ----------------------------------------------------------------------------------------------------- backbone

class FrozenBN(FrozenBatchNorm2d):
    """torchvision's FrozenBatchNorm2d (the same buffers and eps semantics) evaluated as one fused
    ``F.batch_norm`` call in inference, as detectron2 does when no gradient is needed, so the rounding follows
    detectron2's. (With torchvision's two-step ``x * scale + bias`` the X101 fixture ``synth0`` flipped one
    RPN NMS decision between two anchors whose logits differ by 5e-6.)"""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return super().forward(x)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class ConvNorm(nn.Conv2d):
    """A bias-free conv followed by its FrozenBN, kept as the child ``norm`` (detectron2's key layout)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False)
        self.norm = FrozenBN(cout, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class Bottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, bottleneck: int, stride: int, groups: int, stride_in_1x1: bool) -> None:
        super().__init__()
        # a projection shortcut only where the width changes (the first block of each stage)
        self.shortcut = ConvNorm(cin, cout, 1, stride) if cin != cout else None
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = ConvNorm(cin, bottleneck, 1, s1)
        self.conv2 = ConvNorm(bottleneck, bottleneck, 3, s3, groups)
        self.conv3 = ConvNorm(bottleneck, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        out = out + (self.shortcut(x) if self.shortcut is not None else x)
        return F.relu_(out)


class Stem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvNorm(3, 64, 7, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu_(self.conv1(x)), kernel_size=3, stride=2, padding=1)


class ResNet(nn.Module):
    """ResNet / ResNeXt bottom-up network, returning res2..res5."""

    BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}

    def __init__(self, config: D2Config) -> None:
        super().__init__()
        self.stem = Stem()
        cin, cout, bottleneck = 64, 256, config.num_groups * config.width_per_group
        for index, count in enumerate(self.BLOCKS[config.depth]):
            blocks = []
            for b in range(count):
                stride = 2 if b == 0 and index > 0 else 1
                blocks.append(Bottleneck(cin, cout, bottleneck, stride, config.num_groups, config.stride_in_1x1))
                cin = cout
            self.add_module(f"res{index + 2}", nn.Sequential(*blocks))
            cout, bottleneck = cout * 2, bottleneck * 2

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x)
        out = {}
        for stage in ("res2", "res3", "res4", "res5"):
            x = getattr(self, stage)(x)
            out[stage] = x
        return out


class FPN(nn.Module):
    """Feature pyramid on res2..res5 -> P2..P6 (P6 by max-pooling P5 with kernel 1, stride 2)."""

    def __init__(self, config: D2Config) -> None:
        super().__init__()
        self.bottom_up = ResNet(config)
        for stage, cin in zip(range(2, 6), (256, 512, 1024, 2048), strict=True):
            self.add_module(f"fpn_lateral{stage}", nn.Conv2d(cin, 256, 1))
            self.add_module(f"fpn_output{stage}", nn.Conv2d(256, 256, 3, padding=1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        res = self.bottom_up(x)
        top = self.fpn_lateral5(res["res5"])
        outs = {"p5": self.fpn_output5(top)}
        for stage in (4, 3, 2):
            top = getattr(self, f"fpn_lateral{stage}")(res[f"res{stage}"]) + F.interpolate(
                top, scale_factor=2.0, mode="nearest")
            outs[f"p{stage}"] = getattr(self, f"fpn_output{stage}")(top)
        outs["p6"] = F.max_pool2d(outs["p5"], kernel_size=1, stride=2, padding=0)
        return {name: outs[name] for name in LEVELS}


# ---------------------------------------------------------------------------------------------------------- RPN

def decode_boxes(deltas: torch.Tensor, boxes: torch.Tensor, weights: tuple[float, ...]) -> torch.Tensor:
    """(dx, dy, dw, dh) per box (``[R, 4k]``) against XYXY ``boxes`` ``[R, 4]`` -> XYXY ``[R, 4k]``.

    Widths without +1 (continuous coordinates); dw and dh clamped at log(1000/16) before exp."""
    deltas = deltas.float()
    boxes = boxes.to(deltas.dtype)
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    wx, wy, ww, wh = weights
    clamp = math.log(1000.0 / 16)
    dx, dy = deltas[:, 0::4] / wx, deltas[:, 1::4] / wy
    dw = torch.clamp(deltas[:, 2::4] / ww, max=clamp)
    dh = torch.clamp(deltas[:, 3::4] / wh, max=clamp)
    cx = dx * widths[:, None] + ctr_x[:, None]
    cy = dy * heights[:, None] + ctr_y[:, None]
    w = torch.exp(dw) * widths[:, None]
    h = torch.exp(dh) * heights[:, None]
    out = torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)
    return out.reshape(deltas.shape)


def clip_boxes(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """x into [0, W], y into [0, H]."""
    height, width = size
    return torch.stack((boxes[:, 0].clamp(min=0, max=width), boxes[:, 1].clamp(min=0, max=height),
                        boxes[:, 2].clamp(min=0, max=width), boxes[:, 3].clamp(min=0, max=height)), dim=-1)


def nonempty(boxes: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    return ((boxes[:, 2] - boxes[:, 0]) > threshold) & ((boxes[:, 3] - boxes[:, 1]) > threshold)


def cell_anchors(size: float, ratios: tuple[float, ...]) -> torch.Tensor:
    """Anchors centred on (0, 0) of area size² at each aspect ratio h/w, XYXY, computed in float64 then rounded."""
    rows = []
    for ratio in ratios:
        w = math.sqrt(size * size / ratio)
        h = ratio * w
        rows.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(rows, dtype=torch.float32)


class RPNHead(nn.Module):
    def __init__(self, anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(256, 256, 3, padding=1)
        self.objectness_logits = nn.Conv2d(256, anchors, 1)
        self.anchor_deltas = nn.Conv2d(256, anchors * 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = F.relu(self.conv(x))
        return self.objectness_logits(t), self.anchor_deltas(t)


class RPN(nn.Module):
    STRIDES = (4, 8, 16, 32, 64)

    def __init__(self, config: D2Config) -> None:
        super().__init__()
        self.config = config
        self.rpn_head = RPNHead(len(config.aspect_ratios))
        for i, size in enumerate(config.anchor_sizes):
            # not in the checkpoint: they follow from the config (detectron2 does not save them either)
            self.register_buffer(f"cell_anchors_{i}", cell_anchors(float(size), config.aspect_ratios),
                                 persistent=False)

    def anchors(self, level: int, height: int, width: int) -> torch.Tensor:
        """All anchors of a level, position-major (row, column) then anchor, ``[H*W*A, 4]``."""
        stride = self.STRIDES[level]
        cell = getattr(self, f"cell_anchors_{level}")
        xs = torch.arange(0, width * stride, step=stride, dtype=torch.float32, device=cell.device)
        ys = torch.arange(0, height * stride, step=stride, dtype=torch.float32, device=cell.device)
        sy, sx = torch.meshgrid(ys, xs, indexing="ij")
        sx, sy = sx.reshape(-1), sy.reshape(-1)
        shifts = torch.stack((sx, sy, sx, sy), dim=1)
        return (shifts.view(-1, 1, 4) + cell.view(1, -1, 4)).reshape(-1, 4)

    def forward(self, features: dict[str, torch.Tensor],
                image_sizes: list[tuple[int, int]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image: (proposal boxes ``[N, 4]`` in the resized frame, objectness logits ``[N]``), best first."""
        cfg = self.config
        scores, boxes, level_ids = [], [], []
        for level, name in enumerate(LEVELS):
            x = features[name]
            batch, _, height, width = x.shape
            logits, deltas = self.rpn_head(x)
            logits = logits.permute(0, 2, 3, 1).flatten(1)  # [B, H*W*A], same order as the anchors
            deltas = deltas.view(batch, -1, 4, height, width).permute(0, 3, 4, 1, 2).flatten(1, -2)
            anchors = self.anchors(level, height, width)
            decoded = decode_boxes(deltas.reshape(-1, 4), anchors.repeat(batch, 1), (1.0, 1.0, 1.0, 1.0))
            decoded = decoded.view(batch, -1, 4)
            k = min(cfg.pre_nms_topk, logits.shape[1])
            ordered, order = logits.sort(descending=True, dim=1)
            scores.append(ordered[:, :k])
            boxes.append(torch.gather(decoded, 1, order[:, :k, None].expand(-1, -1, 4)))
            level_ids.append(torch.full((k,), level, dtype=torch.int64, device=x.device))
        all_scores, all_boxes, all_levels = torch.cat(scores, 1), torch.cat(boxes, 1), torch.cat(level_ids)
        out = []
        for i, size in enumerate(image_sizes):
            b, s, lvl = all_boxes[i], all_scores[i], all_levels
            valid = torch.isfinite(b).all(dim=1) & torch.isfinite(s)
            if not valid.all():
                b, s, lvl = b[valid], s[valid], lvl[valid]
            b = clip_boxes(b, size)
            keep = nonempty(b, cfg.rpn_min_box_size)
            b, s, lvl = b[keep], s[keep], lvl[keep]
            keep = batched_nms(b.float(), s, lvl, cfg.rpn_nms_thresh)[: cfg.post_nms_topk]
            out.append((b[keep], s[keep]))
        return out


# ---------------------------------------------------------------------------------------------------- ROI heads

def pool_levels(features: list[torch.Tensor], boxes: list[torch.Tensor], size: int) -> torch.Tensor:
    """ROIAlignV2 (aligned=True, adaptive sampling) of each box on its FPN level P2..P5, chosen by
    floor(4 + log2(sqrt(area) / 224 + 1e-8)) clamped to 2..5."""
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i), dtype=b.dtype, device=b.device), b], dim=1)
                      for i, b in enumerate(boxes)])
    flat = torch.cat(boxes)
    scale = torch.sqrt((flat[:, 2] - flat[:, 0]) * (flat[:, 3] - flat[:, 1]))
    level = torch.floor(4 + torch.log2(scale / 224 + 1e-8)).clamp(min=2, max=5).to(torch.int64) - 2
    out = torch.zeros(len(rois), features[0].shape[1], size, size, dtype=features[0].dtype,
                      device=features[0].device)
    for index, feature in enumerate(features):
        chosen = torch.nonzero(level == index).squeeze(1)
        if len(chosen):
            out[chosen] = roi_align(feature, rois[chosen].to(feature.dtype), (size, size),
                                    spatial_scale=1.0 / 2 ** (index + 2), sampling_ratio=0, aligned=True)
    return out


class BoxHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(256 * 7 * 7, 1024)
        self.fc2 = nn.Linear(1024, 1024)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc2(F.relu(self.fc1(x.flatten(1)))))


class BoxPredictor(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(1024, num_classes + 1)  # the last column is the background
        self.bbox_pred = nn.Linear(1024, num_classes * 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


class MaskHead(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        for i in range(1, 5):
            self.add_module(f"mask_fcn{i}", nn.Conv2d(256, 256, 3, padding=1))
        self.deconv = nn.ConvTranspose2d(256, 256, 2, stride=2)
        self.predictor = nn.Conv2d(256, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, 5):
            x = F.relu(getattr(self, f"mask_fcn{i}")(x))
        return self.predictor(F.relu(self.deconv(x)))


@dataclass
class Detections:
    """One image's ROI-head output in the resized frame (before postprocessing)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    classes: torch.Tensor
    proposal_index: torch.Tensor
    mask_logits: torch.Tensor | None = None  # [N, 28, 28], the predicted class's channel
    extras: dict = field(default_factory=dict)


class ROIHeads(nn.Module):
    def __init__(self, config: D2Config) -> None:
        super().__init__()
        self.config = config
        self.box_head = BoxHead()
        self.box_predictor = BoxPredictor(config.num_classes)
        self.mask_head = MaskHead(config.num_classes) if config.mask_on else None

    def box_outputs(self, features: dict[str, torch.Tensor],
                    proposals: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits ``[R, K+1]`` and class-specific deltas ``[R, 4K]`` for all images' proposals."""
        pooled = pool_levels([features[n] for n in LEVELS[:4]], proposals, 7)
        return self.box_predictor(self.box_head(pooled))

    def detect(self, logits: torch.Tensor, deltas: torch.Tensor, proposals: torch.Tensor,
               size: tuple[int, int]) -> Detections:
        """Softmax, per-class boxes clipped, score threshold, per-class NMS, top detections of one image."""
        cfg = self.config
        boxes = decode_boxes(deltas, proposals, cfg.box_reg_weights)
        probs = F.softmax(logits, dim=-1)
        valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(probs).all(dim=1)
        rows = torch.arange(len(boxes), device=boxes.device)
        if not valid.all():
            boxes, probs, rows = boxes[valid], probs[valid], rows[valid]
        probs = probs[:, :-1]
        boxes = clip_boxes(boxes.reshape(-1, 4), size).view(-1, cfg.num_classes, 4)
        mask = probs > cfg.score_thresh
        where = mask.nonzero()
        boxes, probs = boxes[mask], probs[mask]
        keep = batched_nms(boxes.float(), probs, where[:, 1], cfg.nms_thresh)[: cfg.detections_per_image]
        return Detections(boxes[keep], probs[keep], where[keep, 1], rows[where[keep, 0]])

    def masks(self, features: dict[str, torch.Tensor], detections: list[Detections]) -> None:
        """Fill each detection's 28x28 mask logits (the predicted class's channel)."""
        if self.mask_head is None:
            return
        boxes = [d.boxes for d in detections]
        if sum(len(b) for b in boxes) == 0:
            for d in detections:
                d.mask_logits = torch.zeros(0, 28, 28, device=d.boxes.device)
            return
        logits = self.mask_head(pool_levels([features[n] for n in LEVELS[:4]], boxes, 14))
        start = 0
        for d in detections:
            chunk = logits[start:start + len(d.boxes)]
            d.mask_logits = chunk[torch.arange(len(chunk), device=chunk.device), d.classes]
            start += len(d.boxes)


class D2GeneralizedRCNN(nn.Module):
    """backbone (FPN on a ResNet) + proposal_generator (RPN) + roi_heads, under detectron2's key names."""

    def __init__(self, config: D2Config) -> None:
        super().__init__()
        self.config = config
        self.backbone = FPN(config)
        self.proposal_generator = RPN(config)
        self.roi_heads = ROIHeads(config)
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(3, 1, 1), persistent=False)

    def normalize_and_pad(self, resized_rgb: list[torch.Tensor]) -> torch.Tensor:
        """Resized RGB uint8 images ``[H, W, 3]`` -> one zero-padded, normalised BGR batch ``[B, 3, H', W']``."""
        d = self.config.size_divisibility
        height = -(-max(im.shape[0] for im in resized_rgb) // d) * d
        width = -(-max(im.shape[1] for im in resized_rgb) // d) * d
        batch = torch.zeros(len(resized_rgb), 3, height, width, device=self.pixel_mean.device)
        for i, image in enumerate(resized_rgb):
            bgr = image.to(self.pixel_mean.device).permute(2, 0, 1).flip(0).float()
            batch[i, :, : image.shape[0], : image.shape[1]] = (bgr - self.pixel_mean) / self.pixel_std
        return batch

    def heads(self, features: dict[str, torch.Tensor], image_sizes: list[tuple[int, int]]) -> list[Detections]:
        """FPN features -> per-image detections in the resized frame, with the RPN's and box head's outputs
        in ``extras`` (for parity checks)."""
        proposals = self.proposal_generator(features, image_sizes)
        logits, deltas = self.roi_heads.box_outputs(features, [p[0] for p in proposals])
        detections, start = [], 0
        for (boxes, objectness), size in zip(proposals, image_sizes, strict=True):
            n = len(boxes)
            det = self.roi_heads.detect(logits[start:start + n], deltas[start:start + n], boxes, size)
            det.extras = {"proposals": boxes, "objectness": objectness, "cls_logits": logits[start:start + n],
                          "deltas": deltas[start:start + n]}
            detections.append(det)
            start += n
        self.roi_heads.masks(features, detections)
        return detections

    def postprocess(self, det: Detections, resized: tuple[int, int],
                    original: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Resized frame -> original frame: boxes scaled per axis and clipped, empty ones dropped, masks pasted.

        ``keep`` lists the surviving rows of ``det``; labels are the contiguous classes 0..79."""
        scale_x, scale_y = original[1] / resized[1], original[0] / resized[0]
        boxes = det.boxes.clone()
        boxes[:, 0::2] *= scale_x
        boxes[:, 1::2] *= scale_y
        boxes = clip_boxes(boxes, original)
        keep = torch.nonzero(nonempty(boxes)).squeeze(1)
        out = {"boxes": boxes[keep], "scores": det.scores[keep], "labels": det.classes[keep], "keep": keep}
        if det.mask_logits is not None:
            out["masks"] = paste_masks(det.mask_logits[keep].sigmoid(), boxes[keep], original,
                                       self.config.mask_threshold)[:, None]
        return out


def paste_masks(probs: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int], threshold: float) -> torch.Tensor:
    """Each ``[28, 28]`` probability map sampled bilinearly (pixel centres, zeros outside) into its box on a
    ``size`` canvas; True where >= ``threshold``. Only a window one pixel around the box is sampled: beyond it a
    sample weighs at most half a mask cell, so it cannot reach 0.5."""
    height, width = size
    out = torch.zeros(len(probs), height, width, dtype=torch.bool, device=probs.device)
    for i in range(len(probs)):
        x0, y0, x1, y1 = boxes[i]
        left = int(max(torch.floor(x0).item() - 1, 0))
        top = int(max(torch.floor(y0).item() - 1, 0))
        right = int(min(torch.ceil(x1).item() + 1, width))
        bottom = int(min(torch.ceil(y1).item() + 1, height))
        if right <= left or bottom <= top:
            continue
        ys = torch.arange(top, bottom, dtype=torch.float32, device=probs.device) + 0.5
        xs = torch.arange(left, right, dtype=torch.float32, device=probs.device) + 0.5
        gy = (ys - y0) / (y1 - y0) * 2 - 1
        gx = (xs - x0) / (x1 - x0) * 2 - 1
        grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None]
        sampled = F.grid_sample(probs[i][None, None].float(), grid, align_corners=False)[0, 0]
        out[i, top:bottom, left:right] = sampled >= threshold
    return out


# ------------------------------------------------------------------------------------------------ preprocessing

def resized_size(height: int, width: int, short: int = 800, long: int = 1333) -> tuple[int, int]:
    """detectron2's ResizeShortestEdge output size: short side to ``short``, long side capped at ``long``,
    each side rounded half up."""
    scale = short / min(height, width)
    new_h, new_w = (short, scale * width) if height < width else (scale * height, short)
    if max(new_h, new_w) > long:
        factor = long / max(new_h, new_w)
        new_h, new_w = new_h * factor, new_w * factor
    return int(new_h + 0.5), int(new_w + 0.5)


def resize_rgb(image: np.ndarray, short: int = 800, long: int = 1333) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> resized uint8 with PIL's bilinear filter (what detectron2 does for uint8)."""
    height, width = resized_size(image.shape[0], image.shape[1], short, long)
    return np.array(Image.fromarray(image).resize((width, height), Image.BILINEAR))


# -------------------------------------------------------------------------------------------------- checkpoints

class _ArraysOnly(pickle.Unpickler):
    """Unpickles dicts of numpy arrays and nothing else: a checkpoint must not run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict")}

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return getattr(import_module(module), name)


def read_detectron2_pkl(path: Path) -> dict[str, torch.Tensor]:
    """A detectron2 checkpoint (``model_final_*.pkl``: a pickled dict with the numpy arrays under ``model``)
    -> float tensors by key."""
    if not path.is_file():
        raise FcmbenchError(f"weights file {path} does not exist")
    try:
        with open(path, "rb") as handle:  # streamed: the X101 file holds 430 MB of arrays
            saved = _ArraysOnly(handle, encoding="latin1").load()
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same message
        raise FcmbenchError(f"weights file {path} is not a detectron2 checkpoint (a pickled dict of numpy arrays "
                            f"under 'model', as the model zoo's model_final_*.pkl): {err}") from None
    state = saved.get("model", saved) if isinstance(saved, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
        raise FcmbenchError(f"weights file {path} is not a detectron2 checkpoint: expected a dict of numpy arrays "
                            "under 'model'")
    return {key: torch.from_numpy(np.array(value, dtype=np.float32)) for key, value in state.items()}


# Buffers that older model-zoo files carry although they follow from the config.
DERIVED_KEYS = ("pixel_mean", "pixel_std", "proposal_generator.anchor_generator.cell_anchors.")


def load_detectron2_state(model: D2GeneralizedRCNN, state: dict[str, torch.Tensor], path: Path, name: str) -> None:
    """Load strictly by name; the config-derived buffers some files carry must agree with the config."""
    expected = model.state_dict()
    params = {k: v for k, v in state.items() if not k.startswith(DERIVED_KEYS)}
    missing = sorted(set(expected) - set(params))
    unexpected = sorted(set(params) - set(expected))
    wrong = [f"{k} {tuple(v.shape)} (expected {tuple(expected[k].shape)})" for k, v in params.items()
             if k in expected and v.shape != expected[k].shape]
    for key in ("pixel_mean", "pixel_std"):
        if key in state and not torch.allclose(state[key].flatten(), getattr(model, key).flatten(), atol=1e-3):
            wrong.append(f"{key} {state[key].flatten().tolist()} (the config has "
                         f"{getattr(model, key).flatten().tolist()})")
    if missing or unexpected or wrong:
        parts = [f"{label} {len(keys)}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                 for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                     ("mismatched", wrong)) if keys]
        raise FcmbenchError(f"weights file {path} does not fit task model {name} ({'; '.join(parts)}). "
                            f"Use the model zoo's {model.config.zoo_path.split('/')[-1]} for this network "
                            f"({model.config.zoo_url})")
    model.load_state_dict(params, strict=True)


def zoo_file(config: D2Config) -> Path:
    """The model-zoo checkpoint in the cache, downloaded on first use."""
    from torch.hub import download_url_to_file

    base = os.environ.get("FCMBENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "fcmbench")
    target = Path(base) / "detectron2" / config.zoo_path
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            download_url_to_file(config.zoo_url, str(target), progress=False)
        except (urllib.error.URLError, OSError, RuntimeError) as err:
            raise FcmbenchError(
                f"could not download {config.zoo_url} ({type(err).__name__}: {err}). Without internet, download "
                "it elsewhere and pass --weights PATH to the .pkl, or --weights none for random weights") from None
    return target


# --------------------------------------------------------------------------------------------------- task model

class Detectron2RCNN(TaskModel):
    """A detectron2-layout R-CNN split after the FPN (P2..P6; P6 derived from P5)."""

    def __init__(self, name: str, model: D2GeneralizedRCNN, weights_id: str, device: str = "cpu",
                 notes: tuple[str, ...] = ()) -> None:
        self.name = name
        self.model = model.eval().to(device)
        self.device = device
        self.weights_id = weights_id
        self.warnings = notes
        self.iou_types = ("bbox", "segm") if model.config.mask_on else ("bbox",)
        self.derived = {"p6": "p5"}

    @property
    def level_names(self) -> tuple[str, ...]:
        return LEVELS

    def resize(self, image: torch.Tensor) -> torch.Tensor:
        """Float RGB ``[3, H, W]`` in [0, 1] -> resized RGB uint8 ``[H', W', 3]``."""
        pixels = (image.detach().cpu() * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        cfg = self.model.config
        return torch.from_numpy(resize_rgb(np.ascontiguousarray(pixels), cfg.min_size_test, cfg.max_size_test))

    @torch.inference_mode()
    def front_batch(self, images: list[torch.Tensor]) -> list[FeatureSet]:
        """On a GPU, images of the same padded size go through the backbone as one batch (others one group each:
        a wider neighbour would change the zero padding's neighbourhood); on the CPU one at a time."""
        resized = [self.resize(image) for image in images]
        out: list[FeatureSet | None] = [None] * len(images)
        for members in batch_groups(resized, self._padded_shape, self.device):
            with native_kernels(self.device):
                features = self.model.backbone(self.model.normalize_and_pad([resized[i] for i in members]))
            for row, i in enumerate(members):
                levels = {name: features[name][row].float().cpu() for name in LEVELS}
                out[i] = FeatureSet(levels, tuple(images[i].shape[-2:]), tuple(resized[i].shape[:2]),
                                    self.derived)
        return out

    def front(self, image: torch.Tensor) -> FeatureSet:
        return self.front_batch([image])[0]

    def _padded_shape(self, resized: torch.Tensor) -> tuple[int, int]:
        d = self.model.config.size_divisibility
        return tuple(-(-side // d) * d for side in resized.shape[:2])

    @torch.inference_mode()
    def back_batch(self, features: list[FeatureSet]) -> list[dict[str, torch.Tensor]]:
        for feature in features:
            self.require_levels(feature)
        return in_batches(features, lambda f: tuple(f[n].shape for n in self.level_names), self.device,
                          self._back_group)

    def _back_group(self, group: list[FeatureSet]) -> list[dict[str, torch.Tensor]]:
        batch = {name: torch.stack([f[name] for f in group]).to(self.device) for name in self.level_names}
        with native_kernels(self.device):
            detections = self.model.heads(batch, [f.input_size for f in group])
        out = []
        for det, feature in zip(detections, group, strict=True):
            result = self.model.postprocess(det, feature.input_size, feature.original_size)
            result.pop("keep")
            if "masks" in result:
                result["masks"] = result["masks"].float()
            out.append({key: value.cpu() for key, value in result.items()})
        return out

    def back(self, features: FeatureSet) -> dict[str, torch.Tensor]:
        return self.back_batch([features])[0]

    def predict(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.back(self.front(image))

    def preprocessing_id(self) -> str:
        c = self.model.config
        return (f"d2-resize{c.min_size_test}-{c.max_size_test}-pil-bilinear-bgr-mean{list(c.pixel_mean)}"
                f"-std{list(c.pixel_std)}-div{c.size_divisibility}")

    def category_id(self, label: int) -> int:
        return COCO_IDS[int(label)]


def build(name: str, options: TaskModelOptions) -> Detectron2RCNN:
    """From a local ``.pkl`` (``--weights PATH``), the model zoo (default; needs internet once) or random
    weights (``--weights none``)."""
    config = CONFIGS[name]
    model = D2GeneralizedRCNN(config)
    notes: tuple[str, ...] = ()
    if options.weights == "none":
        warnings.warn(RANDOM_WEIGHTS_WARNING, stacklevel=2)
        torch.manual_seed(0)
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)):
                nn.init.normal_(module.weight, std=math.sqrt(1.0 / module.weight[0].numel()))
        weights_id, notes = "random-seed0", (RANDOM_WEIGHTS_WARNING,)
    else:
        path = Path(options.weights) if options.weights else zoo_file(config)
        load_detectron2_state(model, read_detectron2_pkl(path), path, name)
        weights_id = f"{path.name}:{file_sha256(path)[:16]}"
    return Detectron2RCNN(name, model, weights_id, options.device, notes)


def d2_faster_rcnn_r50_fpn(options: TaskModelOptions) -> Detectron2RCNN:
    return build("d2-faster-rcnn-r50-fpn", options)


def d2_mask_rcnn_r50_fpn(options: TaskModelOptions) -> Detectron2RCNN:
    return build("d2-mask-rcnn-r50-fpn", options)


def d2_faster_rcnn_x101_fpn(options: TaskModelOptions) -> Detectron2RCNN:
    return build("d2-faster-rcnn-x101-fpn", options)


def d2_mask_rcnn_x101_fpn(options: TaskModelOptions) -> Detectron2RCNN:
    return build("d2-mask-rcnn-x101-fpn", options)


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the float32 bytes of every tensor in sorted-key order (the parity fixtures' weight check)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(state[key].detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


__all__ = ["CONFIGS", "D2Config", "D2GeneralizedRCNN", "Detectron2RCNN", "Detections",
           "paste_masks", "read_detectron2_pkl", "resize_rgb", "resized_size", "state_digest"]
