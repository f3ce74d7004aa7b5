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
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import torch

from fcmbench.codecs.learned.elic import ElicFeatCodec
from fcmbench.codecs.learned.image_codec import IMAGE_LAMBDAS
from fcmbench.codecs.learned.mosaic import CodedLevel, TiledFeatureCodec
from fcmbench.codecs.learned.tcm import TcmFeatCodec
from fcmbench.core.codec import RatePoint
from fcmbench.core.errors import FcmbenchError
from fcmbench.core.featureset import FeatureSet
from fcmbench.models.mfiba import ImportancePredictor
from fcmbench.zoo.checkpoints import checkpoint_root, read_state, require

REFERENCE_LAMBDAS = (1100, 1000, 900, 600, 500, 400)


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


class MfibaCodec(TiledFeatureCodec):
    """MFIBA on a tiled base codec (``anchor`` gives the network family and the base checkpoints)."""

    anchor: ClassVar[type[TiledFeatureCodec]]
    trainer = "fcmbench.training.mfiba:train"  # the importance predictor; its rate model: fit-rate-model

    def parse_rate(self, label: str) -> RatePoint | None:
        """Any ``lamX``: the rate model allocates bits for any λ."""
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

    def rate_points(self) -> list[RatePoint]:
        """The λ the fitted rate model proposes for its task model; the reference's λ without one."""
        try:
            lambdas = self.rate_model().lambdas
        except FcmbenchError:
            lambdas = []
        return [RatePoint(f"lam{lam:g}", lam) for lam in lambdas or REFERENCE_LAMBDAS]

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
        rate point's encode time is that shared work, as long as it took when done, plus its own choice)."""
        model = self.rate_model()
        if list(x) != model.levels:
            raise FcmbenchError(f"the {self.name} rate model was fitted for levels {', '.join(model.levels)}; these "
                                f"features have {', '.join(x)}: fit one for this task model")
        timed = {name: {q: self.timed_level(name, t, q) for q in model.qualities} for name, t in x.items()}
        coded = {name: {q: level for q, (level, _) in levels.items()} for name, levels in timed.items()}
        start = time.perf_counter()
        weights = self.importance(x)
        shared = time.perf_counter() - start + sum(s for levels in timed.values() for _, s in levels.values())
        pixels = [next(iter(c.values())).layout.pixels for c in coded.values()]
        results = []
        for rate in rates:
            start = time.perf_counter()
            targets = target_rates(weights, model.a, model.b, rate.value, pixels)
            chosen = [coded[name][nearest_quality(r, coded[name])] for name, r in zip(x, targets, strict=True)]
            results.append((self.container(x, chosen), shared + time.perf_counter() - start))
        return results


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


class MfibaTcmCodec(MfibaCodec):
    name = "mfiba-tcm"
    display_name = "MFIBA (LIC-TCM)"
    anchor = TcmFeatCodec
    family = TcmFeatCodec.family
    base = TcmFeatCodec.base
    stream_version = TcmFeatCodec.stream_version
