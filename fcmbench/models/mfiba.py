"""MFIBA's importance predictor (ours: the paper describes its inputs and output, not its layers)."""

from __future__ import annotations

import torch
from torch import nn


def level_statistics(levels: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per level ``[B, 3C]``: channel mean, standard deviation and maximum, log-compressed."""
    out = []
    for t in levels:
        stats = torch.cat([t.mean((2, 3)), t.flatten(2).std(2), t.amax((2, 3))], 1)
        out.append(torch.sign(stats) * torch.log1p(stats.abs()))
    return out


class ImportancePredictor(nn.Module):
    """Ours: level statistics -> one MLP score per level -> softmax weights that sum to 1."""

    def __init__(self, channels: int, levels: int, hidden: int = 32) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Sequential(nn.Linear(3 * channels, hidden), nn.ReLU(), nn.Linear(hidden, 1))
                                   for _ in range(levels))

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        scores = [head(s) for head, s in zip(self.heads, level_statistics(levels), strict=True)]
        return torch.softmax(torch.cat(scores, 1), 1)
