"""SIGTERM, SIGINT and SIGHUP during a run: the first stops it cleanly (exit 7), a second exits at once.

Handlers are Python-level (`signal.signal`) and stay installed from the first moments of
the process until it exits. asyncio's `loop.add_signal_handler` was not enough: its
handlers exist only while the loop runs, and closing the loop restores the default
action, so a signal in the first fraction of a second (imports, job loading) or just
after the run's loop closed (a second signal during teardown) killed the process by the
signal instead of exit 7. The handler reaches a running loop with
`call_soon_threadsafe`, which also wakes it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

from ._early_signals import caught, early, stop_signals
from ._lock import release_all

if TYPE_CHECKING:  # asyncio is ~60 ms of start-up that `validate` and the file commands never use
    import asyncio

EXIT_INTERRUPTED = 7  # ExitCode.INTERRUPTED, without importing the CLI's modules this early


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def release_early() -> None:
    """For commands other than a run: SIGTERM acts as SIGINT does (KeyboardInterrupt: the CLI
    says "interrupted", exit 7, as the exit codes promise; `plan` died by the signal, 143:
    verify23 N7), and a signal that came early acts now."""
    if not caught[0]:  # in process (tests, a library caller): leave the host's handlers alone
        return
    signal.signal(signal.SIGTERM, _interrupt)
    if signal.SIGINT in stop_signals():  # one ignored at the start (a job started with `&`) stays so (out-153 F4)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.SIGHUP in stop_signals():
        signal.signal(signal.SIGHUP, _interrupt)
    if early:
        os.kill(os.getpid(), early.pop(0))


@contextmanager
def signals_held() -> Iterator[None]:
    """SIGTERM and SIGINT that arrive inside act once it is left: for writes that must not be
    cut between them (report --job's JUnit file and page, both saying "no verdict yet": a signal
    between them left last night's green page beside it, verify30 N5). In process, the host's
    handlers are left alone."""
    if not caught[0]:
        yield
        return
    held: list[int] = []
    signals = stop_signals()
    previous = [signal.signal(sig, lambda signum, _frame: held.append(signum)) for sig in signals]
    try:
        yield
    finally:
        for sig, handler in zip(signals, previous, strict=True):
            signal.signal(sig, handler)
        if held:
            os.kill(os.getpid(), held[0])


class RunSignals:
    """The handlers for a run; `stop` is called once, on the loop when one is running."""

    def __init__(self, stop: Callable[[], None], say: Callable[[str], None], farewell: str | None = None) -> None:
        self.stop = stop
        self.say = say
        self.farewell = farewell  # said too when a second signal exits at once: what is left behind
        self.loop: asyncio.AbstractEventLoop | None = None
        self.count = 0
        self.finished = False  # the run is over, its files written: only its output is left
        self._previous: list[Any] = []
        self._signals: tuple[int, ...] = ()

    def __enter__(self) -> RunSignals:
        self._signals = stop_signals()
        self._previous = [signal.signal(sig, self._handle) for sig in self._signals]
        while early:
            self._handle(early.pop(0), None)
        return self

    def __exit__(self, *_exc: object) -> None:
        # Back to what was there: in the command, the early handler, which only remembers.
        for sig, previous in zip(self._signals, self._previous, strict=True):
            signal.signal(sig, previous)

    def _handle(self, _signum: int, _frame: FrameType | None) -> None:
        self.count += 1
        if self.finished:
            # Printing the summary into a pipe nobody reads blocks for ever, and a handler that
            # returns lets the write go on: the first signal was lost (break25 F8). Nothing is
            # left to save, and nothing is said (stderr may be that pipe).
            release_all()
            os._exit(EXIT_INTERRUPTED)
        if self.count > 1:
            # Each record is one whole os.write, so the results file is valid at any point.
            self.say("second signal: exiting now")
            if self.farewell:
                self.say(self.farewell)
            release_all()  # os._exit runs no finally: lock files would stay behind
            os._exit(EXIT_INTERRUPTED)
        loop = self.loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self.stop)
                return
            except RuntimeError:  # the loop closed in the meantime
                pass
        self.stop()
