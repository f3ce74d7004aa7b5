"""The one codec interface shared by feature codecs, image codecs and anchors."""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import torch

from fcmbench.core.bitstream import VERSION, Container
from fcmbench.core.featureset import FeatureSet


@dataclass(frozen=True)
class RatePoint:
    """One operating point; ``label`` is stable and is what results are keyed by."""

    label: str
    value: float


@dataclass
class CodecOptions:
    """What the runner knows and a codec may need."""

    device: str = "cpu"
    task_model: str | None = None
    checkpoints: Path | None = None
    extra: dict = field(default_factory=dict)


class Codec(ABC):
    """Encode to real bytes, decode from those bytes alone.

    ``kind == "feature"`` codecs take and return a :class:`FeatureSet`; ``kind == "image"`` codecs take
    a float image ``[3, H, W]`` in [0, 1] and return one (they run before the task model's front).
    A level the task network derives from another (P6 by max-pool of P5) is named in ``FeatureSet.meta["derived"]``;
    a codec may leave it out of the stream and rebuild it. ``trainer``: for a trainable codec, the
    ``"module:function"`` that ``fcmbench train`` calls with a :class:`~fcmbench.core.training.TrainRequest`.
    """

    name: ClassVar[str]
    kind: ClassVar[Literal["feature", "image"]] = "feature"
    display_name: ClassVar[str | None] = None
    trainer: ClassVar[str | None] = None
    stream_version: ClassVar[int] = VERSION  # bumped when the codec's streams change meaning

    def __init__(self, options: CodecOptions | None = None) -> None:
        self.options = options or CodecOptions()

    @classmethod
    @abstractmethod
    def rate_points(cls) -> list[RatePoint]:
        """The default operating points, from lowest to highest rate."""

    @classmethod
    def rate_point(cls, label: str) -> RatePoint | None:
        """The rate point a label names (codecs may accept labels beyond their defaults, e.g. ``qp30``)."""
        return next((p for p in cls.rate_points() if p.label == label), None)

    def operating_points(self) -> list[RatePoint]:
        """The default points for this instance (e.g. anchors tuned to the task model); see ``rate_points``."""
        return self.rate_points()

    @abstractmethod
    def encode(self, x: FeatureSet | torch.Tensor, rate: RatePoint) -> bytes: ...

    def encode_batch(self, x: FeatureSet | torch.Tensor, rates: list[RatePoint]) -> list[tuple[bytes, float]]:
        """Encode at several rate points; returns (bytes, seconds) each. Slow external encoders run these
        concurrently."""
        results = []
        for rate in rates:
            start = time.perf_counter()
            data = self.encode(x, rate)
            results.append((data, time.perf_counter() - start))
        return results

    def ensure_ready(self, rates: list[RatePoint]) -> None:
        """Raise FcmbenchError if something the codec needs at these rates (checkpoints, binaries) is missing."""
        return None

    def describe(self) -> str:
        """What produced the bits (encoder name and version for anchors), for the report."""
        return self.label()

    def files(self, rate: RatePoint) -> list[Path]:
        """The files this rate point's bits depend on (checkpoints, fitted models)."""
        return []

    def identity(self, rate: RatePoint) -> str:
        """What makes this rate point's bits: results stored under another identity are stale. The digests
        of the files when there are any (so adding a quality does not invalidate the others), else
        ``describe()`` (encoder, version and settings)."""
        files = self.files(rate)
        if not files:
            return self.describe()
        digests = [hashlib.sha256(f.read_bytes()).hexdigest()[:16] if f.is_file() else "missing" for f in files]
        return f"{self.label()} {' '.join(digests)}"

    @abstractmethod
    def decode(self, data: bytes) -> FeatureSet | torch.Tensor: ...

    def bytes_per_level(self, data: bytes) -> dict[str, int]:
        """Bytes per container segment (levels, for most feature codecs)."""
        return Container.from_bytes(data, self.name, self.stream_version).bytes_per_segment()

    def stream_info(self, data: bytes) -> dict:
        """Choices the encoder made that results should record (e.g. MFIBA's per-level qualities)."""
        return {}

    @classmethod
    def label(cls) -> str:
        return cls.display_name or cls.name
