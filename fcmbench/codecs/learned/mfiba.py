"""MFIBA (Liu et al., ACM TOMM 2025): bits allocated across FPN levels by their predicted importance, on a tiled
base codec: ``mfiba-elic`` uses ``elic-feat``'s ELIC networks, ``mfiba-tcm`` ``tcm-feat``'s LIC-TCM ones
(``mfiba`` is ``mfiba-elic``). Every level is coded, P6 included.

Per image, the importance predictor gives a weight w_l per level; the task loss-rate model D_l(R) = a_l R^b_l
(``fcmbench fit-rate-model``) and the closed form R*_l = (-λ_l / (w_l a_l b_l))^(1/(b_l - 1)) give each level's
target rate in bits per mosaic pixel, with λ_l = λ · pixels_l / pixels_first (the reference's λ, λ/4, λ/16,
λ/60, λ/60 are these pixel ratios for its 800-px inputs). Each level then takes the base quality whose actual
rate on this image is nearest its target, so the encoder codes every level at every quality once per image.
λ is the rate knob; the chosen qualities are in the stream and in the results.

The importance predictor is ours (the paper's MFIP is not public): per level the channel-wise mean, standard
deviation and maximum (log-compressed), a small MLP per level to one score, softmax over levels. It learns the
reference's labels (§4.4 steps 1-3): per image and quality, the task losses of coding one level (the others
uncompressed) min-max normalised over levels, summed over qualities, normalised to sum 1, quantised to 50 bins
(images whose uncompressed mAP is 0 are left out), then calibrated per bin as the reference's step 4 does.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from rich.progress import track

from fcmbench.codecs.learned.elic import ElicFeatCodec
from fcmbench.codecs.learned.image_codec import IMAGE_LAMBDAS, decompress_image
from fcmbench.codecs.learned.mosaic import CodedLevel, TiledFeatureCodec, level_from_mosaic
from fcmbench.codecs.learned.tcm import TcmFeatCodec
from fcmbench.core.codec import CodecOptions, RatePoint
from fcmbench.core.errors import FcmbenchError
from fcmbench.core.featureset import FeatureSet
from fcmbench.models.mfiba import ImportancePredictor
from fcmbench.zoo.checkpoints import checkpoint_root, read_state, require

REFERENCE_LAMBDAS = (1100, 1000, 900, 600, 500, 400)
LOSS_THRESHOLD = 0.01  # per-image task losses below this count as none (reference: count_weight.py)
BINS = 50


@dataclass
class RateModel:
    """What ``fit-rate-model`` measured and fitted for one base codec and task model."""

    base: str
    levels: list[str]
    qualities: list[int]
    a: list[float]
    b: list[float]
    lambdas: list[float]  # default operating points, lowest rate first
    measurements: list[dict] = field(default_factory=list)  # image, level, quality, bpp, task loss
    calibration: list[dict] = field(default_factory=list)  # the label changes calibration kept

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        content = asdict(self)
        content["measurements"] = [{k: round(v, 6) if isinstance(v, float) else v for k, v in m.items()}
                                   for m in self.measurements]
        partial.write_text(json.dumps(content, separators=(",", ":")))
        partial.replace(path)

    @classmethod
    def load(cls, path: Path) -> RateModel:
        try:
            model = cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as err:
            raise FcmbenchError(f"rate model {path} is not one `fcmbench fit-rate-model` wrote: {err}") from None
        model.check(path)
        return model

    def check(self, path: Path) -> None:
        """Types and lengths of every field the codec computes with: a string where a number belongs would
        otherwise fail deep inside the allocation."""
        def numbers(values: object) -> bool:
            return isinstance(values, list) and all(isinstance(v, int | float) and not isinstance(v, bool)
                                                    and math.isfinite(v) for v in values)

        problem = None
        if not isinstance(self.base, str) or not isinstance(self.levels, list) or not all(
                isinstance(n, str) for n in self.levels):
            problem = "base must be a name and levels a list of level names"
        elif not (numbers(self.a) and numbers(self.b) and len(self.a) == len(self.b) == len(self.levels)):
            problem = "a and b must hold one finite number per level"
        elif not numbers(self.lambdas) or not numbers(self.qualities) or not all(
                isinstance(q, int) and q in IMAGE_LAMBDAS for q in self.qualities):
            problem = "lambdas must be numbers and qualities integers 1..6"
        elif not isinstance(self.measurements, list) or not isinstance(self.calibration, list):
            problem = "measurements and calibration must be lists"
        if problem:
            raise FcmbenchError(f"rate model {path} is not one `fcmbench fit-rate-model` wrote: {problem}; fit it "
                                "again with `fcmbench fit-rate-model`")


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


def depends_on_rate(a: float, b: float) -> bool:
    """Whether a fitted level's task loss falls with rate (the fit returns b = -1e-16 and the like for flat ones)."""
    return a > 1e-9 and b < -1e-6


def target_rates(weights: list[float], a: list[float], b: list[float], lam: float, pixels: list[int]) -> list[float]:
    """The closed-form minimiser of Σ_l w_l a_l R_l^b_l + λ_l R_l; a level whose loss does not fall with rate
    gets rate 0 (its lowest quality)."""
    targets = []
    for w, a_l, b_l, pix in zip(weights, a, b, pixels, strict=True):
        slope = max(w, 1e-8) * a_l * b_l
        if not depends_on_rate(a_l, b_l):
            targets.append(0.0)
            continue
        targets.append((lam * pix / pixels[0] / -slope) ** (1 / (b_l - 1)))
    return targets


def nearest_quality(target: float, coded: dict[int, CodedLevel]) -> int:
    return min(coded, key=lambda q: (abs(coded[q].bpp - target), q))


def importance_labels(losses: dict[int, list[float]]) -> list[float]:
    """One image's weights from its per-quality, per-level task losses (reference §4.4 steps 2-3)."""
    total = np.zeros(len(next(iter(losses.values()))))
    for per_level in losses.values():
        d = np.asarray(per_level, float)
        span = d.max() - d.min()
        total += (d - d.min()) / span if span > 0 else 1.0
    weights = total / total.sum()
    return [float(np.clip(math.floor(w * BINS) / BINS + 0.5 / BINS, 0.5 / BINS, 1 - 0.5 / BINS)) for w in weights]


class MfibaCodec(TiledFeatureCodec):
    """MFIBA on a tiled base codec (``anchor`` gives the network family and the base checkpoints)."""

    anchor: ClassVar[type[TiledFeatureCodec]]
    trainer = "fcmbench.training.mfiba:train"  # the importance predictor; its rate model: fit-rate-model

    @classmethod
    def rate_points(cls) -> list[RatePoint]:
        """The reference's λ; a fitted rate model gives the operating points for its task model."""
        return [RatePoint(f"lam{lam:g}", lam) for lam in REFERENCE_LAMBDAS]

    @classmethod
    def rate_point(cls, label: str) -> RatePoint | None:
        try:
            return RatePoint(label, float(label.removeprefix("lam"))) if label.startswith("lam") else None
        except ValueError:
            return None

    def folder(self) -> Path:
        return checkpoint_root(self.options) / self.name / (self.options.task_model or "any")

    def rate_model(self) -> RateModel:
        path = require(self.folder() / "rate_model.json",
                       f"{self.name} rate model for task model {self.options.task_model}",
                       f"fit-rate-model {self.name} --task-model {self.options.task_model} --dataset DATASET",
                       self.options, f" (after training {self.base} at every quality)")
        return _rate_model(str(path), path.stat().st_mtime_ns)

    def predictor(self) -> ImportancePredictor:
        path = require(self.folder() / "importance.pt",
                       f"{self.name} importance predictor for task model {self.options.task_model}",
                       f"train {self.name} --task-model {self.options.task_model} --dataset DATASET",
                       self.options, " (after fit-rate-model)")
        return _predictor(str(path), path.stat().st_mtime_ns)

    def fit_qualities(self) -> list[int]:
        """The base qualities a rate model can be fitted over (two at least)."""
        qualities = self.base_qualities()
        if len(qualities) < 2:
            raise FcmbenchError(
                f"{self.name} needs {self.base} checkpoints at two or more qualities for task model "
                f"{self.options.task_model} under {checkpoint_root(self.options)}; train them first with "
                f"`fcmbench train {self.base} --quality Q --task-model {self.options.task_model} --dataset DATASET`")
        return qualities

    def operating_points(self) -> list[RatePoint]:
        try:
            lambdas = self.rate_model().lambdas
        except FcmbenchError:
            return self.rate_points()
        return [RatePoint(f"lam{lam:g}", lam) for lam in lambdas] or self.rate_points()

    def ensure_ready(self, rates: list[RatePoint]) -> None:
        qualities = self.rate_model().qualities  # the first thing to make, so the first thing asked for
        self.predictor()
        for quality in qualities:
            self.network(quality)

    def files(self, rate: RatePoint) -> list[Path]:
        """Every λ depends on every base checkpoint, the rate model and the predictor."""
        bases = [self.checkpoint(q) for q in self.base_qualities()]
        return [*bases, self.folder() / "rate_model.json", self.folder() / "importance.pt"]

    def describe(self) -> str:
        try:
            model = self.rate_model()
        except FcmbenchError:
            return super().describe()
        images = len({m["image"] for m in model.measurements})
        return (f"{super().describe()}; rate model fitted on {images} images; importance predictor ours "
                "(the paper's MFIP is not public)")

    def importance(self, x: FeatureSet) -> list[float]:
        with torch.inference_mode():
            return self.predictor()([t[None].float() for t in x.values()])[0].tolist()

    def encode(self, x: FeatureSet, rate: RatePoint) -> bytes:
        return self.encode_batch(x, [rate])[0][0]

    def encode_batch(self, x: FeatureSet, rates: list[RatePoint]) -> list[tuple[bytes, float]]:
        """Every level is coded at every base quality once; each λ then only picks among those streams (so each
        rate point's encode time is that shared work plus its own choice)."""
        start = time.perf_counter()
        model = self.rate_model()
        if list(x) != model.levels:
            raise FcmbenchError(f"the {self.name} rate model was fitted for levels {', '.join(model.levels)}; these "
                                f"features have {', '.join(x)}: fit one for this task model")
        coded = {name: {q: self.code_level(name, t, q) for q in model.qualities} for name, t in x.items()}
        weights = self.importance(x)
        shared = time.perf_counter() - start
        pixels = [next(iter(c.values())).layout.pixels for c in coded.values()]
        results = []
        for rate in rates:
            start = time.perf_counter()
            targets = target_rates(weights, model.a, model.b, rate.value, pixels)
            chosen = [coded[name][nearest_quality(r, coded[name])] for name, r in zip(x, targets, strict=True)]
            results.append((self.container(x, chosen), shared + time.perf_counter() - start))
        return results

    def decode_level(self, level: CodedLevel) -> torch.Tensor:
        mosaic = decompress_image(self.network(level.quality), level.strings, level.layout.size)
        return level_from_mosaic(mosaic, level.layout, level.low, level.high)


@lru_cache(maxsize=8)
def _rate_model(path: str, _mtime: int) -> RateModel:
    return RateModel.load(Path(path))


@lru_cache(maxsize=8)
def _predictor(path: str, _mtime: int) -> ImportancePredictor:
    saved = read_state(path, f"importance predictor {path}")
    try:
        channels = saved["heads.0.0.weight"].shape[1] // 3
        levels = len({k.split(".")[1] for k in saved if k.startswith("heads.")})
        predictor = ImportancePredictor(channels, levels, saved["heads.0.0.weight"].shape[0])
        predictor.load_state_dict(saved)
    except (KeyError, RuntimeError) as err:
        raise FcmbenchError(f"{path} is not an MFIBA importance predictor: {str(err).splitlines()[0]}") from None
    return predictor.eval()


class MfibaElicCodec(MfibaCodec):
    name = "mfiba-elic"
    display_name = "MFIBA (ELIC)"
    anchor = ElicFeatCodec
    family = ElicFeatCodec.family
    base = ElicFeatCodec.base


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
    from fcmbench.core import registry

    codec = registry.methods.get(name)(options)
    if not isinstance(codec, MfibaCodec):
        raise FcmbenchError(f"{name} is not an MFIBA method: fit-rate-model takes mfiba, mfiba-elic or mfiba-tcm")
    return codec


class MfibaTcmCodec(MfibaCodec):
    name = "mfiba-tcm"
    display_name = "MFIBA (LIC-TCM)"
    anchor = TcmFeatCodec
    family = TcmFeatCodec.family
    base = TcmFeatCodec.base
    stream_version = TcmFeatCodec.stream_version
