"""A method's whole ladder of qualities in one command: a base network trained at one quality, then every quality
fine-tuned in a chain outward from it (the base quality from the base, each higher quality from the one below,
each lower from the one above), each at its own λ. Resumable: a quality whose checkpoint exists is kept, and an
interrupted training continues from its own resume file. A method built on another's ladder (MFIBA on
``elic-feat`` or ``tcm-feat``) trains that ladder, then its own trainer (the rate model's fit and the predictor)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from pkgutil import resolve_name

from fcmbench.core import registry
from fcmbench.core.codec import CodecOptions
from fcmbench.core.errors import FcmbenchError
from fcmbench.core.training import Trained, TrainRequest
from fcmbench.zoo.checkpoints import checkpoint_root


def parse_ladder(text: str) -> dict[int, float]:
    """``"1:0.0125 2:0.025 ..."`` (spaces or commas) -> {quality: λ}."""
    ladder = {}
    for point in text.replace(",", " ").split():
        quality, _, lmbda = point.partition(":")
        try:
            ladder[int(quality)] = float(lmbda)
        except ValueError:
            raise FcmbenchError(f"--ladder point {point!r}: give quality:λ pairs, e.g. \"1:0.0125 2:0.025\"") from None
    if not ladder:
        raise FcmbenchError("--ladder is empty: give quality:λ pairs, e.g. \"1:0.0125 2:0.025\"")
    return ladder


def chain(qualities: list[int], base: int) -> list[tuple[int, int | None]]:
    """(quality, the quality it starts from; None: from the base network), in training order."""
    above = sorted(q for q in qualities if q > base)
    below = sorted((q for q in qualities if q < base), reverse=True)
    order = [(base, None)]
    order += [(q, prev) for prev, q in zip([base, *above], above, strict=False)]
    order += [(q, prev) for prev, q in zip([base, *below], below, strict=False)]
    return order


def train_ladder(request: TrainRequest, ladder: dict[int, float], base: int, base_steps: int,
                 base_lr: float | None, say: Callable[[str], None]) -> list[Trained]:
    if base not in ladder:
        raise FcmbenchError(f"--base-quality {base} is not on the ladder ({', '.join(map(str, sorted(ladder)))})")
    codec = registry.methods.get(request.method)
    base_method = getattr(codec, "base", request.method)
    if base_method != request.method:
        done = train_ladder(replace(request, method=base_method), ladder, base, base_steps, base_lr, say)
        if (codec(CodecOptions(task_model=request.task_model, checkpoints=request.out)).folder()
                / "importance.pt").is_file():
            say(f"{request.method}: kept its rate model and predictor")
            return done
        say(f"{request.method}: rate model (if not fitted yet) and importance predictor on {base_method}'s ladder")
        return [*done, resolve_name(codec.trainer)(request)]
    train = resolve_name(codec.trainer)
    out = Path(request.out) if request.out else None
    base_root = checkpoint_root(CodecOptions(checkpoints=out)) / "base"  # beside the ladder, wherever that is

    def checkpoint(quality: int, root: Path | None) -> Path:
        return codec(CodecOptions(task_model=request.task_model, checkpoints=root)).checkpoint(quality)

    done = []
    base_file = checkpoint(base, base_root)
    if not base_file.is_file():
        say(f"base network: quality {base}, λ {ladder[base]:g}, {base_steps} steps")
        train(replace(request, quality=base, lmbda=ladder[base], steps=base_steps, lr=base_lr or request.lr,
                      init=None, out=base_root))
    for quality, start in chain(sorted(ladder), base):
        target = checkpoint(quality, out)
        if target.is_file():
            say(f"quality {quality}: kept {target}")
            continue
        init = base_file if start is None else checkpoint(start, out)
        say(f"quality {quality}: λ {ladder[quality]:g} from {init}")
        done.append(train(replace(request, quality=quality, lmbda=ladder[quality], init=init)))
    return done
