"""FeatureSet: the multi-scale features handed from a task model's front to its back."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import torch


@dataclass
class FeatureSet(Mapping[str, torch.Tensor]):
    """Ordered level name -> tensor ``[C, H, W]`` plus the sizes the back and bpp need.

    ``original_size`` is the image size before any resizing (bpp counts its pixels);
    ``input_size`` is the size of the image the network saw (after resizing, before padding);
    ``derived``: levels the task network computes from another (``{"pool": "3"}``: P6 by max-pool of P5), which a
    codec may leave out of its stream and rebuild.
    """

    levels: dict[str, torch.Tensor]
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    derived: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, tensor in self.levels.items():
            if tensor.dim() != 3:
                raise ValueError(f"level {name!r} must be [C, H, W], got shape {tuple(tensor.shape)}")

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.levels[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.levels)

    def __len__(self) -> int:
        return len(self.levels)

    @property
    def original_pixels(self) -> int:
        return self.original_size[0] * self.original_size[1]

    def replace(self, levels: dict[str, torch.Tensor]) -> FeatureSet:
        """The same sizes with other level tensors (e.g. a codec's reconstruction)."""
        return FeatureSet(dict(levels), self.original_size, self.input_size, dict(self.derived))

    def shapes(self) -> dict[str, tuple[int, int, int]]:
        return {name: tuple(t.shape) for name, t in self.levels.items()}
