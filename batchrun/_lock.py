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
import errno
import fcntl
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

from ._exceptions import ConfigError, LockHeld
from ._files import resolved

# What a lock holds: its run's process id (a killed run's, or none yet), and " merge" for a merge's.
_PID = re.compile(rb"\d{1,20}( merge)?\n?")

# Locks this process holds, so a second signal that exits at once (os._exit, no finally
# blocks) can still remove their files: see `release_all` and _signals.
_HELD: list[OutputLock] = []


def release_all() -> None:
    """Release every lock still held; for the exit-now path, where no `finally` runs."""
    for lock in list(_HELD):
        with contextlib.suppress(OSError):
            lock.release()


def _flock_holders() -> dict[str, int]:
    """Each exclusive flock held now, "dev:inode" -> its pid, from /proc/locks: a reader takes no
    lock (a shared one, held for an instant, would refuse a run starting then: exit 8) and
    writes nothing. Empty where /proc is not there to say."""
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            table = locks.read()
    except (OSError, ValueError):
        return {}
    holders = {}
    for line in table.splitlines():
        parts = line.split()  # "1: FLOCK  ADVISORY  WRITE 22134 00:1b:4403782 0 EOF"; a waiter's has "->"
        if len(parts) >= 6 and parts[1:4] == ["FLOCK", "ADVISORY", "WRITE"] and parts[4].isdigit():
            holders[parts[5]] = int(parts[4])
    return holders


def writer_of(path: Path, holders: dict[str, int] | None = None) -> int | None:
    """The pid of the run writing `path` now (it holds the file's flock: `_lock_the_file_itself`),
    or None; `holders`: a reading of `_flock_holders` to look in, for several files."""
    try:
        info = path.stat()
    except (OSError, ValueError):
        return None
    device = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    return (_flock_holders() if holders is None else holders).get(device)


def refuse_live(path: Path, what: str) -> None:
    """LockHeld when a run is writing `path`: read now, its rows in flight would read as crashed,
    a changed pass rate as a regression (break46 F2: `diff --fail-on-regression` exit 4)."""
    pid = writer_of(path)
    if pid is not None:
        raise LockHeld(
            f"{path} is held by another batchrun (pid {pid}: a run writing it, or a merge): {what} once it has ended"
        )


def finished(files: list[Path], warn: Callable[[str], None]) -> list[Path]:
    """`files` without those a run is still writing (`history`: a night 20% done read as a fall
    in the pass rate, its rows in flight as crashed: break46 F2), each said; LockHeld if none is left."""
    holders = _flock_holders()  # one reading for every file
    live = {file: writer_of(file, holders) for file in files}
    for file, pid in live.items():
        if pid is not None:
            warn(f"{file} is held by another batchrun (pid {pid}: a run writing it, or a merge): left out")
    done = [file for file, pid in live.items() if pid is None]
    if files and not done:
        raise LockHeld(
            f"{', '.join(map(str, files))}: every run is still being written: show them once they have ended"
        )
    return done


def lock_created(target: Path) -> None:
    """Flock `target` itself for the lock held on its name, now that it exists: a run that
    created its output took the name's lock only, and a hard link made to the new file let a
    second run write it too (verify22 N4: 44 of 60 rows paid twice). Raises LockHeld if a run
    under another name took the file first."""
    real = resolved(target)
    for lock in _HELD:
        if lock._file_fd < 0 and resolved(lock.target) == real:
            lock._lock_the_file_itself()


class OutputLock:
    """An exclusive lock on `target` (held on `target.lock`, resolved); `what` names it in the message."""

    def __init__(self, target: Path, what: str | None = None, role: str = "") -> None:
        self.what = what or f"{target.name} is being written"
        # What the holder does, beside its pid: a second merge told the first's reading of a
        # shard "being written by another batchrun run" (break67 F4).
        self.role = role
        self.target = target
        self.path = target.with_name(target.name + ".lock")
        self._fd = -1
        self._file_fd = -1
        self._made: list[Path] = []  # folders its lock made, the deepest first

    def acquire(self) -> None:
        folder = self.target.parent
        while not folder.exists() and folder != folder.parent:
            self._made.append(folder)
            folder = folder.parent
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # said as what it is for (break36 F7: "outputs: Read-only file system")
            raise OSError(
                exc.errno, f"{exc.strerror}: cannot make the folder {self.target.parent}", exc.filename
            ) from None
        real = resolved(self.target)
        self.path = real.with_name(real.name + ".lock")
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder, _, role = os.read(fd, 64).decode(errors="replace").strip().partition(" ")
                os.close(fd)
                if role == "merge":
                    raise LockHeld(f"{self.target} is being read by another batchrun merge (pid {holder})") from None
                if not holder.isdigit():  # `flock r.jsonl.lock batchrun ...` locked every tick out (break51 F7)
                    raise LockHeld(
                        f"{self.what} by a process that wrote no pid in {self.path} (a batchrun run starting, or "
                        "a flock of your own on that file: batchrun locks it itself, so no wrapper is needed)"
                    ) from None
                # This process's own pid: a library caller's run_job left pending (break50 F9).
                mine = ": this process, a run not ended: cancel its task" if holder == str(os.getpid()) else ""
                raise LockHeld(f"{self.what} by another batchrun run (pid {holder}{mine})") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the file was removed by the run that held it: lock the new one
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}{' ' + self.role if self.role else ''}\n".encode())
        except OSError as exc:  # a full disk (break46 F6: a bare "No space left on device", the lock left)
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(fd)
            raise OSError(
                exc.errno, f"{exc.strerror}: cannot write the lock beside {self.target}", str(self.path)
            ) from None
        self._fd = fd
        _HELD.append(self)
        try:
            self._lock_the_file_itself()
        except BaseException:
            self.release()
            raise

    def _open(self) -> int:
        """The lock file, made if need be. Never through a symlink, and never a file that is
        not a regular one: the lock is truncated and written, and a symlink planted at its name
        had the run empty what it named, another run's results or its own (break44 F3)."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ConfigError(f"{self.path} is a symbolic link: a lock is never one (remove it)") from None
            raise OSError(
                exc.errno, f"{exc.strerror}: cannot make the lock beside {self.target}", exc.filename
            ) from None
        info = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(info.st_mode):
            problem = "is not a regular file: a lock is one"
        elif info.st_nlink > 1:  # a hard link: another name of a file the truncation would empty (verify47 N1)
            problem = "has other names (hard links): a lock has one"
        elif info.st_size and not _PID.fullmatch(os.pread(fd, 64, 0)):
            problem = "holds something other than a run's process id: it is not a lock"
        if problem is not None:
            os.close(fd)
            raise ConfigError(f"{self.path} {problem} (remove it)")
        return fd

    def _lock_the_file_itself(self) -> None:
        """A hard link is a name of the same file that resolving cannot see (break22 M4: two
        resumes through two links each took their own OUTPUT.lock, and 56 of 60 rows were paid
        twice). An existing regular file is flocked too, so one file has one writer by any name."""
        try:
            fd = os.open(self.target, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return  # not there yet (a fresh run), or not readable: its name's lock is the lock
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                return
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(
                f"{self.what} by another process: another batchrun run under another name of the same "
                "file (a hard link), or a program that locked it"
            ) from None
        self._file_fd = fd

    def release(self) -> None:
        if self._file_fd >= 0:
            os.close(self._file_fd)  # drops its flock
            self._file_fd = -1
        if self._fd >= 0:
            with contextlib.suppress(ValueError):
                _HELD.remove(self)
            # Remove while still holding the flock: see the module docstring.
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
        # Folders made for a run refused before it wrote anything go with it (out-130 F11: an
        # unknown model left `outputs/<job>/` behind, empty); one that holds a file stays.
        for folder in self._made:
            try:
                folder.rmdir()
            except OSError:
                break
        self._made = []
