"""What the key was charged for a killed run after its last `/key` read.

A run's reads of the key count what the answers did not report (the key window, _dispatch),
but the answers between its last read and a kill -9 were seen by no read: their records say
what they reported (an under-reporting server: $0), and the next run's first read is its own
baseline, so their charges were counted by no run. Repeated kills (a CI runner's timeout every
night, then a resume) passed the budget by 53-94 % (break36 F8). So each run journals every read
it follows (`key_seen` lines: the key's usage, what its ledger counted then, the worst cases in
flight, and what earlier runs had spent when it began), its first at its start, and a resume
compares the key's usage at its own start with the killed run's readings:

    unseen = (last reading - first) + min(rise since, worst cases in flight then + sent since)
             - what the resume counts for the killed run beyond what it began with

The rise since the last reading is bounded by the worst cases of the attempts that can explain
it, as batch mode bounds a batch's (_batch_key): another process spending on the key between the
runs is counted up to that bound (safe side), never beyond. A usage that fell since (another key)
measures nothing: the bound stands. An honest run's records and held worst cases cover what the
key rose by, so nothing is added.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._files import open_regular
from ._journal_file import journal_loads, journal_usd
from ._ledger import FLOAT_NOISE_USD


@dataclass(frozen=True)
class KeySeen:
    """A killed run's readings of the key, from its journal: its first (at its start) and its last."""

    start_usage: float  # the key's usage when the run began
    start_counted: float  # what its ledger counted then: charges before it began (an earlier kill's)
    usage: float  # the key's usage at its last reading
    reserved: float  # the worst cases in flight then
    prior: float  # what earlier runs of the file had spent when it began
    sent_after: float = 0.0  # the worst cases of the attempts it sent after the last reading


def key_seen_line(usage: float, counted: float, reserved: float, prior: float) -> dict[str, float]:
    return {"key_seen": usage, "counted": counted, "reserved": reserved, "prior": prior}


def _reading(entry: Any) -> tuple[float, float, float, float] | None:
    """The line's figures; None when any cannot be read (a corrupted journal)."""
    figures = [journal_usd(entry.get(name)) for name in ("key_seen", "counted", "reserved", "prior")]
    if any(figure is None for figure in figures):
        return None
    usage, counted, reserved, prior = (figure or 0.0 for figure in figures)
    return usage, counted, reserved, prior


def last_key_seen(journal: Path) -> KeySeen | None:
    """The journal's first and last readable readings, with the worst cases of the attempts sent
    after the last (one whose figure cannot be read counts as the dearest of them); None without one."""
    first: tuple[float, float, float, float] | None = None
    last = first
    after: list[float | None] = []
    with contextlib.suppress(OSError), open_regular(journal) as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break  # torn by the kill: that attempt was never sent
            entry = None
            with contextlib.suppress(ValueError, RecursionError):
                entry = journal_loads(line)
            if not isinstance(entry, dict):
                continue
            if "key_seen" in entry:
                if (reading := _reading(entry)) is not None:
                    first, last, after = first or reading, reading, []
            elif "at" in entry and "row" in entry:  # an attempt about to go out (AttemptJournal.sent)
                after.append(journal_usd(entry.get("usd")))
    if first is None or last is None:
        return None
    dearest = max((usd for usd in after if usd is not None), default=0.0)
    sent_after = sum(dearest if usd is None else usd for usd in after)
    return KeySeen(first[0], first[1], last[0], last[2], first[3], sent_after)


def unseen_charge(seen: KeySeen | None, usage_now: float | None, prior_now: float) -> float:
    """What the key was charged for the killed run that nothing counts: 0 without its readings
    or without the key's usage now. `prior_now`: what the file's earlier runs spent as this run
    counts it (the killed run's records, crash holds and journaled key gap included).

    The key rose by `seen.usage - seen.start_usage` up to its last reading (its reads counted
    what of that the answers did not report, but not what attempts then in flight were charged:
    their worst cases explained it, and they settled at what they reported), and by at most the
    worst cases of the attempts in flight then or sent since after it."""
    if seen is None or usage_now is None:
        return 0.0
    counted = prior_now - seen.prior - seen.start_counted  # what the killed run's own window counted
    bound = seen.reserved + seen.sent_after
    rise = usage_now - seen.usage
    since = bound if rise < -FLOAT_NOISE_USD else min(rise, bound)
    unseen = (seen.usage - seen.start_usage) + since - counted
    return unseen if unseen > FLOAT_NOISE_USD else 0.0
