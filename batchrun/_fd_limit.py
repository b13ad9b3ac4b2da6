"""How many requests the process's open-file limit lets a run have in flight.

Each request in flight holds a socket (two with `--simulate`: the simulator serves in this
process). Above the limit, opening a connection fails with EMFILE, which reads as the endpoint
refusing it: with `concurrency: 4096` under the usual `ulimit -n 1024`, 20,892 attempts failed
on this machine before anything was sent, and 12% of 10,000 rows ended in error, exit 1 (break51
F4). The run's concurrency is held below the limit instead, and that is said once. Below a
floor, a run failed on its lock, its journal, its loop or its first connection, each its own way
(exit 1, 2, 5, 11 or a traceback: break51 F5): it is refused before it starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import replace

from ._exceptions import ConfigError
from ._settings import RunSettings

# Descriptors a run holds besides its requests: results, journal, summary, locks, the cache's
# database, the event loop's own, the interpreter's.
RESERVED_FDS = 64
MIN_FDS = RESERVED_FDS + 2  # and a request's two (with --simulate)


def _limits() -> tuple[int, int] | None:
    """(soft, hard) RLIMIT_NOFILE; None where there is none (Windows) or it is unlimited."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else (soft, hard)


def raise_soft_limit() -> None:
    """The soft limit raised to the hard one, as servers do: for the console script only (a
    library caller's process limits are its own). Where it cannot be, it stays as it was."""
    limits = _limits()
    if limits is None or limits[0] >= limits[1]:
        return
    import resource

    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits[1], limits[1]))


def fd_floor_problem() -> str | None:
    """Why the open-file limit is too low for any run, or None."""
    limits = _limits()
    if limits is None or limits[0] >= MIN_FDS:
        return None
    return f"this process's open-file limit ({limits[0]}, ulimit -n) is below the {MIN_FDS} a run needs: raise it"


def within_fd_limit(settings: RunSettings, simulator_here: bool, notice: Callable[[str], None]) -> RunSettings:
    """`settings` with its concurrency held to what the open-file limit allows (said once);
    ConfigError below the floor."""
    if (problem := fd_floor_problem()) is not None:
        raise ConfigError(problem)
    limits = _limits()
    if limits is None:
        return settings
    allowed = max(1, (limits[0] - RESERVED_FDS) // (2 if simulator_here else 1))
    if settings.concurrency <= allowed:
        return settings
    notice(
        f"warning: run.concurrency {settings.concurrency} is above what this process's open-file limit "
        f"({limits[0]}, ulimit -n) allows: {allowed} request(s) at a time"
    )
    return replace(settings, concurrency=allowed)
