"""What every learned codec with one checkpoint per quality shares, derived from one hook: ``checkpoint(q)``."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from torch import nn

from fcmbench.core.codec import RatePoint


class QualityLadder:
    """Qualities 1..n (``lambdas``: quality -> training λ), one checkpoint each; mixed into a codec before its
    :class:`~fcmbench.core.codec.FeatureCodec` or :class:`~fcmbench.core.codec.ImageCodec` base. Its rate points
    are the qualities whose checkpoint exists (all of them when none does: the run then says which file is missing
    and how to train it)."""

    lambdas: ClassVar[dict[int, float]]

    def checkpoint(self, quality: int) -> Path:
        raise NotImplementedError

    def network(self, quality: int) -> nn.Module:
        raise NotImplementedError

    def rate_points(self) -> list[RatePoint]:
        every = [RatePoint(f"q{q}", q) for q in self.lambdas]
        return [p for p in every if self.checkpoint(int(p.value)).is_file()] or every

    def files(self, rate: RatePoint) -> list[Path]:
        return [self.checkpoint(int(rate.value))]

    def ensure_ready(self, rates: list[RatePoint]) -> None:
        for rate in rates:
            self.network(int(rate.value))
