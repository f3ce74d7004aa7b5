"""``fcmbench train``: train a learned feature codec on the features of a task model's front.

Loss = λ·Σ_levels 0.2·MSE + bpp (bits over original image pixels); TA-MSF adds the task network's own
training losses computed on the reconstructed features (after a warm-up without them). Adam for the
networks, a separate Adam for the entropy-bottleneck quantiles, gradient clipping at 1.0, learning rate halved
when the validation loss plateaus, a resumable checkpoint after every validation, and ``update()`` before the
final save.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from compressai.optimizers import net_aux_optimizer, net_optimizer
from rich.progress import Progress
from torch import nn

from fcmbench.codecs.learned.image_codec import IMAGE_LAMBDAS, padded
from fcmbench.codecs.learned.lmsfc import LAMBDAS, coded_levels
from fcmbench.core.errors import FcmbenchError
from fcmbench.core.featureset import FeatureSet
from fcmbench.core.training import TrainRequest
from fcmbench.models.lmsfc import latent_width, pad_levels, unpad_levels
from fcmbench.zoo.checkpoints import build_model, load_weights, save_checkpoint
from fcmbench.zoo.networks import ImageNetwork

LEVEL_WEIGHT = 0.2


@dataclass
class TrainConfig:
    method: str
    quality: int
    out: Path
    steps: int = 2000
    latent: int | None = None
    lr: float = 1e-4
    validate_every: int = 200
    seed: int = 123
    task_loss_weight: float = 0.1
    task_warmup: int = 0  # steps before the task loss joins (TA-MSF)
    batch_size: int = 8  # images per step, drawn among images whose features have the same sizes
    lmbda: float | None = None  # overrides the reference λ of the quality (recorded in the checkpoint)
    init: Path | None = None  # start from these weights (a neighbouring quality) instead of at random
    int8_weights: bool = False  # store convolution kernels as int8 (the shipped embedded-default checkpoints)
    width: int | None = None  # image networks: main width N (default: the reference's)


def rate_distortion(model: torch.nn.Module, batch: list[FeatureSet], lam: float) -> tuple[torch.Tensor, dict]:
    """One forward pass over images whose features have the same sizes: loss, and its parts for logging;
    ``recon`` holds the reconstructed levels of the first image."""
    names, coded = list(batch[0]), coded_levels(batch[0])
    levels = [torch.stack([f[n] for f in batch]) for n in coded]
    out = model(pad_levels(levels))
    recon = unpad_levels(out["x_hat"], tuple(levels[0].shape[-2:]))
    if len(names) > len(coded):  # a pooled last level (P6) is derived on both sides
        recon.append(F.max_pool2d(recon[-1], kernel_size=1, stride=2))
        levels.append(torch.stack([f[names[-1]] for f in batch]))
    distortion = sum(LEVEL_WEIGHT * F.mse_loss(r, t) for r, t in zip(recon, levels, strict=True))
    pixels = sum(f.original_pixels for f in batch)
    bpp = sum(-torch.log2(lk).sum() for lk in out["likelihoods"].values()) / pixels
    first = {n: r[:1] for n, r in zip(names, recon, strict=False)}
    return lam * distortion + bpp, {"bpp": bpp, "mse": distortion, "recon": first}


def train_codec(config: TrainConfig, train: list[FeatureSet], val: list[FeatureSet], task=None,
                targets: list[dict] | None = None) -> dict:
    """Train and save ``out/METHOD/TASK/qQ.pt`` (``config.out`` is the full file path here)."""
    torch.manual_seed(config.seed)
    # features made under inference_mode cannot take part in autograd: plain copies
    train = [f.replace({k: v.clone() for k, v in f.items()}) for f in train]
    val = [f.replace({k: v.clone() for k, v in f.items()}) for f in val]
    channels = train[0][next(iter(train[0]))].shape[0]
    latent = config.latent or latent_width(config.quality, context_model=config.method != "lmsfc-nocm")
    model = build_model(config.method, channels, latent, len(coded_levels(train[0])))
    if config.init:
        load_weights(model, config.init)
    lam = config.lmbda or LAMBDAS[config.quality]
    buckets = same_size_groups(train)

    def step_loss(step: int, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        index = int(torch.randint(len(train), (1,), generator=generator))
        batch = batch_with(index, buckets, config.batch_size, generator)
        loss, parts = rate_distortion(model, [train[i] for i in batch], lam)
        if task is not None and targets is not None and step >= config.task_warmup:
            loss = loss + config.task_loss_weight * task.training_loss(train[index], parts["recon"], targets[index])
        return loss, parts

    def val_loss() -> float:
        return sum(rate_distortion(model, [f], lam)[0].item() for f in val) / max(1, len(val))

    history = fit(model, config, step_loss, val_loss)
    save_checkpoint(model.eval(), config.out, int8_weights=config.int8_weights, method=config.method,
                    quality=config.quality, lam=lam, channels=channels, latent=latent, steps=config.steps,
                    history=history, init=str(config.init) if config.init else None)
    return {"history": history, "path": config.out}


RESUME_FORMAT = 2  # 2: the optimisers are CompressAI's (parameters in name order)


def optimizers_of(model: nn.Module, lr: float) -> dict[str, torch.optim.Optimizer]:
    """CompressAI's split: Adam at ``lr`` for the network ("net"), Adam at 1e-3 for the entropy bottlenecks'
    quantiles ("aux", when the model has any)."""
    conf = {"net": {"type": "Adam", "lr": lr}, "aux": {"type": "Adam", "lr": 1e-3}}
    has_aux = any(name.endswith(".quantiles") for name, _ in model.named_parameters())
    return net_aux_optimizer(model, conf) if has_aux else net_optimizer(model, conf)


def fit(model: nn.Module, config: TrainConfig, step_loss: Callable, val_loss: Callable) -> list[dict]:
    """The training loop every learned method shares: Adam, a separate Adam for entropy-bottleneck quantiles,
    gradient clipping at 1.0, learning rate halved on a validation plateau, and a resumable state after every
    validation (``OUT.resume``, removed when done; random states included, so a resumed run ends where an
    uninterrupted one does). The model ends with the weights of its best validation: a late loss spike (seen
    at high learning rates) does not become the checkpoint. ``step_loss(step, generator)`` gives (loss, parts
    with ``bpp``); ``val_loss()`` runs without gradients in eval mode. ``best`` in a history entry: that
    validation beat all before it (the last such one is kept)."""
    main = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    optimizers = optimizers_of(model, config.lr)
    optimizer, aux_optimizer = optimizers["net"], optimizers.get("aux")
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=3)
    config.out.parent.mkdir(parents=True, exist_ok=True)
    resume = Path(str(config.out) + ".resume")
    stage = stage_of(config)
    step, best, history, best_state = 0, math.inf, [], None
    generator = torch.Generator().manual_seed(config.seed)
    if resume.is_file():
        state = torch.load(resume, map_location="cpu", weights_only=True)
        if state.get("format") != RESUME_FORMAT:
            raise FcmbenchError(f"{resume} was written by an earlier fcmbench (its optimiser state lists the "
                                "parameters in another order): delete it to train this quality from the start")
        left_by = state.get("stage", stage)  # absent from the resume files of older versions
        if left_by != stage:
            raise FcmbenchError(f"{resume} was left by another training into {config.out} ({stage_text(left_by)}; "
                                f"this one: {stage_text(stage)}): run that one again to finish it, or "
                                "delete the file to start this one")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if aux_optimizer:
            aux_optimizer.load_state_dict(state["aux_optimizer"])
        plateau.load_state_dict(state["plateau"])
        step, best, history = state["step"], state["best"], state["history"]
        best_state = state.get("best_state")  # absent from the resume files of older versions
        if "generator" in state:
            generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
        else:
            generator.manual_seed(config.seed + step)
    with Progress() as progress:
        bar = progress.add_task(f"train {config.method} q{config.quality}", total=config.steps, completed=step)
        while step < config.steps:
            model.train()
            loss, parts = step_loss(step, generator)
            if not torch.isfinite(loss):
                resume.unlink(missing_ok=True)  # its optimiser state would bring back the same learning rate
                raise diverged(config, step + 1, loss.item())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(main, 1.0)
            optimizer.step()
            if aux_optimizer:
                aux_optimizer.zero_grad()
                model.aux_loss().backward()
                aux_optimizer.step()
            step += 1
            rate = f" bpp {parts['bpp'].item():.3f}" if "bpp" in parts else ""
            progress.update(bar, advance=1, description=f"q{config.quality} loss {loss.item():.4f}{rate}")
            if step % config.validate_every == 0 or step == config.steps:
                model.eval()
                with torch.no_grad():
                    score = val_loss()
                plateau.step(score)
                improved = score < best
                if improved:
                    best, best_state = score, copy.deepcopy(model.state_dict())
                history.append({"step": step, "val_loss": score, "lr": optimizer.param_groups[0]["lr"],
                                "best": improved})
                progress.console.print(f"step {step}: val loss {score:.4f}, lr {optimizer.param_groups[0]['lr']:.2e}")
                torch.save({"format": RESUME_FORMAT, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "aux_optimizer": aux_optimizer.state_dict() if aux_optimizer else {},
                            "plateau": plateau.state_dict(), "step": step, "best": best, "history": history,
                            "stage": stage,
                            "best_state": best_state, "generator": generator.get_state(),
                            "torch_rng": torch.get_rng_state()}, resume)
    if best_state is not None:
        model.load_state_dict(best_state)
    resume.unlink(missing_ok=True)
    return history


def stage_of(config: TrainConfig) -> dict:
    """What tells one training into a file from another (a recipe trains into one file more than once: L-MSFC's
    quality 4 twice, then its polish); not the steps, so a resumed run may stop earlier or go on longer."""
    return {"lmbda": config.lmbda, "lr": config.lr, "init": str(config.init) if config.init else None,
            "seed": config.seed}


def stage_text(stage: dict) -> str:
    return ", ".join(f"{key} {value}" for key, value in stage.items())


def diverged(config: TrainConfig, step: int, loss: float) -> FcmbenchError:
    return FcmbenchError(f"training {config.method} q{config.quality} diverged at step {step} (loss {loss}); "
                         f"nothing was saved: train again with a lower --lr than {config.lr:g}")


def kept(history: list[dict]) -> dict:
    """The validation whose weights the checkpoint holds (the best one)."""
    return min(history, key=lambda h: h["val_loss"]) if history else {"step": 0, "val_loss": math.nan}


def same_size_groups(features: list[FeatureSet]) -> dict[int, list[int]]:
    """Index of each image -> the images whose levels have the same sizes (they can share a batch)."""
    by_shape: dict[tuple, list[int]] = {}
    for i, f in enumerate(features):
        by_shape.setdefault(tuple(tuple(t.shape) for t in f.values()), []).append(i)
    return {i: group for group in by_shape.values() for i in group}


def batch_with(index: int, groups: dict[int, list[int]], size: int, generator: torch.Generator) -> list[int]:
    group = groups[index]
    others = torch.randint(len(group), (size - 1,), generator=generator).tolist()
    return [index, *(group[i] for i in others)]


CROP = 128  # training crops of image networks: a multiple of every network's padding


def train_image_network(config: TrainConfig, family: ImageNetwork, train: list[torch.Tensor],
                        val: list[torch.Tensor]) -> dict:
    """Train an image network (ELIC, LIC-TCM) on images ``[3, H, W]`` in [0, 1] with λ·255²·MSE + bpp on random
    crops, and save it at ``config.out``. Three more channels, if present, weigh each value's squared error (a
    feature mosaic's data 1, its padding 0: see ``feature_mosaics``)."""
    torch.manual_seed(config.seed)
    sizes = {key: value for key, value in (("N", config.width), ("M", config.latent)) if value}
    model = family.build(**sizes)
    if config.init:
        load_weights(model, config.init)
    lam = config.lmbda or IMAGE_LAMBDAS[config.quality]

    def step_loss(step: int, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        chosen = torch.randint(len(train), (config.batch_size,), generator=generator).tolist()
        return image_rate_distortion(model, torch.stack([random_crop(train[i], generator) for i in chosen]), lam)

    def val_loss() -> float:
        batches = [padded(image[None], model.pad_multiple, model.pad_centred) for image in val]
        return sum(image_rate_distortion(model, x, lam)[0].item() for x in batches) / max(1, len(val))

    history = fit(model, config, step_loss, val_loss)
    save_checkpoint(model.eval(), config.out, int8_weights=config.int8_weights, method=config.method,
                    quality=config.quality, lam=lam, network=family.name, sizes=sizes, steps=config.steps,
                    history=history, init=str(config.init) if config.init else None)
    return {"history": history, "path": config.out}


def image_rate_distortion(model: nn.Module, x: torch.Tensor, lam: float) -> tuple[torch.Tensor, dict]:
    """λ·255²·MSE + bpp of ``[B, 3, H, W]`` images, or of ``[B, 6, H, W]`` whose last three channels weigh the
    squared errors."""
    image, weight = x[:, :3], x[:, 3:]
    out = model(image)
    mse = weighted_mse(out["x_hat"], image, weight) if weight.shape[1] else F.mse_loss(out["x_hat"], image)
    bpp = sum(-torch.log2(lk).sum() for lk in out["likelihoods"].values()) / (x.shape[0] * x.shape[2] * x.shape[3])
    return lam * 255**2 * mse + bpp, {"bpp": bpp, "mse": mse}


def weighted_mse(decoded: torch.Tensor, image: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    # a crop may hold no weighted pixel (a mosaic's padding alone): its MSE is then 0, not NaN
    return ((decoded - image) ** 2 * weight).sum() / weight.sum().clamp(min=1)


def random_crop(image: torch.Tensor, generator: torch.Generator, size: int = CROP) -> torch.Tensor:
    """A ``size`` x ``size`` crop; smaller images are zero-padded first."""
    image = F.pad(image, (0, max(0, size - image.shape[2]), 0, max(0, size - image.shape[1])))
    top = int(torch.randint(image.shape[1] - size + 1, (1,), generator=generator))
    left = int(torch.randint(image.shape[2] - size + 1, (1,), generator=generator))
    return image[:, top : top + size, left : left + size]


def config_of(request: TrainRequest, quality: int, path: Path) -> TrainConfig:
    # TA-MSF adds the detection loss after a warm-up on rate-distortion alone (half the steps)
    return TrainConfig(request.method, quality, path, steps=request.steps, latent=request.latent, lr=request.lr,
                       task_warmup=request.steps // 2, batch_size=request.batch_size, lmbda=request.lmbda,
                       init=request.init, int8_weights=request.int8_weights, width=request.width)


def kept_weights(history: list[dict]) -> str:
    best = kept(history)
    return f"weights of step {best['step']}, its best validation loss {best['val_loss']:.4f}"
