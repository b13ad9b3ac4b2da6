"""Signals that arrive before the command decides what they mean (imports only `signal`).

`_entry` installs these handlers first thing; `_signals` takes over from them once the
command knows whether it is a run.
"""

from __future__ import annotations

import signal

SIGNALS = (signal.SIGTERM, signal.SIGINT)
early: list[int] = []  # signals that came before the command decided what they mean
caught = [False]  # True once catch_early ran: only then does the CLI own the handlers
# And the standard descriptors the process started without (`>&-`), which _entry opened on
# /dev/null: the CLI says when what it had to print there went nowhere.
CLOSED_AT_START: set[int] = set()


def _remember(signum: int, _frame: object) -> None:
    early.append(signum)


def catch_early() -> None:
    """Remember signals from the start of the process until the command decides what they mean."""
    caught[0] = True
    for sig in SIGNALS:
        signal.signal(sig, _remember)
