"""What a batch-mode run says about its batches in the summary, beside the usual counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._batch_polls import PollFailures
from ._batch_state import BatchEntry, BatchState
from ._ledger import CreditLedger
from ._options import Notice
from ._status import StopReason
from ._worker_pool import Runner


@dataclass
class BatchOutcome:
    """What the summary says about batches, beside the usual counts."""

    submitted: int = 0  # batches submitted by this run
    collected: int = 0  # batches collected by this run
    open: int = 0  # still running at the end of this run
    open_rows: int = 0
    in_doubt: list[str] = field(default_factory=list)  # keys of intents whose submission is unknown
    sync_rows: int = 0  # rows this run sent through sync mode instead
    held_usd: float = 0.0  # worst cases of the batches open or in doubt at the end, counted as spent

    def as_json(self, state_file: str) -> dict[str, Any]:
        return {
            "state_file": state_file,
            "submitted": self.submitted,
            "collected": self.collected,
            "open": self.open,
            "open_rows": self.open_rows,
            "in_doubt": self.in_doubt,
            "sync_rows": self.sync_rows,
            "held_usd": round(self.held_usd, 12),
        }

    def take_over(self, state: BatchState, ledger: CreditLedger, notice: Notice) -> set[str]:
        """At a run's start, the batches an earlier run left open or in doubt: held, said; their keys."""
        for entry in state.open_entries() + state.in_doubt():
            # Submitted by an earlier run (or maybe submitted: in doubt), not yet settled: it may
            # be running and billing, so its worst case counts as spent until it is collected,
            # adopted or released (break-14c N2: an in-doubt batch was not counted on resume).
            ledger.hold(entry.reserved_usd)
        self.in_doubt = [e.key for e in state.in_doubt()]
        if self.in_doubt:
            notice(
                f"warning: batch(es) {', '.join(self.in_doubt)}: their submission is unknown (a crash, or an answer "
                "that named no batch of its own); their rows are not submitted again (see `batchrun batches list`)"
            )
        return {e.key for e in state.open_entries() + state.in_doubt()}

    def count_left(self, state: BatchState) -> tuple[list[BatchEntry], list[BatchEntry]]:
        """The batches still open, and those in doubt, counted for the summary."""
        open_entries, doubt = state.open_entries(), state.in_doubt()
        self.open = len(open_entries)
        self.open_rows = sum(len(e.rows) for e in open_entries + doubt)
        self.held_usd = sum(e.reserved_usd for e in open_entries + doubt)
        self.in_doubt = [e.key for e in doubt]
        return open_entries, doubt

    def at_end(self, state: BatchState, polls: PollFailures, runner: Runner, notice: Notice) -> None:
        """Once the polling is over: the batches left open or in doubt, said, and the run's stop
        "submitted" (exit 10) if they are and nothing else stopped it."""
        open_entries, doubt = self.count_left(state)
        if unread := polls.last_failed(open_entries):
            # Said under --quiet too: exit 10 and silence read as "submitted, collect later",
            # night after night, while their worst cases stayed counted (break28 M1); each one,
            # beside batches still running too (verify29 N1); and a batch whose polls failed
            # until the deadline, not LIMIT of them (out-135 F5: an endpoint down all night).
            # With why: under --quiet, the failure said at its first poll was not (out-100 F3).
            why = "; ".join(f"{e.key}: {polls.last_said.get(e.key, '?')}" for e in unread)
            notice(f"warning: {polls.unread_words(unread)} ({why}): see `batchrun batches list`")
        if (open_entries or doubt) and runner.stop_reason is None:
            runner.request_stop(
                StopReason.SUBMITTED,
                f"{self.open_rows} row(s) await OpenRouter: "
                + ", ".join(
                    [polls.describe(open_entries)] * bool(open_entries)
                    + [f"{len(doubt)} in doubt (see `batchrun batches list`)"] * bool(doubt)
                )
                + "; collect them with --resume",
            )
