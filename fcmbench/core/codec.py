"""The one codec interface shared by feature codecs, image codecs and anchors."""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

import torch

from fcmbench.core.bitstream import VERSION, Container
from fcmbench.core.errors import FcmbenchError
from fcmbench.core.featureset import FeatureSet


@dataclass(frozen=True)
class RatePoint:
    """One operating point; ``label`` is stable and is what results are keyed by."""

    label: str
    value: float


@dataclass(frozen=True)
class NoSettings:
    """A codec without settings of its own."""


@dataclass
class CodecOptions:
    """What the runner knows and a codec may need. ``settings``: per method, the values of its own settings
    (``--codec-opt METHOD.KEY=VALUE``), as strings from the CLI or typed values from an experiment file."""

    device: str = "cpu"
    task_model: str | None = None
    checkpoints: Path | None = None
    settings: Mapping[str, Mapping[str, object]] = field(default_factory=dict)


class Codec(ABC):
    """Encode to real bytes, decode from those bytes alone. Subclass :class:`FeatureCodec` or :class:`ImageCodec`.

    ``Settings``: a frozen dataclass of the codec's own options (encoder preset, coding order, ...), set from the
    CLI by ``--codec-opt METHOD.KEY=VALUE`` and found in ``self.settings``; its ``__post_init__`` may refuse a
    value with ``ValueError("KEY=VALUE: what to give")``. ``trainer``: for a trainable codec,
    the ``"module:function"`` that ``fcmbench train`` calls with a :class:`~fcmbench.core.training.TrainRequest`.
    """

    name: ClassVar[str]
    display_name: ClassVar[str | None] = None
    trainer: ClassVar[str | None] = None
    stream_version: ClassVar[int] = VERSION  # bumped when the codec's streams change meaning
    Settings: ClassVar[type] = NoSettings

    def __init__(self, options: CodecOptions | None = None) -> None:
        self.options = options or CodecOptions()
        self.settings = settings_of(self.name, self.Settings, self.options.settings.get(self.name, {}))

    @abstractmethod
    def rate_points(self) -> list[RatePoint]:
        """The points this instance runs by default (for its task model and checkpoints), lowest rate first."""

    def parse_rate(self, label: str) -> RatePoint | None:
        """The rate point a label names, or None (codecs may accept labels beyond their defaults: ``qp30``)."""
        return next((p for p in self.rate_points() if p.label == label), None)

    @abstractmethod
    def encode(self, x: Any, rate: RatePoint) -> bytes: ...

    @abstractmethod
    def decode(self, data: bytes) -> Any: ...

    def encode_batch(self, x: Any, rates: list[RatePoint]) -> list[tuple[bytes, float]]:
        """Encode at several rate points; returns (bytes, seconds) each. Slow external encoders run these
        concurrently."""
        results = []
        for rate in rates:
            start = time.perf_counter()
            data = self.encode(x, rate)
            results.append((data, time.perf_counter() - start))
        return results

    def decode_timed(self, data: bytes) -> tuple[Any, float]:
        """Decode, and the seconds it took (a codec that reuses parts decoded for another method charges what
        decoding them took)."""
        start = time.perf_counter()
        decoded = self.decode(data)
        return decoded, time.perf_counter() - start

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
        ``describe()`` (encoder, version and settings); settings changed from their defaults are part of it."""
        files = self.files(rate)
        if not files:
            return self.describe()
        digests = [hashlib.sha256(f.read_bytes()).hexdigest()[:16] if f.is_file() else "missing" for f in files]
        changed = [f"{f.name}={getattr(self.settings, f.name)}" for f in fields(self.settings)
                   if getattr(self.settings, f.name) != f.default]
        return " ".join([self.label(), *digests, *changed])

    def bytes_per_level(self, data: bytes) -> dict[str, int]:
        """Bytes per container segment (levels, for most feature codecs)."""
        return Container.from_bytes(data, self.name, self.stream_version).bytes_per_segment()

    def stream_info(self, data: bytes) -> dict:
        """Choices the encoder made that results should record (e.g. MFIBA's per-level qualities)."""
        return {}

    @classmethod
    def label(cls) -> str:
        return cls.display_name or cls.name


class FeatureCodec(Codec):
    """Codes the task network's front features. A level the network derives from another (P6 by max-pool of P5)
    is named in ``FeatureSet.derived``; a codec may leave it out of the stream and rebuild it."""

    @abstractmethod
    def encode(self, x: FeatureSet, rate: RatePoint) -> bytes: ...

    @abstractmethod
    def decode(self, data: bytes) -> FeatureSet: ...


class ImageCodec(Codec):
    """Codes the image, before the task network's front: a float image ``[3, H, W]`` in [0, 1] in and out."""

    @abstractmethod
    def encode(self, x: torch.Tensor, rate: RatePoint) -> bytes: ...

    @abstractmethod
    def decode(self, data: bytes) -> torch.Tensor: ...


def settings_of(method: str, settings_type: type, values: Mapping[str, object]) -> Any:
    """The codec's settings dataclass from ``{key: value}``; an unknown key or a bad value is one clear error."""
    hints = get_type_hints(settings_type)
    known = [f.name for f in fields(settings_type)]
    for key in values:
        if key not in known:
            offer = f"its settings: {', '.join(known)}" if known else "it has no settings"
            raise FcmbenchError(f"--codec-opt {method}.{key}: {method} has no setting {key!r}; {offer}")
    typed_values = {key: typed(f"{method}.{key}", hints[key], value) for key, value in values.items()}
    try:
        return settings_type(**typed_values)
    except ValueError as err:  # the dataclass's own checks (__post_init__)
        raise FcmbenchError(f"--codec-opt {method}.{err}") from None


def typed(where: str, hint: Any, value: object) -> object:
    """``value`` (a string from the CLI, or a TOML value) as the setting's declared type."""
    options = [arg for arg in get_args(hint) if arg is not type(None)] if get_origin(hint) in (Union, UnionType) \
        else [hint]
    kind = options[0]
    if get_origin(kind) is Literal:
        for choice in get_args(kind):
            if str(value) == str(choice):
                return choice
        raise FcmbenchError(f"--codec-opt {where}={value}: use one of {', '.join(map(str, get_args(kind)))}")
    if kind is bool:
        words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if str(value).lower() not in words:
            raise FcmbenchError(f"--codec-opt {where}={value}: use true or false")
        return words[str(value).lower()]
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise FcmbenchError(f"--codec-opt {where}={value}: not a valid {kind.__name__}") from None
