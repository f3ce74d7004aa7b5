"""One ``fcmbench run`` at a time per results folder.

A run holds an exclusive ``flock`` on ``OUT/.fcmbench.lock`` from before it opens the store until it ends; the file
says who holds it (process id, host, start time, command). A second run on the same folder waits for the lock and
then finds the first run's items finished in the store, so it computes none of them again; with ``--no-wait`` it
refuses, naming the holder. The kernel drops the lock of a process that dies, however it dies, so a killed run
never blocks the folder: the next run takes the lock over and says whose it was (the file still names it, as only
a clean exit empties it).

``flock`` coordinates processes on one machine (and on network file systems that implement it); runs on other
machines sharing a folder are not coordinated.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from fcmbench.core.errors import FcmbenchError
from fcmbench.core.timestamps import now

LOCK_NAME = ".fcmbench.lock"


def describe(holder: dict) -> str:
    return (f"process {holder.get('pid', '?')} on {holder.get('host', '?')} (started {holder.get('started', '?')}: "
            f"{holder.get('command', '?')})")


class FolderLock:
    """``with FolderLock(out, wait, say):`` holds the folder for one run; ``say`` reports waiting and take-overs."""

    def __init__(self, folder: Path, wait: bool = True, say: Callable[[str], None] = lambda message: None) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.wait, self.say = wait, say
        self.fd: int | None = None
        self.took_over: dict | None = None

    def _holder(self) -> dict:
        try:
            text = os.pread(self.fd, 4096, 0).decode(errors="replace")
            return json.loads(text) if text.strip() else {}
        except (OSError, json.JSONDecodeError):
            return {"pid": "?", "command": "unreadable lock file"}

    def __enter__(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder()
            if not self.wait:
                self._close()
                raise FcmbenchError(f"{self.path.parent} is in use by another fcmbench run, {describe(holder)}: "
                                    "wait for it to finish (or run without --no-wait to wait), or give another "
                                    "--out") from None
            self.say(f"waiting for the fcmbench run that holds {self.path.parent}, {describe(holder)}; its finished "
                     "items will be reused")
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        left = self._holder()
        if left:  # only a clean exit empties the file: its holder died holding the folder
            self.took_over = left
            self.say(f"took over {self.path.parent} from a run that stopped without finishing, {describe(left)}")
        mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": now(), "command": " ".join(sys.argv)}
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps(mine).encode(), 0)
        os.fsync(self.fd)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # a clean end, whatever the run's outcome: nothing to take over
            self._close()

    def _close(self) -> None:
        assert self.fd is not None
        os.close(self.fd)  # closing drops the flock
        self.fd = None
