"""Signals that arrive before the command decides what they mean (imports only `signal`).

`_entry` installs these handlers first thing; `_signals` takes over from them once the
command knows whether it is a run.
"""

from __future__ import annotations

import signal

# SIGHUP too: a terminal or ssh session closed under a run killed it by the signal, exit 129,
# without a word, its lock and journal left (break36 F3). Under `nohup` it is ignored, and stays so.
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
early: list[int] = []  # signals that came before the command decided what they mean
caught = [False]  # True once catch_early ran: only then does the CLI own the handlers
ignored: set[int] = set()  # of SIGNALS, those the process started ignoring (SIGHUP under nohup, SIGINT under `&`)
# And the standard descriptors the process started without (`>&-`), which _entry opened on
# /dev/null: the CLI says when what it had to print there went nowhere.
CLOSED_AT_START: set[int] = set()


def _remember(signum: int, _frame: object) -> None:
    early.append(signum)


def catch_early() -> None:
    """Remember signals from the start of the process until the command decides what they mean."""
    caught[0] = True
    # nohup ignores SIGHUP: the user asked for the run to outlive its terminal. A shell ignores
    # SIGINT in what it starts with `&` (and `trap '' INT` asks the same): a Ctrl-C meant for the
    # script stopped every background shard, or not, by when it came (out-126 F3). Python keeps
    # an ignored SIGINT so too. SIGTERM, which no shell ignores for a job, stops a run always.
    ignored.update(sig for sig in (signal.SIGHUP, signal.SIGINT) if signal.getsignal(sig) == signal.SIG_IGN)
    for sig in stop_signals():
        signal.signal(sig, _remember)


def stop_signals() -> tuple[int, ...]:
    """The signals that stop a command: SIGNALS, less those ignored when it started."""
    return tuple(sig for sig in SIGNALS if sig not in ignored)
