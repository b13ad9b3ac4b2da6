"""One writer per output file, with OS file locks (fcntl.flock).

The kernel drops a flock when its process dies, however it dies, so a lock left by a
killed run is stale by construction: the next run simply takes it.

Locks are taken on the resolved path (symlinks followed), so two spellings of one file
(a symlinked folder, a relative and an absolute path) share one lock. The lock file is
removed when the run ends, so none is left in a results folder to be uploaded with the
results. Removing a lock file is safe only with the check `acquire` makes: after taking
the flock it verifies that the path still names the inode it locked (a process that
opened the file just before another removed it would otherwise hold a lock on a
deleted inode), and tries again if not. A lock file left by kill -9 is taken over and
then removed by the next run.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from ._exceptions import LockHeld

# Locks this process holds, so a second signal that exits at once (os._exit, no finally
# blocks) can still remove their files: see `release_all` and _signals.
_HELD: list[OutputLock] = []


def release_all() -> None:
    """Release every lock still held; for the exit-now path, where no `finally` runs."""
    for lock in list(_HELD):
        with contextlib.suppress(OSError):
            lock.release()


class OutputLock:
    """An exclusive lock on `target` (held on `target.lock`, resolved); `what` names it in the message."""

    def __init__(self, target: Path, what: str | None = None) -> None:
        self.what = what or f"{target.name} is being written"
        self.target = target
        self.path = target.with_name(target.name + ".lock")
        self._fd = -1

    def acquire(self) -> None:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        resolved = self.target.resolve()
        self.path = resolved.with_name(resolved.name + ".lock")
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise LockHeld(f"{self.what} by another batchrun run (pid {holder})") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the file was removed by the run that held it: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        _HELD.append(self)

    def release(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(ValueError):
                _HELD.remove(self)
            # Remove while still holding the flock: see the module docstring.
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
