"""The `batchrun` command's first code: catch signals before the heavy imports, then the CLI.

This module imports only `signal` (the package's `__init__` is lazy), so the handlers are
in place a few milliseconds after the interpreter starts: a SIGTERM or SIGINT while
asyncio, httpx and aiohttp load is remembered and ends the run as exit 7, never by the
signal or a KeyboardInterrupt traceback from importlib. `_signals` takes over from here.
"""

from __future__ import annotations

import signal
from typing import NoReturn

SIGNALS = (signal.SIGTERM, signal.SIGINT)
early: list[int] = []  # signals that came before the command decided what they mean
caught = [False]  # True once catch_early ran: only then does the CLI own the handlers


def _remember(signum: int, _frame: object) -> None:
    early.append(signum)


def catch_early() -> None:
    """Remember signals from the start of the process until the command decides what they mean."""
    caught[0] = True
    for sig in SIGNALS:
        signal.signal(sig, _remember)


def entry() -> NoReturn:
    catch_early()  # first, before any heavy import
    from .cli import entry as run_cli

    run_cli()
