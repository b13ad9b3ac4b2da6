"""One writer per output file, with OS file locks (fcntl.flock).

The kernel drops a flock when its process dies, however it dies, so a lock left by a
killed run is stale by construction: the next run simply takes it. The lock file is
never deleted, because deleting it would let two processes lock two different inodes.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ._exceptions import LockHeld


class OutputLock:
    """An exclusive lock on `target` (held on `target.lock`); `what` names it in the message."""

    def __init__(self, target: Path, what: str | None = None) -> None:
        self.path = target.with_name(target.name + ".lock")
        self.what = what or f"{target.name} is being written"
        self._fd = -1

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise LockHeld(f"{self.what} by another batchrun run (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
