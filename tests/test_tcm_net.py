"""LIC-TCM network: published layout, window attention, coding round trip, training that lowers the loss."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import SHARED, needs_shared
from fcmbench.models.tcm import TCMNet, WindowAttention
from fcmbench.zoo.checkpoints import load_weights, save_checkpoint, unpacked

REFERENCE = SHARED / "reference" / "checkpoints"
needs_reference = needs_shared("reference/checkpoints")
pytestmark = pytest.mark.usefixtures("one_thread")
# tiny widths; two blocks per stage so W-MSA and SW-MSA both run in every stage, two heads per Swin block
TINY = {"N": 8, "M": 24, "num_slices": 3, "head_dim": (4,) * 6, "hyper_channels": 16, "cc_widths": (16, 16),
        "atten_width": 16, "atten_head_dim": 8, "hyper_head_dim": 4}


def smooth_image(height: int, width: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 8, 8, generator=generator)
    return F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)


@needs_reference
@pytest.mark.parametrize("n", [64, 128])
def test_layout_matches_the_published_checkpoints(n):
    reference = json.loads((REFERENCE / f"tcm_N{n}.json").read_text())
    built = TCMNet(N=n, M=320)
    built.update(force=True)
    ours = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in built.state_dict().items()]
    assert {k: shape for k, shape, _ in ours} == {key: shape for key, shape, _ in reference["state_dict"]}
    assert ours == [tuple(entry) for entry in reference["state_dict"]]  # order and dtypes too
    assert sum(p.numel() for p in built.parameters()) == reference["param_count"]
    sizes = TCMNet.config_from_state_dict(built.state_dict())
    assert {k: sizes[k] for k in ("N", "M", "num_slices", "hyper_channels", "atten_width")} == {
        "N": n, "M": 320, "num_slices": 5, "hyper_channels": 192, "atten_width": 128}
    assert (list(sizes["config"]), list(sizes["head_dim"])) == ([2] * 6, [8, 16, 32, 32, 16, 8])


def test_sizes_read_back_from_weights_rebuild_the_same_network():
    built = TCMNet(config=(1, 2, 0, 2, 1, 3), max_support_slices=1, **TINY)
    rebuilt = TCMNet(**TCMNet.config_from_state_dict(built.state_dict()))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in built.state_dict().items()}
    rebuilt.load_state_dict(built.state_dict())


@pytest.mark.parametrize("shifted", [False, True])
def test_window_attention_matches_a_direct_computation(shifted):
    """Token by token: softmax over the keys of the same window (and, shifted, the same side of each wrap)."""
    torch.manual_seed(0)
    dim, head_dim, window, size = 8, 4, 4, 8
    attention = WindowAttention(dim, head_dim, window, shifted)
    with torch.no_grad():
        attention.relative_position_params.normal_()  # large, distinct biases: a wrong offset shows
    x = torch.randn(1, size, size, dim)
    half = window // 2 if shifted else 0
    rolled = torch.roll(x, shifts=(-half, -half), dims=(1, 2))[0]
    q, k, v = attention.embedding_layer(rolled).view(size, size, 3, dim // head_dim, head_dim).unbind(2)
    wrapped = [r >= size - half for r in range(size)]  # rows/columns that came around the edge
    out = torch.zeros(size, size, dim)
    for i in range(size):
        for j in range(size):
            keys = [(a, b) for a in range(size) for b in range(size)
                    if (a // window, b // window) == (i // window, j // window)
                    and wrapped[a] == wrapped[i] and wrapped[b] == wrapped[j]]
            for h in range(dim // head_dim):
                logits = torch.stack([
                    q[i, j, h] @ k[a, b, h] / math.sqrt(head_dim)
                    + attention.relative_position_params[h, i % window - a % window + window - 1,
                                                         j % window - b % window + window - 1]
                    for a, b in keys])
                values = torch.stack([v[a, b, h] for a, b in keys])
                out[i, j, h * head_dim:(h + 1) * head_dim] = logits.softmax(0) @ values
    expected = torch.roll(attention.linear(out), shifts=(half, half), dims=(0, 1))
    torch.testing.assert_close(attention(x)[0], expected, rtol=1e-5, atol=1e-5)


def test_forward_gives_an_image_and_finite_likelihoods():
    torch.manual_seed(0)
    out = TCMNet(**TINY)(torch.rand(1, 3, 128, 128))
    assert out["x_hat"].shape == (1, 3, 128, 128)
    assert out["likelihoods"]["y"].shape == (1, 24, 8, 8)
    assert out["likelihoods"]["z"].shape == (1, 16, 2, 2)
    for likelihoods in out["likelihoods"].values():
        assert torch.isfinite(likelihoods).all() and (likelihoods > 0).all()


def test_compress_decompress_round_trip():
    # 128 x 256 rather than 128 x 192: every side must be a multiple of pad_multiple (128), see the next test
    torch.manual_seed(0)
    network = TCMNet(**TINY).eval()
    network.update(force=True)
    x = torch.rand(1, 3, 128, 256)
    with torch.no_grad():
        coded = network.compress(x)
        assert tuple(coded["shape"]) == network.stream_shape(128, 256) == (2, 4)
        assert [len(s) for s in coded["strings"]] == [1, 1] and all(len(s[0]) > 0 for s in coded["strings"])
        first = network.decompress(coded["strings"], network.stream_shape(128, 256))["x_hat"]
        second = network.decompress(coded["strings"], coded["shape"])["x_hat"]
        # the decoder rebuilt the same y-hat as the encoder: eval-mode forward rounds the same way
        forward = network(x)["x_hat"].clamp(0, 1)
    assert first.shape == x.shape
    assert torch.equal(first, second)
    torch.testing.assert_close(first, forward, rtol=0, atol=1e-5)


def test_int8_checkpoints_hold_the_transformer_weights_as_int8_too(tmp_path):
    # left as float32, the Swin blocks' linear weights took 0.9 of a small LIC-TCM's 2.1 MB: they shrink too
    torch.manual_seed(0)
    network = TCMNet(**TINY).eval()
    save_checkpoint(network, tmp_path / "int8.pt", int8_weights=True)
    linear = [name for name, module in network.named_modules() if isinstance(module, torch.nn.Linear)]
    assert linear
    stored = torch.load(unpacked(tmp_path / "int8.pt"), weights_only=True)["state_dict"]
    assert all(stored[f"{name}.weight"].dtype == torch.int8 for name in linear)
    loaded = TCMNet(**TINY)
    load_weights(loaded, tmp_path / "int8.pt")
    for (name, before), after in zip(network.named_parameters(), loaded.parameters(), strict=True):
        assert torch.allclose(before, after, atol=before.abs().max().item() / 200), name


def test_inputs_must_be_padded():
    network = TCMNet(**TINY)
    with pytest.raises(ValueError, match="multiple of 128"):
        network(torch.rand(1, 3, 128, 192))
    with pytest.raises(ValueError, match="multiple of 128"):
        network.stream_shape(128, 192)
    with pytest.raises(ValueError, match="head width"):
        TCMNet(**{**TINY, "head_dim": (16,) * 6})


def test_training_lowers_the_rate_distortion_loss():
    torch.manual_seed(0)
    network = TCMNet(**TINY).train()
    x, lmbda = smooth_image(128, 128), 0.01
    # quantiles belong to the auxiliary loss, as in CompressAI training
    optimizer = torch.optim.Adam([p for n, p in network.named_parameters() if not n.endswith("quantiles")], lr=1e-3)
    losses = []
    for _ in range(20):
        out = network(x)
        bpp = sum(-torch.log2(lk).sum() for lk in out["likelihoods"].values()) / (128 * 128)
        loss = lmbda * 255**2 * F.mse_loss(out["x_hat"], x) + bpp
        optimizer.zero_grad()
        loss.backward()
        if not losses:  # every module takes part in the loss
            assert [n for n, p in network.named_parameters() if p.grad is None] == []
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < 0.5 * losses[0], losses
