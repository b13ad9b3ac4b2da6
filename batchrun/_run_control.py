"""How the CLI's signal handlers reach a run, or a re-grading, that may not have its runner yet."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from ._status import StopReason
from ._worker_pool import Runner

T = TypeVar("T")


@dataclass
class RunControl:
    """Lets the CLI's signal handlers reach a run that may not have started its runner yet."""

    runner: Runner | None = None
    pending: StopReason | None = None
    stopped: asyncio.Event = field(default_factory=asyncio.Event)  # set at the stop, on the run's loop
    winding_down: Callable[[], None] | None = None  # after the rows: cuts the wind-down at a grace
    used: bool = False  # by a run: one RunControl serves one run (break50 F4)

    def stop(self, reason: StopReason = StopReason.INTERRUPTED) -> None:
        self.stopped.set()
        if self.winding_down is not None:
            self.winding_down()
        if self.runner is not None:
            self.runner.request_stop(reason)
        else:
            self.pending = reason

    async def before_start(self, work: Awaitable[T], time_left: Callable[[], float | None]) -> T | None:
        """`work` (start-up: the account reads, prices, a per-run key), or None when a signal or
        the deadline came first, `pending` then saying which: nothing has been sent, and the run
        records every row as stopped so (verify23 N1: a SIGTERM during a /key read that hung
        was exit 1, 60 s later)."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self.stopped.wait())
        left = time_left()
        try:
            if self.pending is None:
                timeout = None if left is None else max(0.0, left)
                await asyncio.wait((task, stop), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
        if task.done() and not task.cancelled() and self.pending is None:
            return task.result()
        await asyncio.wait((task,))  # its own cleanup runs (a cancel inside it: its finally blocks)
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]  # it failed first: that is what happened
        self.pending = self.pending or StopReason.DEADLINE
        return None
