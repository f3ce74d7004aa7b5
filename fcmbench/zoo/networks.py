"""Every learned method's network, from one place: ``load(method, quality, options)``.

The zoo knows which network family each built-in method's checkpoints hold and where they live (``ROOT/METHOD/
SCOPE/qQ.pt``, the scope being the task model, or ``images`` for the image codecs); the codecs ask it for a
network ready to code. A missing file says which command makes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from torch import nn

from fcmbench.core.codec import CodecOptions
from fcmbench.core.errors import FcmbenchError
from fcmbench.models.elic import build_elic, elic_from_state
from fcmbench.models.tcm import build_tcm, tcm_from_state
from fcmbench.zoo.checkpoints import (
    checkpoint_path,
    load_checkpoint,
    read_state,
    require,
    train_command,
    with_derived_buffers,
)


@dataclass(frozen=True)
class ImageNetwork:
    """One family of image networks: how to build one and how to size one for given weights."""

    name: str
    build: Callable[..., nn.Module]  # keyword sizes -> an untrained network
    from_state: Callable[[dict], nn.Module]  # our or published weights -> a network of their sizes
    reference: tuple[int, int]  # the paper's (N, M)

    def describe(self, network: nn.Module) -> str:
        """The sizes behind the numbers, flagged where they are below the reference's (the report shows it)."""
        sizes = f"{self.name} N={network.N} M={network.M}"
        if (network.N, network.M) == self.reference:
            return sizes
        return f"{sizes} (reference {self.reference[0]}/{self.reference[1]}; reduced widths are ours)"


ELIC = ImageNetwork("ELIC", build_elic, elic_from_state, (192, 320))
TCM = ImageNetwork("LIC-TCM", build_tcm, tcm_from_state, (128, 320))
IMAGE_NETWORKS = {"elic": ELIC, "tcm": TCM, "elic-feat": ELIC, "tcm-feat": TCM}
IMAGE_CODECS = ("elic", "tcm")  # trained on images, not on a task model's features
LMSFC_FAMILY = ("lmsfc", "lmsfc-nocm", "tamsf")


def scope_of(method: str) -> str | None:
    """Where a method's checkpoints sit under its folder: ``images``, else (None) the task model's name."""
    return "images" if method in IMAGE_CODECS else None


def checkpoint_of(method: str, quality: int, options: CodecOptions) -> Path:
    """Where a built-in learned method's checkpoint at ``quality`` is (whether or not it exists)."""
    return checkpoint_path(method, quality, options, scope_of(method))


def load(method: str, quality: int, options: CodecOptions) -> nn.Module:
    """The network of a built-in learned method at ``quality``, for ``options.task_model``, on its device."""
    if method in LMSFC_FAMILY:
        return load_checkpoint(method, quality, options)
    family = IMAGE_NETWORKS.get(method)
    if family is None:
        raise FcmbenchError(f"the zoo holds no networks of method {method!r}; it has "
                            f"{', '.join([*LMSFC_FAMILY, *IMAGE_NETWORKS])}")
    scope = scope_of(method)
    what = f"{method} checkpoint for quality {quality}" + ("" if scope else f" and task model {options.task_model}")
    path = require(checkpoint_of(method, quality, options), what,
                   train_command(method, quality, options, scope), options)
    return _image_network(family, str(path), path.stat().st_mtime_ns, options.device)


@lru_cache(maxsize=32)
def _image_network(family: ImageNetwork, path: str, _mtime: int, device: str) -> nn.Module:
    state = read_state(path, f"checkpoint {path}")
    try:
        network = family.from_state(state)
        network.load_state_dict(with_derived_buffers(network, state))
    except (KeyError, RuntimeError, ValueError, IndexError) as err:
        raise FcmbenchError(f"checkpoint {path} is not a {family.name} checkpoint that fits: "
                            f"{str(err).splitlines()[0]}") from None
    network.update(force=True)
    return network.eval().to(device)
