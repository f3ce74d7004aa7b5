"""ONNX detectors split at named tensors, run with onnxruntime.

The graph is cut with ``onnx.utils.Extractor``: the front runs input -> split tensors, the back runs split
tensors -> outputs, so ``back(front(x))`` is the unsplit network. Level names (``p<log2 stride>``), sizes and
channel counts are read from the graph. Each model family brings its own post-processing (``SSDPostprocess``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms

from fcmbench.core.errors import FcmbenchError
from fcmbench.core.featureset import FeatureSet
from fcmbench.tasks.base import TaskModel, file_sha256

Postprocess = Callable[[dict[str, np.ndarray], tuple[int, int]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class SSDPostprocess:
    """SSD box decoding in normalised coordinates (``xmin = e0*w + a_xmin`` ...), score threshold,
    per-class NMS, boxes scaled to the original image; class ``i`` (1..) becomes ``category_ids[i - 1]``."""

    scores: str
    encodings: str
    anchors: str
    category_ids: tuple[int, ...]
    score_threshold: float = 0.01
    iou_threshold: float = 0.6
    max_detections: int = 100

    def __call__(self, outputs: dict[str, np.ndarray], original_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        scores = torch.from_numpy(outputs[self.scores][0])[:, 1:]  # column 0 is the background
        codes = torch.from_numpy(outputs[self.encodings][0]).double()
        anchors = torch.from_numpy(outputs[self.anchors][0]).double()
        size = torch.cat([anchors[:, 2:] - anchors[:, :2]] * 2, dim=1)
        boxes = codes * size + anchors
        height, width = original_size
        boxes = (boxes.clamp(0, 1) * torch.tensor([width, height, width, height])).float()
        anchor_index, label = torch.nonzero(scores > self.score_threshold, as_tuple=True)
        kept_scores = scores[anchor_index, label]
        kept_boxes = boxes[anchor_index]
        keep = batched_nms(kept_boxes, kept_scores, label, self.iou_threshold)[: self.max_detections]
        return {"boxes": kept_boxes[keep], "scores": kept_scores[keep], "labels": label[keep] + 1}


class OnnxSplitDetector(TaskModel):
    """Any ONNX detector whose single input is a ``uint8 [1, H, W, 3]`` RGB image, cut at ``split`` tensors
    (ordered from the finest level to the coarsest)."""

    iou_types = ("bbox",)

    def __init__(self, name: str, path: Path, split: tuple[str, ...], postprocess: Postprocess,
                 category_ids: tuple[int, ...], device: str = "cpu") -> None:
        import onnx
        import onnx.utils

        self.name = name
        self.path = path
        self.split = split
        self.postprocess = postprocess
        self.category_ids = category_ids
        try:
            graph = onnx.load(str(path))
        except Exception as err:
            raise FcmbenchError(f"{path} is not a readable ONNX model: {err}") from None
        (graph_input,) = graph.graph.input
        self.input_name = graph_input.name
        dims = [d.dim_value for d in graph_input.type.tensor_type.shape.dim]
        if len(dims) != 4 or dims[3] != 3:
            raise FcmbenchError(f"{path}: expected an NHWC RGB input, found {self.input_name} with shape {dims}")
        self.input_size = (dims[1], dims[2])
        produced = {out for node in graph.graph.node for out in node.output}
        unknown = [t for t in split if t not in produced]
        if unknown:
            raise FcmbenchError(f"{path} has no tensors {unknown}: give the names of tensors inside the graph")
        self.outputs = [o.name for o in graph.graph.output]
        extractor = onnx.utils.Extractor(graph)
        self._front = self._session(extractor.extract_model([self.input_name], list(split)), device)
        self._back = self._session(extractor.extract_model(list(split), self.outputs), device)
        self._graph, self._device = graph, device
        self.levels = self._read_levels()
        self.weights_id = file_sha256(path)

    @staticmethod
    def _session(model, device: str):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        return ort.InferenceSession(model.SerializeToString(), options, providers=providers)

    def _read_levels(self) -> dict[str, tuple[int, int, int]]:
        """Level name -> (channels, height, width), from one run of the front on a blank image."""
        blank = np.zeros((1, *self.input_size, 3), dtype=np.uint8)
        levels = {}
        for tensor, value in zip(self.split, self._front.run(list(self.split), {self.input_name: blank}),
                                 strict=True):
            if value.ndim != 4:
                raise FcmbenchError(f"{self.path}: split tensor {tensor} is not [1, C, H, W] (shape {value.shape})")
            stride = self.input_size[0] / value.shape[2]
            levels[f"p{round(math.log2(stride))}"] = tuple(value.shape[1:])
        return levels

    @property
    def level_names(self) -> tuple[str, ...]:
        return tuple(self.levels)

    def preprocessing_id(self) -> str:
        return f"onnx-rgb-uint8-bilinear-antialias-{self.input_size[0]}x{self.input_size[1]}"

    def category_id(self, label: int) -> int:
        return self.category_ids[label - 1]

    def _network_input(self, image: torch.Tensor) -> np.ndarray:
        resized = F.interpolate(image[None].float(), size=self.input_size, mode="bilinear", antialias=True,
                                align_corners=False)
        return (resized * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()

    def front(self, image: torch.Tensor) -> FeatureSet:
        values = self._front.run(list(self.split), {self.input_name: self._network_input(image)})
        levels = {name: torch.from_numpy(v[0].copy()) for name, v in zip(self.levels, values, strict=True)}
        return FeatureSet(levels, tuple(image.shape[-2:]), self.input_size,
                          {"tensors": dict(zip(self.levels, self.split, strict=True))})

    def back(self, features: FeatureSet) -> dict[str, torch.Tensor]:
        self.require_levels(features)
        feed = {tensor: features[name][None].float().numpy() for name, tensor in zip(self.levels, self.split,
                                                                                      strict=True)}
        return self.postprocess(dict(zip(self.outputs, self._back.run(self.outputs, feed), strict=True)),
                                features.original_size)

    @cached_property
    def _full(self):
        """The unsplit network: only the split check needs it, so it is built on first use."""
        return self._session(self._graph, self._device)

    def predict(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        values = self._full.run(self.outputs, {self.input_name: self._network_input(image)})
        return self.postprocess(dict(zip(self.outputs, values, strict=True)), tuple(image.shape[-2:]))


def default_model_path(env: str, relative: str) -> Path:
    """``$env`` if set, else ``../shared/models/<relative>`` beside the checkout."""
    if os.environ.get(env):
        return Path(os.environ[env])
    return Path(__file__).resolve().parents[3] / "shared" / "models" / relative
