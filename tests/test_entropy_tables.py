"""The tabled Gaussian conditional writes and reads CompressAI's strings, with tables made once."""

from __future__ import annotations

import pytest
import torch
from compressai.entropy_models import GaussianConditional
from compressai.models.google import get_scale_table

from fcmbench.entropy.tables import TabledGaussianConditional, with_tabled_conditionals
from fcmbench.models.elic import build_elic
from fcmbench.models.tcm import build_tcm


def conditionals(seed: int = 0) -> tuple[GaussianConditional, TabledGaussianConditional, torch.Tensor, torch.Tensor,
                                          torch.Tensor]:
    plain, tabled = GaussianConditional(None), TabledGaussianConditional(None)
    for model in (plain, tabled):
        model.update_scale_table(get_scale_table())
    generator = torch.Generator().manual_seed(seed)
    scales = torch.rand(2, 6, 5, 7, generator=generator) * 40 + 0.05
    means = torch.randn(2, 6, 5, 7, generator=generator) * 3
    y = means + torch.randn(2, 6, 5, 7, generator=generator) * scales
    return plain, tabled, y, means, plain.build_indexes(scales)


def test_the_strings_and_values_are_compressais() -> None:
    plain, tabled, y, means, indexes = conditionals()
    strings = tabled.compress(y, indexes, means)
    assert strings == plain.compress(y, indexes, means)
    assert torch.equal(tabled.decompress(strings, indexes, means=means),
                       plain.decompress(strings, indexes, means=means))
    assert torch.equal(tabled.decompress(strings, indexes, means=means), torch.round(y - means) + means)


def test_the_tables_are_made_again_when_the_weights_or_scales_change() -> None:
    plain, tabled, y, means, indexes = conditionals()
    first = tabled.coding_tables()
    assert tabled.coding_tables() is first  # kept between calls
    tabled.update_scale_table(get_scale_table(0.2, 64, 32), force=True)
    assert tabled.coding_tables() is not first
    assert len(tabled.coding_tables()[1]) == 32
    network, other = build_tcm(8, 16), build_tcm(8, 16)
    for model in (network, other):
        model.update(force=True)
    before = network.gaussian_conditional.coding_tables()
    network.load_state_dict(other.state_dict())
    assert network.gaussian_conditional.tables is None
    assert network.gaussian_conditional.coding_tables() == before  # same default tables, made anew


def test_uninitialised_tables_are_an_error() -> None:
    with pytest.raises(ValueError, match="update"):
        TabledGaussianConditional(None).coding_tables()


def test_the_networks_code_with_tabled_conditionals() -> None:
    for network in (build_elic(16, 40), build_tcm(8, 16), with_tabled_conditionals(torch.nn.Sequential(
            GaussianConditional(None)))):
        kinds = {type(m) for m in network.modules() if isinstance(m, GaussianConditional)}
        assert kinds == {TabledGaussianConditional}
