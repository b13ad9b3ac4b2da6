"""The CLI in a real process, forked from the test process instead of started by a new interpreter.

A test of signals, kill -9, a terminal, another process's lock or a file-size limit needs a
process boundary: its own pid, signal handlers, file descriptors and exit status. It does not
need the interpreter's start-up, which cost ~0.45 CPU-seconds per process (importing asyncio,
httpx, aiohttp and jsonschema): most of the suite's child-process time. `ForkedCli` is a
`subprocess.Popen` whose child is a fork of this process that runs `batchrun`'s own entry
point, so `poll`, `wait`, `communicate`, `send_signal` and `kill` work as on any child.

The child is made to look like a fresh `python -m batchrun`: the signal dispositions and mask
an interpreter starts with, no inherited descriptors beyond 0-2 (a server socket kept open by
a child would hold a connection the parent closed), new standard streams, the given
environment and working folder, no event loop, and none of the parent's exit handlers. It
leaves by `os._exit`, so nothing of pytest's runs twice. What this cannot show (the
interpreter's start-up window, a stdout closed before start, the `python -m` path itself) is
tested with real interpreters: `exec_cli` in conftest and tests/test_exit_codes.py.
"""

from __future__ import annotations

import asyncio
import atexit
import faulthandler
import gc
import io
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import jsonschema  # noqa: F401  (the heavy imports, done once here rather than in each child)

import batchrun
import batchrun._run_control  # noqa: F401
import batchrun.cli._file_commands  # noqa: F401
import batchrun.cli._report_gate  # noqa: F401
import batchrun.cli._run_commands  # noqa: F401
import batchrun.simulator  # noqa: F401
from batchrun import _early_signals
from batchrun._entry import entry

MAIN_PATH = str(Path(batchrun.__file__).with_name("__main__.py"))
# Python starts with these ignored (Modules/signalmodule.c); every other signal is at its default.
IGNORED_AT_START = (signal.SIGPIPE, signal.SIGXFSZ)
_PARENT_STREAMS: list[object] = []  # the parent's standard streams, in a child


def _fresh_signals() -> None:
    """The dispositions exec would leave and Python's start-up would then set: a signal the
    parent ignores stays ignored (cron, or a shell's background job, may ignore SIGQUIT or
    SIGINT), every handler goes back to the default, SIGPIPE and SIGXFSZ are ignored, and
    SIGINT raises KeyboardInterrupt unless it was ignored."""
    signal.set_wakeup_fd(-1)  # the parent's event loop's self-pipe is not this process's
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            ignored = sig in IGNORED_AT_START or signal.getsignal(sig) == signal.SIG_IGN
            if sig == signal.SIGINT and not ignored:
                signal.signal(sig, signal.default_int_handler)
            else:
                signal.signal(sig, signal.SIG_IGN if ignored else signal.SIG_DFL)
        except (OSError, ValueError):
            continue  # signals the platform reserves


def _fresh_streams() -> None:
    """New stdin, stdout and stderr on descriptors 0-2, built as the interpreter builds them
    (PYTHONUNBUFFERED, as cron's or a CI image's environment may set it: stdout on the file itself)."""
    _PARENT_STREAMS.extend([sys.stdin, sys.stdout, sys.stderr])  # held till os._exit: none may close 0-2
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8")
    stdout: io.RawIOBase | io.BufferedWriter = io.FileIO(1, "w", closefd=False)
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    if not unbuffered:
        stdout = io.BufferedWriter(stdout)
    sys.stdout = io.TextIOWrapper(stdout, encoding="utf-8", line_buffering=os.isatty(1), write_through=unbuffered)
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False),
        encoding="utf-8",
        errors="backslashreplace",
        line_buffering=True,
        write_through=True,
    )


def _close_inherited(keep: set[int]) -> None:
    try:
        open_fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc (macOS): every number a descriptor may have
        open_fds = list(range(3, os.sysconf("SC_OPEN_MAX")))
    for fd in open_fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                continue  # the listing's own descriptor, closed already, or none


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _child(
    argv: Sequence[str], cwd: str | None, env: dict[str, str] | None, fds: tuple[int, int, int], pass_fds: Sequence[int]
) -> NoReturn:
    code = 1
    try:
        # Nothing created before the fork is collected here: a parent's socket or loop that a
        # collection finalised would close a descriptor number this process has since reused.
        gc.freeze()
        faulthandler.disable()
        atexit._clear()  # the parent's exit handlers (pytest's, hypothesis's) are not this process's
        for target, fd in enumerate(fds):
            if fd != -1 and fd != target:
                os.dup2(fd, target)
        _close_inherited(set(pass_fds))
        _fresh_signals()
        asyncio.events._set_running_loop(None)  # a test's own loop is running in this thread
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        _fresh_streams()
        # As an interpreter reads it at start: a child under a file-size limit must not write
        # bytecode (a .pyc cut at the limit is installed whole-looking, and breaks every later
        # import of its module); the suite's own setting (conftest) is the parent's.
        sys.dont_write_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
        if cwd is not None:
            os.chdir(cwd)
        sys.argv = [MAIN_PATH, *argv]
        _early_signals.early.clear()
        _early_signals.caught[0] = False
        _early_signals.ignored.clear()
        try:
            entry()
        except SystemExit as exc:
            code = _exit_code(exc)
        except KeyboardInterrupt:
            # As the interpreter ends on an uncaught Ctrl-C: killed by SIGINT itself.
            sys.stderr.flush()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
    except BaseException:  # noqa: BLE001  (the interpreter prints any escape and exits 1)
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                code = code or 120  # the interpreter's code for a failed flush at exit
        os._exit(code)


class ForkedCli(subprocess.Popen[str]):
    """`batchrun ARGS` as a forked child process (see the module's docstring)."""

    def __init__(self, args: Sequence[str | Path], **kwargs: Any) -> None:
        self.cli_args = [str(a) for a in args]
        super().__init__(["batchrun", *self.cli_args], **kwargs)

    def _execute_child(self, *spec: Any) -> None:
        # subprocess.Popen.__init__ calls this with its 23 positional settings (CPython 3.11-3.13).
        preexec_fn: Callable[[], object] | None = spec[2]
        pass_fds: Sequence[int] = spec[4]
        cwd, env = spec[5], spec[6]
        p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite = spec[10:16]
        start_new_session: bool = spec[21]
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            if start_new_session:
                os.setsid()
            if preexec_fn is not None:
                preexec_fn()
            _child(self.cli_args, None if cwd is None else os.fspath(cwd), env, (p2cread, c2pwrite, errwrite), pass_fds)
        self.pid = pid
        self._child_created = True
        self._close_pipe_fds(p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite)  # type: ignore[attr-defined]


def run_forked(args: Sequence[str | Path], timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`subprocess.run` for a ForkedCli: its exit status and output, killed past `timeout`."""
    with ForkedCli(args, **kwargs) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)
