"""``ssd_mobilenet_fpnlite``: the COCO-trained SSD MobileNetV2 + FPN-lite (int8 ONNX, 256x256 input).

The file is found by ``--weights PATH``, else ``$FCMBENCH_SSD_ONNX``, else ``../shared/models/...`` beside the
checkout. It is cut where its five FPN levels (128 channels, strides 8..128) enter the shared box and class
heads: the Clip (ReLU6) outputs, in float, just before they are quantised again.
"""

from __future__ import annotations

from pathlib import Path

from fcmbench.core.errors import FcmbenchError
from fcmbench.tasks.base import TaskModelOptions
from fcmbench.tasks.onnx_split import OnnxSplitDetector, SSDPostprocess, default_model_path

RELATIVE_PATH = "ssd-mobilenet-v2-fpnlite-256-coco/ssd_mobilenet_v2_fpnlite_10_256_int8.onnx"
SPLIT = ("Relu6__185:0", "Relu6__165:0", "Relu6__107:0", "Relu6__126:0", "Relu6__145:0")
# The model's classes 1..80 in COCO order, as the official COCO category ids (which skip 12, 26, 29, ...).
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33,
    34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61,
    62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90)
POSTPROCESS = SSDPostprocess(scores="StatefulPartitionedCall:2", encodings="StatefulPartitionedCall:1",
                             anchors="StatefulPartitionedCall:0", category_ids=COCO_CATEGORY_IDS)


def ssd_mobilenet_fpnlite(options: TaskModelOptions) -> OnnxSplitDetector:
    if options.weights == "none":
        raise FcmbenchError("ssd_mobilenet_fpnlite has no random-weights mode: give its ONNX file with --weights")
    path = Path(options.weights) if options.weights else default_model_path("FCMBENCH_SSD_ONNX", RELATIVE_PATH)
    if not path.is_file():
        raise FcmbenchError(f"ssd_mobilenet_fpnlite: no ONNX model at {path}; pass --weights PATH or set "
                            "FCMBENCH_SSD_ONNX")
    return OnnxSplitDetector("ssd_mobilenet_fpnlite", path, SPLIT, POSTPROCESS, COCO_CATEGORY_IDS, options.device)
