"""Named moments at which a test can kill fcmbench with SIGKILL, to prove a killed run resumes correctly.

``FCMBENCH_KILL_AT=NAME`` (or ``NAME:N`` for the N-th time the moment comes) makes the process kill itself there,
as abruptly as ``kill -9`` from outside would, but at an exact point instead of a lucky one. Unset, each call is
one dictionary lookup. The moments: ``store-transaction`` (inside an item's transaction, before its commit),
``cache-write`` (features written to the partial file, not yet moved into place), ``evaluation`` (after the
metrics of a rate point are computed, before they are stored), ``report-write`` (the report staged, not yet
moved into place), ``dask-unit`` (a Dask worker starts an (image, method) unit). With
``FCMBENCH_KILL_ONCE=FILE`` only the first process to create FILE dies: one worker of a cluster, not each.
"""

from __future__ import annotations

import os
import signal

_passes: dict[str, int] = {}


def reached(name: str) -> None:
    wanted = os.environ.get("FCMBENCH_KILL_AT")
    if not wanted:
        return
    target, _, count = wanted.partition(":")
    if target != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] >= int(count or 1) and _first_to_claim(os.environ.get("FCMBENCH_KILL_ONCE")):
        os.kill(os.getpid(), signal.SIGKILL)


def _first_to_claim(marker: str | None) -> bool:
    if not marker:
        return True
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True
