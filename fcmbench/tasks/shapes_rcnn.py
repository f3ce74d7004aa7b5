"""``shapes_rcnn``: the embedded default's task network.

A torchvision Mask R-CNN with the standard FPN (P2..P6 from ``BackboneWithFPN`` + ``LastLevelMaxPool``) on a
small convolutional body, sized for 256x256 images of the ``shapes`` dataset. Trained from scratch by
``fcmbench train-task``; its weights ship in ``fcmbench/weights/shapes_rcnn.pt``.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import Conv2dNormActivation

from fcmbench.core.errors import FcmbenchError
from fcmbench.datasets.shapes import CLASSES, IMAGE_SIZE
from fcmbench.tasks.base import TaskModelOptions
from fcmbench.tasks.torchvision_rcnn import RANDOM_WEIGHTS_WARNING, TorchvisionRCNN, load_local_weights

SHIPPED_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "shapes_rcnn.pt"
FPN_CHANNELS = 64
STAGE_CHANNELS = (32, 48, 64, 96, 128)  # stem (stride 2), then strides 4, 8, 16, 32


def small_body() -> nn.Module:
    """A plain conv body whose stages ``c2..c5`` have strides 4, 8, 16 and 32."""

    def stage(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(Conv2dNormActivation(cin, cout, 3, stride=2),
                             Conv2dNormActivation(cout, cout, 3), Conv2dNormActivation(cout, cout, 3))

    c = STAGE_CHANNELS
    return nn.Sequential(OrderedDict(stem=Conv2dNormActivation(3, c[0], 3, stride=2),
                              c2=stage(c[0], c[1]), c3=stage(c[1], c[2]), c4=stage(c[2], c[3]), c5=stage(c[3], c[4])))


def build_shapes_rcnn() -> MaskRCNN:
    backbone = BackboneWithFPN(small_body(), {"c2": "0", "c3": "1", "c4": "2", "c5": "3"},
                               list(STAGE_CHANNELS[1:]), FPN_CHANNELS, extra_blocks=LastLevelMaxPool())
    anchors = AnchorGenerator(((8,), (16,), (32,), (64,), (128,)), ((0.5, 1.0, 2.0),) * 5)
    classes = len(CLASSES) + 1
    return MaskRCNN(
        backbone, num_classes=None, min_size=IMAGE_SIZE, max_size=IMAGE_SIZE, rpn_anchor_generator=anchors,
        box_head=TwoMLPHead(FPN_CHANNELS * 7 * 7, 256), box_predictor=FastRCNNPredictor(256, classes),
        mask_head=MaskRCNNHeads(FPN_CHANNELS, (64, 64, 64, 64), 1),
        mask_predictor=MaskRCNNPredictor(64, 64, classes),
        box_detections_per_img=50, box_batch_size_per_image=128,
        rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=150,
    )


def shapes_rcnn(options: TaskModelOptions) -> TorchvisionRCNN:
    if options.weights == "none":
        # seeded: every worker process builds the same network, and cached features stay its features
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = build_shapes_rcnn()
        return TorchvisionRCNN("shapes_rcnn", model, "random-seed0", options.device, (RANDOM_WEIGHTS_WARNING,))
    model = build_shapes_rcnn()
    path = Path(options.weights) if options.weights else SHIPPED_WEIGHTS
    if not path.is_file():
        raise FcmbenchError(
            f"weights for shapes_rcnn not found at {path}; train them with "
            "`fcmbench train-task --out fcmbench/weights/shapes_rcnn.pt` or pass --weights PATH"
        )
    weights_id = load_local_weights(model, path, "shapes_rcnn")
    return TorchvisionRCNN("shapes_rcnn", model, weights_id, options.device)
