"""The `batchrun` command's first code: catch signals before the heavy imports, then the CLI.

This module imports only `signal` (the package's `__init__` is lazy), so the handlers are
in place a few milliseconds after the interpreter starts: a SIGTERM or SIGINT while
asyncio, httpx and aiohttp load is remembered and ends the run as exit 7, never by the
signal or a KeyboardInterrupt traceback from importlib. `_signals` takes over from here.
"""

from __future__ import annotations

from typing import NoReturn

from ._early_signals import catch_early


def entry() -> NoReturn:
    catch_early()  # first, before any heavy import
    # Imported here, not above: the CLI's imports are the heavy ones the handlers must precede.
    from .cli import entry as run_cli

    run_cli()
