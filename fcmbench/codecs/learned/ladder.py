"""What every learned codec with one checkpoint per quality shares, derived from one hook: ``checkpoint(q)``."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from fcmbench.core.codec import Codec, RatePoint


class QualityLadder(Codec):
    """Qualities 1..n, one checkpoint each. Its operating points are the qualities whose checkpoint exists (all of
    them when none does: the run then says which file is missing and how to train it)."""

    def checkpoint(self, quality: int) -> Path:
        raise NotImplementedError

    def network(self, quality: int) -> nn.Module:
        raise NotImplementedError

    def operating_points(self) -> list[RatePoint]:
        found = [p for p in self.rate_points() if self.checkpoint(int(p.value)).is_file()]
        return found or self.rate_points()

    def files(self, rate: RatePoint) -> list[Path]:
        return [self.checkpoint(int(rate.value))]

    def ensure_ready(self, rates: list[RatePoint]) -> None:
        for rate in rates:
            self.network(int(rate.value))
