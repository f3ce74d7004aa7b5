"""The trainer of ELIC and LIC-TCM: on images (``elic``, ``tcm``) or on the tiled features of a task model
(``elic-feat``, ``tcm-feat``)."""

from __future__ import annotations

from fcmbench.codecs.learned.mosaic import TiledFeatureCodec, feature_mosaics
from fcmbench.core import registry
from fcmbench.core.codec import CodecOptions
from fcmbench.core.training import Trained, TrainRequest
from fcmbench.datasets.base import load_image
from fcmbench.training.codecs import config_of, kept_weights, train_image_network
from fcmbench.training.data import quality_of, task_model_of, training_features, training_images
from fcmbench.zoo.checkpoints import checkpoint_path


def train(request: TrainRequest) -> Trained:
    quality = quality_of(request)
    codec = registry.methods.get(request.method)
    if issubclass(codec, TiledFeatureCodec):
        task = task_model_of(request)
        _, _, train_features, val_features = training_features(request, task)
        train = [m for f in train_features for m in feature_mosaics(f)]
        val = [m for f in val_features for m in feature_mosaics(f)]
        path = checkpoint_path(request.method, quality, CodecOptions(task_model=task.name, checkpoints=request.out))
    else:
        _, train_items, val_items = training_images(request)
        train, val = [load_image(i) for i in train_items], [load_image(i) for i in val_items]
        path = checkpoint_path(request.method, quality, CodecOptions(checkpoints=request.out), "images")
    result = train_image_network(config_of(request, quality, path), codec.family, train, val)
    return Trained(path, kept_weights(result["history"]))
