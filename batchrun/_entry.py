"""The `batchrun` command's first code: catch signals before the heavy imports, then the CLI.

This module imports only `signal`, `os` and `sys` (the package's `__init__` is lazy), so the
handlers are in place a few milliseconds after the interpreter starts: a SIGTERM or SIGINT while
asyncio, httpx and aiohttp load is remembered and ends the run as exit 7, never by the
signal or a KeyboardInterrupt traceback from importlib. `_signals` takes over from here.
"""

from __future__ import annotations

import os
import sys

from ._early_signals import CLOSED_AT_START, catch_early

TYPE_CHECKING = False  # `typing` costs ~15 ms before the handlers are in (out-126 F2)
if TYPE_CHECKING:
    from typing import NoReturn


def _standard_streams() -> None:
    """Closed standard descriptors (`>&-`, `2>&-`, some daemons) opened on /dev/null. Python
    sets sys.stdout or sys.stderr to None then, and every command died with a traceback, exit
    1; with stderr closed a run never started, without a word (break25 F2). And a file the run
    opened would take the free descriptor 1 or 2, where anything written to "stdout" lands."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: this one
            CLOSED_AT_START.add(fd)
    if sys.stdin is None:
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own, for its life
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115


def entry() -> NoReturn:
    catch_early()  # first, before any heavy import
    _standard_streams()
    # Imported here, not above: the CLI's imports are the heavy ones the handlers must precede.
    from .cli import entry as run_cli

    run_cli()
