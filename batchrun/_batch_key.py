"""How batch mode keeps a batch's charge on the key counted, whichever run collects it.

A batch is charged at once, when OpenRouter says nothing of when; the run that collects it may
not be the one that submitted it, and a /key read counts only what was charged since the run
that makes it began. So each batch entry (X.batches.json) carries:

- `key_seen_usd`: at the end of a run it was open in, the part of the key's charge its hold
  explained. The run that collects it counts what its reported cost leaves of that as spent
  (verify14i V12: a batch that under-reported, collected by a later run, was counted by no run).
- `unfollowed`: no /key read has followed it since it was submitted, collected, or taken over
  by a run. A run killed before its end (or before the read after a collection) leaves it set;
  a later run counts the batch's worst case as what it was charged then (H5 in batch mode: $0.78
  on a $0.60 budget after a kill -9 during that read). Safe side: an honest batch is then
  counted above its charge, once, after a crash.

And the state (X.batches.json) carries `key_usage_at_end`, the key's usage when the last run
that left batches open ended, and `key_rise_usd`, what the key rose by since, not yet drawn by
a batch collected: batches are mostly billed while no run is alive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._batch_state import COLLECTED, RELEASED, BatchEntry, BatchState
from ._cut_off import CutOff
from ._dispatch import Dispatcher
from ._ledger import CreditLedger
from ._pricing import FLOAT_NOISE_USD


def note_key_seen(
    state: BatchState,
    reconciliation: dict[str, Any],
    ledger_known: float,
    batches_open: float,
    start_usage: float | None,
    counted: bool = False,
) -> None:
    """At the end of a run: the end-of-run /key read followed every batch (none is `unfollowed`
    now; without it, `counted`: the run counted collected batches' worst cases), and for those
    still open, the part of the key's charge their holds explained (the comparison's
    `explained`, batches first), shared by their worst cases, is kept with each; with the key's
    usage then, for the run that collects them (`seen_between_runs`)."""
    delta = reconciliation.get("key_usage_delta_usd")
    if delta is None:
        # Not read: what is unfollowed stays so, but for a collected batch whose worst case the
        # run counted when it lost the key (`counted`: the ledger's unconfirmed charges).
        for entry in state.entries if counted else []:
            entry.unfollowed = entry.unfollowed and entry.state != COLLECTED
        state.save()
        return
    seen = min(max(delta - ledger_known, 0.0), batches_open)
    still_open = state.open_entries() + state.in_doubt()
    for entry in still_open if batches_open > 0 else []:  # never above its worst case: a share of its hold
        entry.key_seen_usd = min(entry.reserved_usd, entry.key_seen_usd + seen * entry.reserved_usd / batches_open)
    for entry in state.entries:
        entry.unfollowed = False
    state.key_usage_at_end = start_usage + delta if still_open and start_usage is not None else None
    if not still_open:
        state.key_rise_usd = 0.0  # no batch left to have been charged it: another process's
    state.save()


def seen_between_runs(state: BatchState, start_usage: float | None) -> None:
    """At the start of a run: what the key's usage rose by since the last run that left batches
    open ended counts as charged for them, up to what their worst cases leave of what was seen
    already (with or without a limit: a run without one dropped it, and a later one under a limit
    counted the file short: verify14k K6). A batch is billed as OpenRouter runs it, mostly while no run is alive
    (01:00 submit, 07:00 collect), and the collecting run's first /key read already holds it
    (verify14j N2: two batches that under-reported, $0.78 charged, read as $0.0002, exit 0).
    Safe side: another process spending on the key meanwhile is counted too, up to that bound."""
    before, state.key_usage_at_end = state.key_usage_at_end, None
    entries = state.open_entries() + state.in_doubt()
    if before is None or start_usage is None or not entries:
        return
    if start_usage < before - FLOAT_NOISE_USD:
        # A usage that fell since (an edited record, another key): nothing can be measured, so
        # each open batch's worst case stands for what it was charged (verify14k K12).
        for entry in entries:
            entry.key_seen_usd = entry.reserved_usd
        state.save()
        return
    # Kept whole, not shared out: the batch collected first draws on it first, up to its worst
    # case (shared by headroom, a batch collected in between took only its share, and the rest
    # was lost under a still-open batch's cap: verify14k K11, $0.64 counted for $0.78).
    room = sum(max(0.0, entry.reserved_usd - entry.key_seen_usd) for entry in entries)
    state.key_rise_usd = min(state.key_rise_usd + max(start_usage - before, 0.0), room)
    state.save()


def draw_rise(state: BatchState, entry: BatchEntry) -> float:
    """What of the key's rise between runs a batch being collected was charged: up to its
    worst case beyond what was seen for it already."""
    drawn = min(state.key_rise_usd, max(0.0, entry.reserved_usd - entry.key_seen_usd))
    state.key_rise_usd -= drawn
    return drawn


def count_unseen(
    ledger: CreditLedger, dispatch: Dispatcher, notice: Callable[[str], None], entry: BatchEntry, unseen: float
) -> None:
    """Spend on the key for `entry` that no run's reading counted: spent, as key gap."""
    if unseen > FLOAT_NOISE_USD:
        ledger.count_earlier_charge(unseen)
        dispatch.journal_key_gap()
        # A warning, said under --quiet: it is budget a cron run no longer has (verify38 N1).
        notice(
            f"warning: batch {entry.key}: ${unseen:.6f} it may have been charged beyond what it reports "
            "counted as spent"
        )


def settle_earlier(
    state: BatchState, entry: BatchEntry, dispatch: Dispatcher, notice: Callable[[str], None], known: float, held: float
) -> float:
    """A batch an earlier run submitted, collected by this one (`known`, `held`: its charges):
    what the key showed for it while it was open beyond what it reports (`key_seen_usd`, and the
    rise between runs it draws; for a killed run's, follow_earlier) is counted as spent; returns
    that. Its known cost that the charge explains was charged before this run: never set against
    its usage (`before_run`), and journaled for a resume's measure of this run's readings."""
    ledger = dispatch.ledger
    ledger.earlier_batches += known  # maybe billed before this run: _reconcile
    seen = entry.key_seen_usd + draw_rise(state, entry)
    unseen = max(0.0, seen - known - held)
    ledger.before_run += min(seen, known)
    if dispatch.journal is not None:  # before the gap it adds: a kill -9 between the two errs high
        dispatch.journal.charged_before(ledger.charged_before + unseen)
    count_unseen(ledger, dispatch, notice, entry, unseen)
    # Counted: a kill before this batch is marked collected must not count it again when the
    # resume collects it anew (verify14k K2: $0.78 counted for a $0.39 under-report).
    entry.key_seen_usd = 0.0
    state.save()
    return unseen


def follow_earlier(
    state: BatchState, count: Callable[[BatchEntry, float], None], measured: float | None = None
) -> None:
    """At a run's start, `count` what earlier runs left unfollowed on the key: a batch collected
    by a run killed before it read /key (its worst case beyond its reported cost), and a batch
    released (declared never submitted) while the key showed charges its hold explained (they
    were someone's: verify14j N10, gone with the release before).

    `measured`: the most the killed run's readings and the key now show those batches can have
    been charged since its first reading (_killed_run.batches_bound); each is counted up to it,
    never above its worst case, and what is left of it goes to the open ones as a rise between
    runs (`key_rise_usd`, drawn as they are collected). None: their worst cases stand."""
    unfollowed = [entry for entry in state.open_entries() + state.in_doubt() if entry.unfollowed]
    for entry in state.entries:
        if entry.unfollowed and entry.state != COLLECTED:
            if measured is None:
                # Submitted (or in doubt) by a run killed before any read followed it: whatever
                # it was charged then is in no later run's window, so its worst case stands for it
                # (verify14k K1: a clean run in between cleared the flag, $0.78 on $0.60; K5: a
                # release after the kill threw the run's unread charges away).
                entry.key_seen_usd = entry.reserved_usd
            elif entry.state == RELEASED:  # the open ones share what is left (below)
                drawn = min(measured, entry.reserved_usd - entry.key_seen_usd)
                entry.key_seen_usd, measured = entry.key_seen_usd + drawn, measured - drawn
            entry.unfollowed = False  # saved below
        if entry.state == COLLECTED and entry.unfollowed:
            entry.unfollowed = False
            beyond = entry.reserved_usd - (entry.cost_usd or 0.0)
            if measured is not None:
                beyond = min(beyond, measured)
                measured -= beyond
            count(entry, beyond)
            state.save()
        elif entry.state == RELEASED and entry.key_seen_usd > 0:
            count(entry, entry.key_seen_usd)
            entry.key_seen_usd = 0.0
            state.save()
    if measured:  # for the batches that were unfollowed alone: the others' were seen (note_key_seen)
        room = sum(max(0.0, entry.reserved_usd - entry.key_seen_usd) for entry in unfollowed)
        state.key_rise_usd += min(measured, room)
    # This run takes over the batches still open: until its own end read follows them, a kill
    # leaves them unfollowed, for the next run to count at their worst cases (verify14k K9: a
    # run killed while a batch was billed left its charge counted by no run).
    for entry in state.open_entries() + state.in_doubt():
        entry.unfollowed = True
    state.save()


async def follow_collected(
    collected: list[BatchEntry], state: BatchState, cut_off: CutOff, dispatch: Dispatcher, ledger: CreditLedger
) -> None:
    """One /key read after a round of polls, for the batches it collected. Read after each, one
    that hung held every other batch of the round unpolled: answers ready at OpenRouter were
    "still running" at the deadline (out-135 F4)."""
    if not collected:
        return
    try:
        async with cut_off.bound():  # a /key that hangs held the run 376 s (verify29 N1)
            followed = await dispatch.read_key_now()
    except TimeoutError:
        followed = False  # followed by the end of the run's read, or by the next run's
    if followed or ledger.key_lost:  # followed, or its worst case counted (unconfirmed)
        for entry in collected:
            entry.unfollowed = False
        state.save()
