"""Finding, loading and saving learned-codec checkpoints.

A checkpoint for method M, quality Q and task model T lives at ``ROOT/M/T/qQ.pt``; ROOT is ``--checkpoints``,
else ``$FCMBENCH_CHECKPOINTS``, else the checkpoints shipped in the package (for the embedded default).
Published checkpoints (a bare state dict, or one under ``state_dict`` or, as TA-MSF's training code saves them,
``model_state_dict``) load too: their sizes are read from the tensors and compressai renames its older
entropy-bottleneck keys.
"""

from __future__ import annotations

import io
import lzma
import os
import re
from functools import lru_cache
from pathlib import Path

import torch
from compressai.zoo.pretrained import load_pretrained
from torch import nn

from fcmbench.core.codec import CodecOptions
from fcmbench.core.errors import FcmbenchError

SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints"


def checkpoint_root(options: CodecOptions) -> Path:
    if options.checkpoints:
        return Path(options.checkpoints)
    return Path(os.environ.get("FCMBENCH_CHECKPOINTS", SHIPPED))


def checkpoint_path(method: str, quality: int, options: CodecOptions, scope: str | None = None) -> Path:
    """``scope`` is the task model the codec was trained for, or ``images`` for image codecs."""
    return checkpoint_root(options) / method / (scope or options.task_model or "any") / f"q{quality}.pt"


def build_model(method: str, channels: int, latent: int, levels: int = 4) -> nn.Module:
    from fcmbench.models.lmsfc import LMSFCContext, LMSFCNoContext

    if method == "lmsfc-nocm":
        return LMSFCNoContext(channels, latent, levels)
    return LMSFCContext(channels, latent, task_aware=method == "tamsf", levels=levels)


def require(path: Path, what: str, command: str, options: CodecOptions, after: str = "") -> Path:
    """``path`` if it is a file, else the one message for every missing learned file: what is missing, where it
    was looked for, and the command that makes it (``command`` without its ``--out``)."""
    if not path.is_file():
        raise FcmbenchError(f"no {what}: expected {path}. Make it with `fcmbench {command} --out "
                            f"{checkpoint_root(options)}`{after}, or pass --checkpoints DIR")
    return path


def train_command(method: str, quality: int, options: CodecOptions, scope: str | None = None) -> str:
    target = "--dataset DATASET" if scope == "images" else f"--task-model {options.task_model} --dataset DATASET"
    return f"train {method} --quality {quality} {target}"


def load_checkpoint(method: str, quality: int, options: CodecOptions) -> nn.Module:
    path = require(checkpoint_path(method, quality, options),
                   f"{method} checkpoint for quality {quality} and task model {options.task_model}",
                   train_command(method, quality, options), options)
    return _load(str(path), path.stat().st_mtime_ns, method, options.device)


@lru_cache(maxsize=16)
def _load(path: str, _mtime: int, method: str, device: str) -> nn.Module:
    state = read_state(path, f"checkpoint {path}")
    if "g_a.p2Encoder.0.conv1.weight" not in state:
        raise FcmbenchError(f"checkpoint {path} is not an L-MSFC/TA-MSF checkpoint (no g_a.p2Encoder weights)")
    latent, channels = state["g_a.p2Encoder.0.conv1.weight"].shape[:2]
    has_context = "context_prediction.weight" in state
    if has_context == (method == "lmsfc-nocm"):
        # the official train.py builds its "no context model" network from the context-model class
        other = "lmsfc" if has_context else "lmsfc-nocm"
        raise FcmbenchError(f"checkpoint {path} {'has' if has_context else 'lacks'} a context model, so it is not "
                            f"a {method} network: it loads as method {other} (put it at "
                            f"{checkpoint_root_of(Path(path), method, other)})")
    levels = 5 if "g_a.p6Encoder.0.weight" in state else 4
    model = build_model(method, int(channels), int(latent), levels)
    try:
        model.load_state_dict(with_derived_buffers(model, state))
    except RuntimeError as err:
        raise FcmbenchError(f"checkpoint {path} does not fit {method}: {str(err).splitlines()[0]}") from None
    model.update(force=True)
    return model.eval().to(device)


def checkpoint_root_of(path: Path, method: str, other: str) -> Path:
    """Where the checkpoint at ``ROOT/method/T/qQ.pt`` goes to be found as method ``other``."""
    return path.parents[2] / other / path.parent.name / path.name if path.parent.parent.name == method else path


def read_state(path: Path | str, label: str) -> dict:
    """The weights a checkpoint file holds, under our names and dequantized: ours (``state_dict`` + info),
    a published one (a bare state dict or one under ``state_dict``), or a compact int8 one."""
    try:
        saved = torch.load(unpacked(Path(path)), map_location="cpu", weights_only=True)
    except Exception as err:
        raise FcmbenchError(f"{label} is not a readable checkpoint: {err}") from None
    state = saved.get("state_dict", saved.get("model_state_dict", saved)) if isinstance(saved, dict) else None
    if not isinstance(state, dict):
        raise FcmbenchError(f"{label} holds no state dict")
    if "int8_scales" in saved:
        state = dequantized(state, saved["int8_scales"])
    return published_names(state)


XZ_MAGIC = b"\xfd7zXZ\x00"


def unpacked(path: Path) -> Path | io.BytesIO:
    """Compact checkpoints are xz-compressed torch files (int8 kernels shrink by another quarter)."""
    with open(path, "rb") as handle:
        if handle.read(len(XZ_MAGIC)) != XZ_MAGIC:
            return path
    return io.BytesIO(lzma.decompress(path.read_bytes()))


def published_names(state: dict) -> dict:
    """The one place where published checkpoints' names are mapped to ours. CompressAI's own renames first (a
    ``module.`` prefix of DataParallel, its older entropy-bottleneck names); TA-MSF spells the encoder stages
    ``p2_encoder``; L-MSFC's and LIC-TCM's names are ours already; the ELIC re-implementation's are mapped to
    CompressAI's ``Elic2022Chandelier``."""
    renamed = {}
    for key, value in load_pretrained(state).items():
        for level in ("p2", "p3", "p4", "p5"):
            key = key.replace(f"g_a.{level}_encoder.", f"g_a.{level}Encoder.")
        renamed[key] = value
    return elic_chandelier_names(renamed) if "cc_transforms.0.0.weight" in renamed else renamed


ELIC_CHANDELIER_PREFIXES = [  # the re-implementation's module -> its place in CompressAI's latent codecs
    (re.compile(r"^(h_a|h_s|entropy_bottleneck)\."), lambda m: f"latent_codec.hyper.{m[1]}."),
    (re.compile(r"^cc_transforms\.(\d+)\."), lambda m: f"latent_codec.y.channel_context.y{int(m[1]) + 1}."),
    (re.compile(r"^context_prediction\.(\d+)\."), lambda m: f"latent_codec.y.latent_codec.y{m[1]}.context_prediction."),
    (re.compile(r"^ParamAggregation\.(\d+)\."), lambda m: f"latent_codec.y.latent_codec.y{m[1]}.entropy_parameters."),
]


def elic_chandelier_names(state: dict) -> dict:
    """ELiC-ReImplemetation names -> ``Elic2022Chandelier``'s. Its one Gaussian conditional serves every
    channel group; its checkerboard masks are left for the model to rebuild."""
    groups = {k.split(".")[1] for k in state if k.startswith("context_prediction.")}
    out = {}
    for key, value in state.items():
        if key.endswith(".mask"):
            continue
        if key.startswith("gaussian_conditional."):
            for g in groups:
                out[f"latent_codec.y.latent_codec.y{g}.y.{key}"] = value
            continue
        for pattern, target in ELIC_CHANDELIER_PREFIXES:
            key = pattern.sub(target, key, count=1)
        out[key] = value
    return out


def save_checkpoint(model: nn.Module, path: Path, int8_weights: bool = False, **info) -> None:
    """Atomic save of a codec ready to code (``update()`` done), with what built it. ``int8_weights`` stores
    convolution kernels and linear weights as int8 with one scale per output channel (4x smaller; the shipped
    embedded-default checkpoints, xz-compressed): the dequantized weights are the model, on the encoder's side
    as on the decoder's."""
    model.update(force=True)
    state = model.state_dict()
    if int8_weights:
        state, info["int8_scales"] = quantized(state)
    write_atomically({"state_dict": state, **info}, path, compress=int8_weights)


def write_atomically(content: dict, path: Path, compress: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(content, buffer)
    data = lzma.compress(buffer.getvalue(), preset=9) if compress else buffer.getvalue()
    partial = path.with_suffix(f".{os.getpid()}.partial")
    partial.write_bytes(data)
    partial.replace(path)


# buffers the model rebuilds itself: CDF tables (``update()`` on load) and the context model's mask
DERIVED_BUFFERS = ("._quantized_cdf", "._offset", "._cdf_length", ".mask")


def with_derived_buffers(model: nn.Module, state: dict) -> dict:
    """A compact checkpoint leaves out what ``update()`` recomputes: take those from the model itself."""
    own = model.state_dict()
    return {**{k: v for k, v in own.items() if k.endswith(DERIVED_BUFFERS) and k not in state}, **state}


def quantized(state: dict) -> tuple[dict, dict]:
    """Symmetric per-output-channel int8 for every convolution kernel and linear weight (as float32, the
    Swin blocks' linear weights took 0.9 of a small LIC-TCM's 2.1 MB); buffers the model rebuilds itself are
    left out; everything else stays as it is."""
    out = {k: v for k, v in state.items() if not k.endswith(DERIVED_BUFFERS)}
    scales = {}
    for key, value in out.items():
        if key.endswith(".weight") and value.dim() in (2, 4) and value.is_floating_point():
            scale = value.abs().flatten(1).amax(dim=1).clamp_min(1e-12) / 127
            out[key] = torch.round(value / per_channel(scale, value)).to(torch.int8)
            scales[key] = scale.float()
    return out, scales


def per_channel(scale: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """One scale per output channel, shaped to broadcast over ``weight``."""
    return scale.reshape(-1, *[1] * (weight.dim() - 1))


def dequantized(state: dict, scales: dict) -> dict:
    out = dict(state)
    for key, scale in scales.items():
        out[key] = state[key].float() * per_channel(scale, state[key])
    return out


def load_weights(model: nn.Module, path: Path) -> None:
    """Start training from another checkpoint's weights (a neighbouring quality, say)."""
    state = read_state(path, f"--init {path}")
    try:
        model.load_state_dict(with_derived_buffers(model, state))
    except RuntimeError as err:
        raise FcmbenchError(f"--init {path} does not fit this network: {str(err).splitlines()[0]}") from None
