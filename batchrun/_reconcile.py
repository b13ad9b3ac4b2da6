"""End-of-run reconciliation: what the ledger counted against what the key was charged.

Every run reads the key's usage (`GET /key`, `usage` plus `byok_usage` when the key's
limit includes BYOK spend) before its first request and after its last, and compares the
difference with the ledger. Attempts whose cost stayed unknown (abandoned without a
generation id, or whose lookup never answered) are explained by the difference when it
lies between the known charges and the known charges plus their held worst cases.
Anything outside that range by more than a cent is a warning: another process spending
on the same key, or charges a reply did not report. The docs do not say how quickly
`/key` usage follows a charge; a lag would show here as a shortfall.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ._key_periods import MISMATCH_USD, amounts, period_field, period_rise, period_usages, usages_of
from ._pricing import DOUBTED_TIMES, FLOAT_NOISE_USD, money

if TYPE_CHECKING:  # annotations only: `validate` loads no HTTP client nor event loop through them
    from ._charges import ChargeBook
    from ._ledger import CreditLedger


def key_usage(info: dict[str, Any] | None) -> float | None:
    """The key's usage as its limit counts it: `usage`, plus `byok_usage` ("Total external BYOK
    usage (in USD) for the API key", openapi /key) when `include_byok_in_limit` is true (break14c
    N3: it was dropped, and a key charged mostly as BYOK spent 4.8x the budget unseen). A flag
    that is not a boolean counts `byok_usage` too (more spend seen only stops a run earlier).
    None when a part the limit counts is not a finite non-negative number (parse_key_data
    checked the money fields): then the usage cannot be followed."""
    usage = money(info.get("usage")) if info else None
    if info is None or usage is None:
        return None
    counted = info.get("include_byok_in_limit")
    byok = money(info.get("byok_usage"))
    if counted is not None and counted is not False and byok is None:  # a flag to doubt counts it (out-162 F4)
        return None
    if counted is not False and byok is not None:
        usage += byok
    return usage


def _totals(info: dict[str, Any] | None) -> tuple[tuple[str, float], ...]:
    """The key's running totals that read as money: `usage` and `byok_usage` ("Total external
    BYOK usage", openapi /key), which only ever rise."""
    return amounts(info, ("usage", "byok_usage"))


def byok_outside_limit(info: dict[str, Any] | None) -> float | None:
    """`byok_usage` of a key whose limit does not include BYOK spend (`include_byok_in_limit`
    false): not in key_usage, yet the ledger counts a BYOK answer's upstream cost, so the end-of-run
    comparison adds its rise (break14c N16: honest BYOK answers showed as "$-0.2376 unexplained").
    None for any other key."""
    if not info or info.get("include_byok_in_limit") is not False:
        return None
    return money(info.get("byok_usage"))


@dataclass(frozen=True)
class KeyStart:
    """The key as pre-flight read it: what its spend during the run is measured from."""

    usage: float | None = None  # as its limit counts it (key_usage); None: not followed
    unread: str | None = None  # why /key answered without a usable usage
    remaining: float | None = None  # its limit_remaining (key_spend)
    byok_outside: float | None = None  # byok_usage a limit leaves out (byok_outside_limit)
    totals: tuple[tuple[str, float], ...] = ()  # each running total as it was: never falls
    byok_in_limit: Any = None  # include_byok_in_limit as it was: which totals the limit counts
    limit: float | None = None  # its `limit` as it was: a limit changed under the run is no spend
    reset: Any = None  # its `limit_reset` as it was: what `limit_remaining` counts
    # The readings since, for what the key was charged (`spend`): the last usage followed and the
    # rises up to it, added (a fall within the tolerance takes none back); and each period usage's
    # last value and rises, counted from zero again after its reset.
    last: float | None = None
    climbed: float = 0.0
    periods: tuple[tuple[str, float, float], ...] = ()  # (name, last value, rises since the start)
    # limit_remaining's falls, added from read to read: what a changed limit moved it by taken out,
    # and none across a change of limit_reset, after which it counts on (out-162 F2: read from the
    # start alone, one change switched it off, and $2.00 was billed on $0.10, exit 0).
    fallen: float = 0.0
    at: tuple[float | None, float | None, Any] | None = None  # (limit_remaining, limit, limit_reset) last read
    usages: tuple[tuple[str, float], ...] = ()  # `usage` and the period usages at the last reading

    @classmethod
    def of(cls, info: dict[str, Any] | None) -> KeyStart:
        usage = key_usage(info)
        unread = "its usage is missing, negative or not a number" if info is not None and usage is None else None
        flag = info.get("include_byok_in_limit") if info else None
        remaining, totals, byok = key_remaining(info), _totals(info), byok_outside_limit(info)
        limit, reset = money(info.get("limit")) if info else None, info.get("limit_reset") if info else None
        periods = tuple((name, value, 0.0) for name, value in period_usages(info))
        return cls(usage, unread, remaining, byok, totals, flag, limit, reset, periods=periods, usages=usages_of(info))

    def read(self, info: dict[str, Any] | None, usage: float) -> KeyStart:
        """This start with a reading followed since (`usage` as `followed` gave it) taken in. The
        rises add up: a usage that falls back within the tolerance, once or each time, takes none
        of them back (a sawtooth of 0.8-cent falls: $0.080 billed on $0.01, spent $0.0076: out-159
        F1), nor does a period usage's reset (out-159 F2)."""
        now = dict(period_usages(info))
        periods = tuple(
            (name, now[name], rise + period_rise(last, now[name])) if name in now else (name, last, rise)
            for name, last, rise in self.periods
        )
        at = (
            key_remaining(info),
            money(info.get("limit")) if info else None,
            info.get("limit_reset") if info else None,
        )
        fallen, usages = self._fallen(info), usages_of(info)
        return replace(
            self, last=usage, climbed=self._climbed(usage), periods=periods, fallen=fallen, at=at, usages=usages
        )

    def _fallen(self, info: dict[str, Any] | None) -> float:
        remaining, limit, reset = self.at or (self.remaining, self.limit, self.reset)
        now = key_remaining(info)
        if remaining is None or now is None:
            return self.fallen
        if (limit_now := money(info.get("limit")) if info else None) is not None and limit is not None:
            remaining += limit_now - limit  # a lowered limit is no spend (out-159 F3)
        if (reset_now := info.get("limit_reset") if info else None) != reset:
            # limit_remaining counts another period's usage now: the last reading's, taken on that
            # period (daily -> null was $5 of spend: out-159 F3). Ignored, a limit_reset flipped at
            # every read hid all spend, 5x the budget (out-164 F1); unknown, the fall counts.
            before = dict(self.usages)
            old, new = before.get(period_field(reset)), before.get(period_field(reset_now))
            remaining += 0.0 if old is None or new is None else old - new
        return self.fallen + max(0.0, remaining - now)

    def _climbed(self, usage: float) -> float:
        assert self.usage is not None
        return self.climbed + max(0.0, usage - (self.usage if self.last is None else self.last))

    def followed(self, info: dict[str, Any] | None, seen: KeyStart | None = None) -> tuple[float | None, str | None]:
        """The key's usage now, measured like the ledger's spend, or None and why it cannot be
        followed (missing, not a number, or gone down: below the start, or below `seen`, a read
        since: 0 -> 1.00 -> 0.50 was believed, break25 F1). The ledger counts a BYOK answer's
        upstream cost, so a rise of `byok_usage` the key's limit leaves out is added (break14c N16
        at the end of the run; break14e E5: the key window left it out, and an answer
        under-reporting its upstream cost spent 4.8x the budget)."""
        if seen is not None and seen is not self and (fell := seen.followed(info)[1]) is not None:
            return key_usage(info), fell
        usage = key_usage(info)
        if usage is None:
            return None, "/key answered a usage that is missing or not a number"
        if self.usage is not None and usage < self.usage - MISMATCH_USD:
            return usage, f"its usage went down (${self.usage:.6f} -> ${usage:.6f}), which usage cannot do"
        # Each running total on its own: a `byok_usage` falling by what `usage` rose kept their
        # sum flat, and the key window saw none of the charges ($2.40 on $0.50: break14h H3).
        now = dict(_totals(info))
        for name, before in self.totals:
            if name not in now:
                # Its rise is what the window follows (verify14i V4: a byok_usage turned null
                # mid-run hid every BYOK charge, $2.40 on $0.50, exit 0).
                return usage, f"its {name} is no longer a number"
            if now[name] < before - MISMATCH_USD:
                return (
                    usage,
                    f"its {name} went down (${before:.6f} -> ${now[name]:.6f}), which a running total cannot do",
                )
        flag = info.get("include_byok_in_limit") if info else None
        if flag != self.byok_in_limit:
            # What the usage counts changed under the run: a flag turned false mid-run left the
            # rise of byok_usage unfollowed (verify14i V4).
            return usage, f"its include_byok_in_limit changed ({self.byok_in_limit!r} -> {flag!r})"
        byok = byok_outside_limit(info)
        if self.byok_outside is not None and byok is not None and byok >= self.byok_outside:
            usage += byok - self.byok_outside
        return usage, None

    def byok_rise(self, info: dict[str, Any] | None) -> float | None:
        """How much the key's `byok_usage` rose since the start (None: it is not a number, then
        or now): BYOK spend the account's balance never pays (_limit_parts)."""
        before, now = dict(self.totals).get("byok_usage"), dict(_totals(info)).get("byok_usage")
        return None if before is None or now is None else max(0.0, now - before)

    def spend(self, usage: float, info: dict[str, Any] | None) -> float:
        """What the key was charged since the start, given its usage now (`followed`): its rises
        since the start, added over the readings (a start read high within the tolerance hid that
        much: out-156 F2); or the falls of its `limit_remaining` when larger (`_fallen`: spend the
        usage fields leave out); or a period usage's rises, across its resets, when larger (a
        `usage` held still while usage_daily rose with every charge: out-156 F3)."""
        now = dict(period_usages(info))
        periods = (rise + period_rise(last, now[name]) for name, last, rise in self.periods if name in now)
        return max(self._climbed(usage), self._fallen(info), *periods)


def key_remaining(info: dict[str, Any] | None) -> float | None:
    """The key's `limit_remaining` (None: no per-key limit, or no /key)."""
    remaining = info.get("limit_remaining") if info else None
    return float(remaining) if isinstance(remaining, (int, float)) and not isinstance(remaining, bool) else None


def key_spend(start_usage: float, usage: float, start_remaining: float | None, remaining: float | None) -> float:
    """What the key was charged since the start, as far as /key shows it: the rise of its usage,
    or the fall of its `limit_remaining` when that is larger (break14c N3: a limit that counts
    spend the usage fields leave out, BYOK under a flag that says otherwise, shows there). A
    rise of `limit_remaining` (a reset, a raised limit) shows nothing; a lowered limit shows as
    spend, which only stops a run earlier."""
    spend = usage - start_usage
    if start_remaining is not None and remaining is not None:
        spend = max(spend, start_remaining - remaining)
    return spend


def add_warning(reconciliation: dict[str, Any], words: str) -> None:
    """`words` said in the reconciliation's one warning, after what it says already."""
    said = reconciliation.get("warning")
    reconciliation["warning"] = f"{said}; {words}" if said else words


def reconcile(
    start: float | None,
    end: float | None,
    ledger: CreditLedger,
    book: ChargeBook,
    unread: str | None = None,
    start_unread: str | None = None,
) -> dict[str, Any]:
    """The comparison; `unread` says why the end-of-run /key read failed, `start_unread` why
    the start-up one did (either way, not reconciled)."""
    known, held = ledger.spent, ledger.held
    unresolved = len(book.unresolved)
    out: dict[str, Any] = {
        "key_usage_delta_usd": None,
        "ledger_known_usd": round(known, 8),
        "unknown_cost_attempts": unresolved,
        # as spent_usd is: held worst cases carry many digits
        "unknown_cost_held_usd": round(max(0.0, held - ledger.batches_open), 12),
        "unattributed_usd": None,
        "difference_usd": None,
        "lookups": book.lookups,
        # Looked up after the row was written with cost "unknown": the row is written again (_late_costs).
        "resolved_after_record_usd": round(book.resolved_after_record, 8),
        "resolved_after_record_attempts": book.resolved_after_record_attempts,
        # The key's usage beyond what the ledger counted, seen at a refresh and counted as spent.
        "counted_from_key_usd": round(ledger.from_key, 8),
        # /key reads the key window asked for (_ledger): before a reservation it could not hold.
        "key_window_reads": ledger.key_reads,
        # Reservations of batches still running at OpenRouter, or in doubt (maybe running): they
        # may be billed already, so they are held like attempts of unknown cost (break-14c N2).
        "open_batches_held_usd": round(ledger.batches_open, 12),
        # Known charges of batches submitted by an earlier run and collected by this one.
        "earlier_batches_usd": round(ledger.earlier_batches, 8),
        # Charges above their attempt's worst case (reported or looked up): the bound did not hold.
        "above_worst_case_attempts": book.above_worst,
        "above_worst_case_usd": round(book.above_worst_usd, 8),
        "reused_generation_ids": book.reused_ids,
        # Reported charges past DOUBTED_TIMES their worst case, looked up before they were counted.
        "doubted_reported_attempts": book.doubted,
        "doubted_looked_up_attempts": book.doubted_looked_up,
        "doubted_unasked_attempts": book.doubted_unasked,
        "warning": None,
    }
    _compare(out, start, end, ledger, book, unread, start_unread)
    if book.reused_ids:
        reused = (
            f"{book.reused_ids} repl(ies) carried a generation id an earlier attempt had: their costs were "
            "not looked up by it (another row's), so they are estimated or held"
        )
        add_warning(out, reused)
    if book.doubted:
        # Said as it was: "the others are counted as reported" when /generation gave every one (out-115
        # F2), "looked up first" of replies never asked (out-116 F5).
        unasked, found = book.doubted_unasked, book.doubted_looked_up
        missing = book.doubted - found - unasked
        told = [f"/generation gave {found}"] if found else []
        told += [f"{missing} not found there"] if missing else []
        told += [f"{unasked} not asked (no generation id, or /generation not answering)"] if unasked else []
        doubted = (
            f"{book.doubted} repl(ies) reported a charge over {DOUBTED_TIMES}x their worst case (e.g. "
            f"{book.doubted_example}): not taken on their word; {', '.join(told)}"
            + (": the unconfirmed counted as reported, and looked up again by a resume" if found < book.doubted else "")
        )
        add_warning(out, doubted)
    if book.above_worst:
        above = (
            f"{book.above_worst} attempt(s) cost more than their worst case, ${book.above_worst_usd:.6f} beyond it "
            f"in all (e.g. {book.above_worst_example}): a reply or lookup that lies, or a charge the worst "
            "case did not cover; counted as charged"
        )
        add_warning(out, above)
    return out


def _compare(
    out: dict[str, Any],
    start: float | None,
    end: float | None,
    ledger: CreditLedger,
    book: ChargeBook,
    unread: str | None,
    start_unread: str | None,
) -> None:
    """The key's usage against the ledger, into `out` (its warning, when they disagree)."""
    known, held = ledger.spent - ledger.before_run, ledger.held  # before_run: not in this run's usage
    unresolved = len(book.unresolved)
    unknown = _unknown_parts(unresolved, ledger.batches_open)
    held_note = f"; {unknown} stay held at up to ${held:.6f}" if unknown else ""
    if start is None and start_unread is not None:
        # /key answered at the start without a usable usage: no baseline, so neither this
        # comparison nor the refreshes' check for under-reported costs could be made.
        out["warning"] = (
            f"not reconciled: the key's usage could not be read at the start of the run ({start_unread}); "
            "costs the answers under-reported could not be caught during the run" + held_note
        )
        return
    if start is not None and end is None:
        # The key was read at the start, so the run meant to reconcile: say it could not.
        out["warning"] = (
            f"not reconciled: the key's usage could not be read at the end of the run ({unread or 'unread'})"
            + held_note
        )
        return
    if start is None or end is None:
        return  # no /key: nothing to compare with
    if end < start - FLOAT_NOISE_USD:
        # Usage never goes down: a /key that says so is not this key's true usage (a lie, or
        # another key), so nothing it said during the run could be checked (break-14b m5). By
        # any amount: a fall under a cent was said as "charged $-0.0080" (break44 F2).
        out["key_usage_delta_usd"] = round(end - start, 8)
        out["warning"] = (
            f"not reconciled: the key's usage went down during the run (${start:.6f} -> ${end:.6f}), which "
            "usage cannot do; /key is not to be believed, so under-reported costs could not be caught" + held_note
        )
        return
    delta = end - start
    extra = delta - known  # charged beyond the charges we know of
    # `held` includes the reservations of batches still open or in doubt (batch mode, exit 10):
    # they may be billed already, up to their worst cases.
    explained = min(max(extra, 0.0), held)
    difference = extra - explained
    if difference < 0:
        # Batches an earlier run submitted may have been billed then (the quickstart does not
        # say when a batch is charged): their known cost need not be in this run's usage.
        difference = min(0.0, difference + ledger.earlier_batches)
    out.update(
        key_usage_delta_usd=round(delta, 8),
        unattributed_usd=round(explained, 8) if unknown else None,
        difference_usd=round(difference, 8),
    )
    if abs(difference) > MISMATCH_USD:
        # Beyond the ledger: charges it never saw. Below it: replies that said they cost more than
        # was charged (counted as said, so the budget erred safe), not "$-999999.9990 unexplained"
        # with the causes of the other case (break34 m2).
        why = (
            # Or this run's own answers whose records could not be written (exit 11: out-177 F2).
            f"${difference:.6f} unexplained (another process using the key, unreported charges, or answers "
            "whose records could not be written)"
            if difference > 0
            # Or our own estimates (upper bounds) above the charges (verify69 F10: blamed on the replies).
            else f"${-difference:.6f} less than counted ({_over_counted(book)}, counted as said)"
        )
        if difference > 0 and ledger.from_key >= difference - MISMATCH_USD:
            # The key window counted it already: not missing from what is spent (verify39).
            why = (
                f"${difference:.6f} beyond the answers' reported costs, counted as spent from the key's usage "
                "(answers that under-reported, answers whose records could not be written, or another process "
                "using the key)"
            )
        out["warning"] = (
            f"the key was charged ${delta:.6f} during the run but the ledger counted ${known:.6f}"
            + (f" (+ up to ${held:.6f} for {unknown})" if unknown else "")
            + f": {why}"
        )


def _over_counted(book: ChargeBook) -> str:
    if book.estimated_count:
        return "costs estimated from tokens above their charges, or replies that over-reported their cost"
    return "replies that over-reported their cost"


def _unknown_parts(attempts: int, batches_held: float) -> str:
    """What the held worst cases are for: "2 attempt(s) of unknown cost and batches open or in doubt"."""
    parts = [f"{attempts} attempt(s) of unknown cost"] if attempts else []
    if batches_held > 0:
        parts.append("batches open or in doubt")
    return " and ".join(parts)


def key_read_confirms(reconciliation: dict[str, Any]) -> bool:
    """Whether the end-of-run /key read confirmed what the answers since the last read cost: it
    was read, and did not go down. A usage that went down is "not to be believed", yet those
    answers kept their reported cost: 1/100 of the bill counted as spent (verify64 F6)."""
    delta = reconciliation.get("key_usage_delta_usd")
    return isinstance(delta, (int, float)) and delta >= 0


def usage_span(start: KeyStart, reconciliation: dict[str, Any]) -> tuple[float | None, float | None]:
    """The key's usage at the run's first and last readings, where both were read: merge tells
    by them which runs overlapped, whatever the clocks said (break46 F3)."""
    delta = reconciliation.get("key_usage_delta_usd")
    if start.usage is None or not isinstance(delta, (int, float)) or delta < 0:
        return None, None
    # The rise counts BYOK usage the key's limit leaves out (KeyStart.followed): so does the start,
    # or the next run's start fell inside this run's span and merge took them as at once (out-123 F1).
    base = start.usage + (start.byok_outside or 0.0)
    return round(base, 8), round(base + delta, 8)
