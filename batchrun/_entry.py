"""The `batchrun` command's first code: catch signals before the heavy imports, then the CLI."""

from __future__ import annotations

from typing import NoReturn


def entry() -> NoReturn:
    from ._signals import catch_early

    catch_early()  # a SIGTERM while modules load must still end as exit 7, not by the signal
    from .cli import entry as run_cli

    run_cli()
