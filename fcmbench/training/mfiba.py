"""MFIBA's training: the per-level task loss-rate model and the importance labels (``fit-rate-model``), their
calibration and default λ, then the importance predictor on those labels."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from rich.progress import track
from torch import nn

from fcmbench.codecs.learned.mfiba import MfibaCodec, RateModel, target_rates
from fcmbench.core import registry
from fcmbench.core.codec import CodecOptions
from fcmbench.core.errors import FcmbenchError
from fcmbench.core.featureset import FeatureSet
from fcmbench.core.paths import default_cache
from fcmbench.core.training import Trained, TrainRequest
from fcmbench.datasets.pseudo import PseudoLabelled
from fcmbench.models.mfiba import ImportancePredictor
from fcmbench.pipeline.runner import ImageWork
from fcmbench.tasks.base import TaskModel
from fcmbench.training.codecs import TrainConfig, fit
from fcmbench.training.data import task_model_of, training_features, training_images
from fcmbench.zoo.checkpoints import write_atomically

LOSS_THRESHOLD = 0.01  # per-image task losses below this count as none (reference: count_weight.py)
BINS = 50  # importance labels are quantised to 50 bins, as the reference's

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
    """``fcmbench train mfiba-*``: the rate model and labels first if they are not there (``fit``), then the
    importance predictor on those labels."""
    task = task_model_of(request)
    codec = fitted_codec(request.method, CodecOptions(task_model=task.name, checkpoints=request.out))
    if not (codec.folder() / "labels.json").is_file():
        write_fit(codec, task, request)
    _, train_items, train_features, _ = training_features(request, task)
    steps = request.predictor_steps or request.steps
    return Trained(train_predictor(codec, train_items, train_features, steps=steps, lr=request.lr))


def fit_and_write(request: TrainRequest) -> tuple[MfibaCodec, RateModel, dict]:
    """``fcmbench fit-rate-model``: measure ``request.fit_images`` training images (against their ground truth, or
    on an image folder against the uncompressed detections scoring ``pseudo_score`` or more), fit the rate model,
    and write it with the importance labels beside the codec's checkpoints."""
    task = task_model_of(request)
    codec = fitted_codec(request.method, CodecOptions(task_model=task.name, checkpoints=request.out))
    model, labels = write_fit(codec, task, request)
    return codec, model, labels


def write_fit(codec: MfibaCodec, task: TaskModel, request: TrainRequest) -> tuple[RateModel, dict]:
    """``fit_and_write``'s work for a codec and task model already built (``train`` has them)."""
    codec.fit_qualities()
    dataset, items, _ = training_images(replace(request, images=request.fit_images))
    cache = (request.cache or default_cache()) / "features"
    features = {item.image_id: ImageWork(item, task, cache).features() for item in items}
    if dataset is None:
        dataset = PseudoLabelled(items, task, features, request.pseudo_score)
    model, labels = fit_rate_model(codec, dataset, task, features)
    model.save(codec.folder() / "rate_model.json")
    (codec.folder() / "labels.json").write_text(json.dumps({str(k): v for k, v in labels.items()}))
    return model, labels


def fit_power_law(rates: list[float], losses: list[float]) -> tuple[float, float]:
    """D = a·R^b with a ≥ 1e-10 and b ≤ 0 (scipy's TRF, as the reference); no loss at all gives (1e-10, 0)."""
    from scipy.optimize import OptimizeWarning, curve_fit

    rates, losses = np.asarray(rates, float), np.asarray(losses, float)
    if losses.max() <= 0 or len(rates) < 2:
        return 1e-10, 0.0
    start = (float(losses.max() * rates.min() ** 0.5), -0.5)
    with warnings.catch_warnings():  # with as many points as parameters the covariance is undefined: not needed
        warnings.simplefilter("ignore", OptimizeWarning)
        (a, b), _ = curve_fit(lambda r, a, b: a * np.power(r, b), rates, losses, p0=start,
                              bounds=([1e-10, -np.inf], [np.inf, 0.0]), method="trf", maxfev=20000)
    return float(a), float(b)


def importance_labels(losses: dict[int, list[float]]) -> list[float]:
    """One image's weights from its per-quality, per-level task losses (reference §4.4 steps 2-3)."""
    total = np.zeros(len(next(iter(losses.values()))))
    for per_level in losses.values():
        d = np.asarray(per_level, float)
        span = d.max() - d.min()
        total += (d - d.min()) / span if span > 0 else 1.0
    weights = total / total.sum()
    return [float(np.clip(math.floor(w * BINS) / BINS + 0.5 / BINS, 0.5 / BINS, 1 - 0.5 / BINS)) for w in weights]


def image_task_loss(dataset, task, image_id: int, baseline: float, features: FeatureSet) -> float:
    prediction = task.back(features)
    score = per_image_map(dataset, task, image_id, prediction)
    loss = baseline - score
    return loss if loss >= LOSS_THRESHOLD else 0.0


def per_image_map(dataset, task, image_id: int, prediction: dict) -> float:
    metrics = dataset.evaluate(task.to_coco_results(image_id, prediction), [image_id], ("bbox",))
    value = metrics.get("bbox_mAP", 0.0)
    return 0.0 if math.isnan(value) else value


def fit_rate_model(codec: MfibaCodec, dataset, task, features: dict[int, FeatureSet]) -> tuple[RateModel, dict]:
    """Measure, per image, level and base quality, the bits and the task loss of coding that level alone;
    fit D_l(R) per level on the means over images; build the importance labels. Returns (model, labels)."""
    qualities = codec.fit_qualities()
    measurements, labels, decoded = [], {}, {}
    for image_id, x in track(features.items(), description=f"fit {codec.name}"):
        baseline = per_image_map(dataset, task, image_id, task.back(x))
        if baseline <= 0:  # as the reference: such images carry no importance information
            continue
        losses: dict[int, list[float]] = {q: [] for q in qualities}
        for name, level in x.items():
            for q in qualities:
                coded = codec.code_level(name, level, q)
                decoded[image_id, name, q] = codec.decode_level(coded)
                replaced = x.replace({**x.levels, name: decoded[image_id, name, q]})
                loss = image_task_loss(dataset, task, image_id, baseline, replaced)
                losses[q].append(loss)
                measurements.append({"image": image_id, "level": name, "quality": q, "bpp": coded.bpp,
                                     "pixels": coded.layout.pixels, "loss": loss})
        labels[image_id] = importance_labels(losses)
    if not labels:
        raise FcmbenchError("no image with a non-zero uncompressed mAP among those given: use more images")
    levels = list(next(iter(features.values())))
    a, b = [], []
    for name in levels:
        rows = [[m for m in measurements if m["level"] == name and m["quality"] == q] for q in qualities]
        fitted = fit_power_law([np.mean([m["bpp"] for m in r]) for r in rows],
                               [100 * np.mean([m["loss"] for m in r]) for r in rows])  # loss in mAP points
        a.append(fitted[0])
        b.append(fitted[1])
    model = RateModel(codec.base, levels, qualities, a, b, [], measurements)
    model.lambdas = default_lambdas(model, labels, len(qualities))
    if len(model.lambdas) >= 3:
        joint = JointEvaluation(model, features, decoded, dataset, task)
        labels, model.calibration = calibrate_labels(labels, model.lambdas, joint)
    return model, labels


class JointEvaluation:
    """(mean bits, bbox mAP) of the fitted images when every level takes the quality the allocation picks with
    given weights; an image's prediction is reused while its chosen qualities stay the same."""

    def __init__(self, model: RateModel, features: dict[int, FeatureSet], decoded: dict, dataset, task) -> None:
        self.model, self.features, self.decoded, self.dataset, self.task = model, features, decoded, dataset, task
        self.rows: dict[tuple, dict] = {(m["image"], m["level"], m["quality"]): m for m in model.measurements}
        self.cache: dict[tuple, list[dict]] = {}

    def __call__(self, labels: dict[int, list[float]], lam: float) -> tuple[float, float]:
        results, bits = [], 0.0
        for image, weights in labels.items():
            levels = self.model.levels
            pixels = [self.rows[image, name, self.model.qualities[0]]["pixels"] for name in levels]
            targets = target_rates(weights, self.model.a, self.model.b, lam, pixels)
            chosen = tuple(min(self.model.qualities, key=lambda q, n=name, t=t: (
                abs(self.rows[image, n, q]["bpp"] - t), q)) for name, t in zip(levels, targets, strict=True))
            if (image, chosen) not in self.cache:
                x = self.features[image]
                coded = x.replace({n: self.decoded[image, n, q] for n, q in zip(levels, chosen, strict=True)})
                self.cache[image, chosen] = self.task.to_coco_results(image, self.task.back(coded))
            results += self.cache[image, chosen]
            bits += sum(self.rows[image, n, q]["bpp"] * self.rows[image, n, q]["pixels"]
                        for n, q in zip(levels, chosen, strict=True))
        score = self.dataset.evaluate(results, list(labels), ("bbox",)).get("bbox_mAP", 0.0)
        return bits / len(labels), 0.0 if math.isnan(score) else score


def calibrate_labels(labels: dict[int, list[float]], lambdas: list[float],
                     joint: JointEvaluation) -> tuple[dict[int, list[float]], list[dict]]:
    """Reference §4.4 step 4, one pass: for each weight bin in turn, add or subtract 0.01 to every weight in it, and
    keep the change when the middle operating point rises further above the chord through its neighbours
    (the reference uses λ 400/500/600; here the middle default λ and the two around it)."""
    middle = len(lambdas) // 2
    triple = lambdas[middle - 1 : middle + 2]

    def margin(candidate: dict[int, list[float]]) -> float:
        (r0, a0), (r1, a1), (r2, a2) = (joint(candidate, lam) for lam in triple)
        chord = a0 if r2 == r0 else a0 + (a2 - a0) * (r1 - r0) / (r2 - r0)
        return a1 - chord

    original = {image: [round(w, 2) for w in weights] for image, weights in labels.items()}
    best, log = margin(labels), []
    for centre in sorted({w for weights in original.values() for w in weights}):
        for step in (0.01, -0.01):
            trial = {image: [max(0.0, w + step) if original[image][k] == centre else w for k, w in enumerate(ws)]
                     for image, ws in labels.items()}
            score = margin(trial)
            if score > best:
                labels, best = trial, score
                log.append({"bin": centre, "step": step, "margin": round(score, 6)})
                break
    return labels, log


def default_lambdas(model: RateModel, labels: dict[int, list[float]], points: int) -> list[float]:
    """λ for ``points`` operating points: those at which the allocation, with the labelled weights on the
    fitted images, spends evenly spaced amounts of bits from all-lowest to all-highest base quality (λ is
    in the model's own units, so it is chosen by what it does). Largest λ (lowest rate) first."""
    rows: dict[int, dict[str, dict[int, dict]]] = {}
    for m in model.measurements:
        rows.setdefault(m["image"], {}).setdefault(m["level"], {})[m["quality"]] = m

    def spent(lam: float) -> float:
        total = 0.0
        for image, weights in labels.items():
            per_level = [rows[image][name] for name in model.levels]
            pixels = [next(iter(level.values()))["pixels"] for level in per_level]
            targets = target_rates(weights, model.a, model.b, lam, pixels)
            for level, target in zip(per_level, targets, strict=True):
                chosen = min(level.values(), key=lambda m: (abs(m["bpp"] - target), m["quality"]))
                total += chosen["bpp"] * chosen["pixels"]
        return total / len(labels)

    candidates = np.geomspace(1e6, 1e-6, 241)
    bits = np.array([spent(lam) for lam in candidates])
    chosen = []
    for goal in np.linspace(bits.min(), bits.max(), points):
        lam = float(f"{candidates[int(np.abs(bits - goal).argmin())]:.4g}")
        if lam not in chosen:
            chosen.append(lam)
    return chosen


def fitted_codec(name: str, options: CodecOptions) -> MfibaCodec:

    codec = registry.methods.get(name)(options)
    if not isinstance(codec, MfibaCodec):
        raise FcmbenchError(f"{name} is not an MFIBA method: fit-rate-model takes mfiba, mfiba-elic or mfiba-tcm")
    return codec
