"""What ``fcmbench train`` hands a codec's trainer. A trainable codec names its trainer (``Codec.trainer``, a
``"module:function"`` taking a :class:`TrainRequest` and returning :class:`Trained`), so a plugin's codec trains
through the same command as the built-ins."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


@dataclass
class TrainRequest:
    """Every option of ``fcmbench train``; a trainer uses those its family needs."""

    method: str
    quality: int | None = None
    task_model: str | None = None
    weights: str | None = None
    dataset: str | None = None
    image_folder: Path | None = None
    data_root: Path | None = None
    split_file: Path | None = None
    val_split_file: Path | None = None
    images: int | None = None
    steps: int = 2000
    lr: float = 1e-4
    lmbda: float | None = None
    latent: int | None = None
    width: int | None = None
    batch_size: int = 8
    init: Path | None = None
    int8_weights: bool = False
    no_task_loss: bool = False
    out: Path | None = None
    cache: Path | None = None
    threads: int | None = None
    fit_images: int = 40  # MFIBA: training images its rate model is measured on
    pseudo_score: float = 0.5  # MFIBA on unlabelled images: the score that makes a detection ground truth
    predictor_steps: int | None = None  # MFIBA: its importance predictor's steps (default: steps)

    @classmethod
    def from_options(cls, options: Any) -> TrainRequest:
        """From parsed arguments (or any object with these attributes); absent ones keep their defaults."""
        return cls(**{f.name: getattr(options, f.name) for f in fields(cls) if hasattr(options, f.name)})


@dataclass
class Trained:
    path: Path  # the checkpoint (or fitted model) written
    detail: str = ""  # e.g. which step's weights were kept
