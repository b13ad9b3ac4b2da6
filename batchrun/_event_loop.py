"""The event loop a command runs on: uvloop's where it is installed, else asyncio's own.

At latency 0 a run's client spends about a fifth less CPU per request on uvloop (the loop's
own bookkeeping, selector and socket callbacks in C): 1,540-1,850 req/s became 2,010-2,250
on one core (bench/README.md). uvloop does not build on Windows; there, and wherever it is
missing, asyncio's loop runs the same code.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def no_thread(error: RuntimeError) -> bool:
    """Whether `error` is Python's refusal to start a thread (a memory or process limit)."""
    return "can't start new thread" in str(error)


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main) on the faster loop: a new loop, closed (async generators and the
    default executor shut down) when `main` returns or raises. Shutting the executor down takes
    a thread: under `ulimit -v` one may not start, and a run that had ended complete and green
    was a traceback, exit 1 (break51 F3); its result stands."""
    runner = asyncio.Runner(loop_factory=loop_factory())
    try:
        return runner.run(main)
    finally:
        try:
            runner.close()
        except RuntimeError as error:
            if not no_thread(error):
                raise


# One thread for the work that holds the GIL throughout (reading a huge reply): several such at
# once are no faster under the GIL, and each that a stop finds begun is waited for as the loop
# closes (six of ~0.4 s ran together for 2.4 s); queued, it is cancelled with its row.
_ONE_AT_A_TIME = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batchrun-reader")


async def off_the_loop(function: Callable[..., T], *args: Any, one_at_a_time: bool = False) -> T:
    """`function(*args)` in a worker thread, off the event loop; in the loop's own thread when
    none can start (a memory limit): a paid answer's checks were an `internal` error, its text
    dropped, for good (break51 F2). Slower, but the answer is graded and kept. `one_at_a_time`:
    in the one thread kept for CPU-bound work, after what was given it before."""
    try:
        if one_at_a_time:
            return await asyncio.get_running_loop().run_in_executor(_ONE_AT_A_TIME, functools.partial(function, *args))
        return await asyncio.to_thread(function, *args)
    except RuntimeError as error:
        if not no_thread(error):
            raise
    return function(*args)
