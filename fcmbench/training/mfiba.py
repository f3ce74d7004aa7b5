"""Training MFIBA's importance predictor on the labels its rate-model fit stored."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from fcmbench.codecs.learned.mfiba import MfibaCodec
from fcmbench.core import registry
from fcmbench.core.codec import CodecOptions
from fcmbench.core.errors import FcmbenchError
from fcmbench.core.featureset import FeatureSet
from fcmbench.core.training import Trained, TrainRequest
from fcmbench.models.mfiba import ImportancePredictor
from fcmbench.training.codecs import TrainConfig, fit
from fcmbench.training.data import task_model_of, training_features
from fcmbench.zoo.checkpoints import write_atomically


def train_predictor(codec: MfibaCodec, items: list, train: list[FeatureSet], steps: int, lr: float) -> Path:
    """Fit the importance predictor to the labels ``fit-rate-model`` stored (its last fifth validates)."""
    labels_path = codec.folder() / "labels.json"
    if not labels_path.is_file():
        raise FcmbenchError(f"no importance labels at {labels_path}: run `fcmbench fit-rate-model {codec.name} "
                            f"--task-model {codec.options.task_model} --dataset DATASET` (or --image-folder DIR) first")
    labels = {int(k): v for k, v in json.loads(labels_path.read_text()).items()}
    by_id = {item.image_id: f for item, f in zip(items, train, strict=True)}
    pairs = [(by_id[i], torch.tensor(w)) for i, w in labels.items() if i in by_id]
    if len(pairs) < 5:
        raise FcmbenchError(f"only {len(pairs)} labelled images among the training images: fit the rate model on "
                            "the same dataset and split, with more images")
    held = max(1, len(pairs) // 5)
    fitting, checking = pairs[:-held], pairs[-held:]
    first = fitting[0][0]
    predictor = ImportancePredictor(next(iter(first.values())).shape[0], len(first))

    def loss_of(batch: list) -> torch.Tensor:
        weights = torch.cat([predictor([t[None].float() for t in f.values()]) for f, _ in batch])
        return nn.functional.mse_loss(weights, torch.stack([w for _, w in batch]))

    def step_loss(step: int, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        chosen = torch.randint(len(fitting), (min(8, len(fitting)),), generator=generator).tolist()
        return loss_of([fitting[i] for i in chosen]), {}

    path = codec.folder() / "importance.pt"
    config = TrainConfig(codec.name, 0, path, steps=steps, lr=lr, validate_every=max(1, steps // 5))
    fit(predictor, config, step_loss, lambda: loss_of(checking).item())
    write_atomically({"state_dict": predictor.state_dict(), "labels": str(labels_path)}, path)
    return path


def train(request: TrainRequest) -> Trained:
    """``fcmbench train mfiba-*``: the importance predictor, on the labels ``fit-rate-model`` stored."""
    task = task_model_of(request)
    _, train_items, train_features, _ = training_features(request, task)
    codec = registry.methods.get(request.method)(CodecOptions(task_model=task.name, checkpoints=request.out))
    return Trained(train_predictor(codec, train_items, train_features, steps=request.steps, lr=request.lr))
