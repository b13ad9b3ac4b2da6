"""What the key was charged for a killed run that none of its /key reads saw.

A run's reads of the key count what the answers did not report (the key window, _dispatch),
but the answers between its last read and a kill -9 were seen by no read: their records say
what they reported (an under-reporting server: $0), and the next run's first read is its own
baseline, so their charges were counted by no run. Repeated kills (a CI runner's timeout every
night, then a resume) passed the budget by 53-94 % (break36 F8). So each run journals every read
it follows (`key_seen` lines, the first at its start: the key's usage and limit_remaining, what
its ledger counted, the worst cases and attempts in flight, the attempts sent so far, what earlier
runs had spent when it began, and the rate per answer runs killed before it showed), and a resume
compares the key at its own start with them, measuring spend as the window does (key_spend):

    unseen = (spend from the first reading to the last) + min(spend since the last, bound)
             - what the resume counts for the killed run beyond what it began with

The bound on the rise since the last reading is what the attempts then in flight or sent after it
can have cost: their worst cases, or as much as each attempt cost the key on average up to that
reading when that is more (a price list that understates the charge: break37 F2). Another process
spending on the key between the runs is counted up to that bound (safe side), never beyond: a
nightly resume is not charged a day of another job's spend. Readings that do not hold together
(the usage fell since, or between them: another key, an edited journal) measure nothing: what the
killed run had counted by its last reading stands, with the worst cases since. An honest run's
records and held worst cases already cover what the key rose by: nothing is added. A resume that
cannot read the key's usage carries the readings on in its own journal (and summary), for the next
one. A run that stopped because /key stopped answering keeps its readings in its summary with the
worst cases it counted unconfirmed, which a resume releases down to what the key shows
(released_charge).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ._files import open_regular
from ._journal_file import journal_loads, journal_usd
from ._pricing import FLOAT_NOISE_USD, usd_apart
from ._reconcile import KeyStart, key_spend

_FIGURES = ("key_seen", "counted", "reserved", "prior", "in_flight", "sent")
_CARRIED = ("after_usd", "after_n", "unconfirmed", "before")  # 0 when absent: on a summary's last reading only
_OPTIONAL = ("remaining", "rate", "limit")  # None when absent or unreadable


@dataclass(frozen=True)
class KeySeen:
    """A killed run's readings of the key, from its journal: its first (at its start) and its last."""

    start_usage: float  # the key's usage when the run began
    start_counted: float  # what its ledger counted then: charges before it began (an earlier kill's)
    prior: float  # what earlier runs of the file had spent when it began
    usage: float  # the key's usage at its last reading
    counted: float  # what its ledger counted then
    reserved: float  # the worst cases in flight then
    in_flight: float  # the attempts in flight then
    sent: float  # the attempts it had sent by then
    sent_after: float = 0.0  # the worst cases of the attempts sent after the last reading
    after_n: float = 0.0  # how many those were
    rate: float | None = None  # what an answer cost the key, as the runs killed before it showed (known_rate)
    # The key's limit_remaining at the first and last readings: its fall is spend too (_reconcile.key_spend).
    start_remaining: float | None = None
    remaining: float | None = None
    start_limit: float | None = None  # the key's `limit` at those readings (`rebased`)
    limit: float | None = None
    unconfirmed: float = 0.0  # worst cases the run counted as spent when its key could not be followed
    # What the run counted that the key showed charged before its first reading: batches of earlier
    # runs it collected (their charge seen then, and their known costs that charge explains). In
    # what the file counts, not in the key's rise: the release took it for worst cases the key never
    # charged, below the bill (verify41 F-1).
    before: float = 0.0
    # `unconfirmed` came from the run's own journal (it was killed after losing the key): its key
    # gap lines hold them, not a summary (verify41 F-5: never released, 36x the bill).
    unconfirmed_in_journal: bool = False

    def lines(self) -> list[dict[str, float]]:
        """The two readings as journal lines, for a run that carries them on (it could not read
        the key's usage: no reading of its own replaces them)."""
        first = key_seen_line(
            self.start_usage,
            self.start_counted,
            0.0,
            self.prior,
            0,
            0,
            self.rate,
            self.start_remaining,
            self.start_limit,
        )
        last = key_seen_line(
            self.usage,
            self.counted,
            self.reserved,
            self.prior,
            self.in_flight,
            self.sent,
            self.rate,
            self.remaining,
            self.limit,
        )
        after = {"after_usd": self.sent_after, "after_n": self.after_n}
        more = {name: value for name, value in (("unconfirmed", self.unconfirmed), ("before", self.before)) if value}
        return [first, {**last, **after, **more}]

    def rebased(self, limit_now: float | None) -> KeySeen:
        """The readings' limit_remaining as the key's `limit` now would show it: a limit lowered
        since the killed run read it ($100 -> $90) was $9.99 charged, and every resume refused,
        exit 5 (out-162 F3). Readings without a limit, or a key without one now, stay as they were."""
        if limit_now is None:
            return self

        def moved(remaining: float | None, limit: float | None) -> float | None:
            return remaining if remaining is None or limit is None else remaining + limit_now - limit

        start, last = moved(self.start_remaining, self.start_limit), moved(self.remaining, self.limit)
        return replace(self, start_remaining=start, remaining=last, start_limit=limit_now, limit=limit_now)

    def spend_since(self, usage: float, remaining: float | None) -> float:
        """What the key was charged from the last reading to (`usage`, `remaining`)."""
        return key_spend(self.usage, usage, self.remaining, remaining)

    def counted_since_start(self, prior_now: float) -> float:
        """What the file counts for the run (and runs after it) beyond what it began with, given
        what earlier runs spent as a resume counts it now (`prior_now`)."""
        return prior_now - self.prior - self.start_counted - self.before

    @property
    def spend_during(self) -> float:
        """What the key was charged from the first reading to the last."""
        return key_spend(self.start_usage, self.usage, self.start_remaining, self.remaining)


def key_seen_line(
    usage: float,
    counted: float,
    reserved: float,
    prior: float,
    in_flight: float,
    sent: float,
    rate: float | None,
    remaining: float | None,
    limit: float | None = None,
) -> dict[str, float]:
    line = {
        "key_seen": usage,
        # The ledger's sums of money, less what was released, may end a float's residue below zero.
        "counted": max(0.0, counted),
        "reserved": max(0.0, reserved),
        "prior": prior,
        "in_flight": in_flight,
        "sent": sent,
    }
    # Absent: no run before it showed what an answer costs the key; a key without a limit.
    line.update(
        {
            name: value
            for name, value in (("rate", rate), ("remaining", remaining), ("limit", limit))
            if value is not None
        }
    )
    return line


def _reading(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The line's figures by name (_FIGURES, _CARRIED, _OPTIONAL); None when one of _FIGURES or
    _CARRIED cannot be read."""
    figures = {name: journal_usd(entry.get(name)) for name in _FIGURES}
    figures.update({name: journal_usd(entry.get(name, 0.0)) for name in _CARRIED})
    if any(figure is None for figure in figures.values()):
        return None
    return figures | {name: journal_usd(entry[name]) if name in entry else None for name in _OPTIONAL}


def last_key_seen(journal: Path, warn: Callable[[str], None] | None = None) -> KeySeen | None:
    """The journal's first and last readable readings, with the attempts sent after the last
    (one whose worst case cannot be read counts as the dearest of them); None without one. A
    reading that cannot be read goes to `warn` and is passed over."""
    first: dict[str, Any] | None = None
    last = first
    after: list[float | None] = []
    unreadable = 0
    before = 0.0  # the last `charged_before` line's (AttemptJournal.charged_before)
    unconfirmed = 0.0  # the last `unconfirmed` line's (AttemptJournal.unconfirmed)
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
                if (reading := _reading(entry)) is None:
                    unreadable += 1
                else:
                    first, last, after = first or reading, reading, []
            elif "at" in entry and "row" in entry:  # an attempt about to go out (AttemptJournal.sent)
                after.append(journal_usd(entry.get("usd")))
            elif "charged_before" in entry:  # cumulative: an unreadable or lower line takes nothing back
                before = max(before, journal_usd(entry["charged_before"]) or 0.0)
            elif "unconfirmed" in entry and len(entry) == 1:
                unconfirmed = journal_usd(entry["unconfirmed"]) or 0.0
    if unreadable and warn is not None:
        warn(
            f"{journal}: {unreadable} key_seen line(s) could not be read: the key's charge for the killed run "
            "is measured from the readings that could"
        )
    if first is None or last is None:
        return None
    dearest = max((usd for usd in after if usd is not None), default=0.0)
    seen = _seen(first, last, sum(dearest if usd is None else usd for usd in after), len(after), before)
    return replace(seen, unconfirmed=unconfirmed, unconfirmed_in_journal=True) if unconfirmed else seen


def _seen(first: dict[str, Any], last: dict[str, Any], after_usd: float, after_n: int, before: float = 0.0) -> KeySeen:
    return KeySeen(
        start_usage=first["key_seen"],
        start_counted=first["counted"],
        prior=first["prior"],
        usage=last["key_seen"],
        counted=last["counted"],
        reserved=last["reserved"],
        in_flight=last["in_flight"],
        sent=last["sent"],
        sent_after=last["after_usd"] + after_usd,
        after_n=last["after_n"] + after_n,
        rate=first["rate"],
        start_remaining=first["remaining"],
        remaining=last["remaining"],
        start_limit=first["limit"],
        limit=last["limit"],
        unconfirmed=last["unconfirmed"],
        before=max(last["before"], before),
    )


def summary_key_seen(summary: Mapping[str, Any]) -> KeySeen | None:
    """The readings a run that could not read the key carried on in its summary (`key_readings`:
    KeySeen.lines, its own attempts counted after them); None without them, or unreadable."""
    lines = summary.get("key_readings")
    if not isinstance(lines, list) or len(lines) != 2 or not all(isinstance(line, dict) for line in lines):
        return None
    first, last = (_reading(line) for line in lines)
    return None if first is None or last is None else _seen(first, last, 0.0, 0)


def readings_problem(seen: KeySeen, usage_now: float) -> str | None:
    """Why the readings cannot measure the killed run's charge (they do not hold together)."""
    if seen.usage < seen.start_usage - FLOAT_NOISE_USD:
        before, after = usd_apart(seen.start_usage, seen.usage)
        return f"its readings of the key's usage went down (${before} -> ${after})"
    if usage_now < seen.usage - FLOAT_NOISE_USD:
        before, after = usd_apart(seen.usage, usage_now)
        return f"the key's usage is below its last reading (${before} -> ${after}): another key?"
    return None


def known_rate(seen: KeySeen | None) -> float | None:
    """What an answer of the killed run cost the key on average up to its last reading (its
    spend over the answers in by then), else what the runs killed before it showed; None when
    nothing did. A resume carries it on (AttemptJournal), for a kill of its own before a read."""
    if seen is None:
        return None
    answered = seen.sent - seen.in_flight
    return seen.spend_during / answered if answered >= 1 else seen.rate


def carried_rate(seen: KeySeen | None, usage_now: float | None) -> float | None:
    """The rate a resume carries on (known_rate); the one carried to the killed run when its
    readings do not hold together."""
    if seen is not None and usage_now is not None and readings_problem(seen, usage_now) is not None:
        return seen.rate
    return known_rate(seen)


def unseen_charge(
    seen: KeySeen | None, usage_now: float | None, prior_now: float, remaining_now: float | None = None
) -> float:
    """What the key was charged for the killed run that nothing counts: 0 without its readings
    or without the key's usage now (`remaining_now`: its limit_remaining, whose fall is spend
    too). `prior_now`: what the file's earlier runs spent as this run counts it (the killed
    run's records, crash holds and journaled key gap included).

    Up to its last reading the key was charged `seen.spend_during`: its reads counted what of that
    the answers did not report, but not what attempts then in flight were charged (their worst
    cases explained it, and they settled at what they reported)."""
    if seen is None or usage_now is None:
        return 0.0
    counted = seen.counted_since_start(prior_now)
    worst_since = seen.reserved + seen.sent_after
    if readings_problem(seen, usage_now) is not None:
        during, since = seen.counted - seen.start_counted, worst_since
    else:
        during, rise = seen.spend_during, seen.spend_since(usage_now, remaining_now)
        # The rate holds what its reads caught beyond the answers' costs (a lying price list, or
        # another process on the key then): each attempt since is taken to cost as much. Killed
        # before any read showed a rate (and after no run that did), the worst cases bound it: a
        # price list that understates the charge then loses what its first requests cost beyond
        # it, as a run's own first requests are in no window either; the whole rise instead
        # charged a run killed in its first second with another job's day of spend on the key,
        # for good (break38 F2).
        rate = known_rate(seen) or 0.0
        since = min(rise, max(worst_since, rate * (seen.in_flight + seen.after_n)))
    unseen = during + since - counted
    return unseen if unseen > FLOAT_NOISE_USD else 0.0


def released_charge(
    seen: KeySeen | None, usage_now: float | None, prior_now: float, remaining_now: float | None = None
) -> float:
    """What of the worst cases a run counted as spent when its key could not be followed any
    more (`seen.unconfirmed`: a /key outage stops a run under a limit) the key shows it never
    charged: what the file counts for that run beyond all the key rose by since its first
    reading, up to those worst cases. A short /key outage kept a fifth of a budget counted for
    good (break38 F4). Nothing when the readings do not hold together; another process's spend in
    the rise only makes it less."""
    if seen is None or usage_now is None or seen.unconfirmed <= 0 or readings_problem(seen, usage_now):
        return 0.0
    counted = seen.counted_since_start(prior_now)
    charged = seen.spend_during + seen.spend_since(usage_now, remaining_now)
    return max(0.0, min(seen.unconfirmed, counted - charged))


def batches_bound(
    seen: KeySeen | None, usage_now: float | None, unseen: float, remaining_now: float | None = None
) -> float | None:
    """The most the batches a killed run left unfollowed (submitted, taken over or collected with no
    /key read after) can have been charged from its first reading to now: all the key rose by, less
    what `unseen_charge` counted of it already. Not less what the file's records count: a batch
    collected then may have been charged before that first reading. None when the readings cannot
    measure (none, no usage now, or they do not hold together): their worst cases stand. They
    counted the worst cases whatever the key showed: $0.026 for $0.0006 billed (verify38 N1)."""
    if seen is None or usage_now is None or readings_problem(seen, usage_now) is not None:
        return None
    return max(0.0, seen.spend_during + seen.spend_since(usage_now, remaining_now) - unseen)


def killed_run_charge(
    seen: KeySeen | None, key: KeyStart, prior: float, output: Path, notice: Callable[[str], None]
) -> float:
    """The key's charge for a killed run that none of its reads saw: spent before this run began, as the
    killed run's records are; said, as what makes the readings useless is."""
    if seen is not None and key.usage is not None and (problem := readings_problem(seen, key.usage)) is not None:
        notice(f"warning: {output}: an earlier run's key readings measure nothing ({problem}): worst cases count")
    unseen = unseen_charge(seen, key.usage, prior, key.remaining)
    if unseen > 0:
        notice(
            f"warning: {output}: the key was charged ${unseen:.6f} for an earlier run after its last /key read "
            "(a kill, or a /key that stopped answering) beyond what its records count: counted as spent (key_gap_usd)"
        )
    return unseen
