"""The event loop a command runs on: uvloop's where it is installed, else asyncio's own.

At latency 0 a run's client spends about a fifth less CPU per request on uvloop (the loop's
own bookkeeping, selector and socket callbacks in C): 1,540-1,850 req/s became 2,010-2,250
on one core (bench/README.md). uvloop does not build on Windows; there, and wherever it is
missing, asyncio's loop runs the same code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main) on the faster loop: a new loop, closed (async generators and the
    default executor shut down) when `main` returns or raises."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
