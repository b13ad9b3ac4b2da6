"""Polls of open batches that fail: said once per new failure, and given up after a limit.

A failed poll changes nothing (the batch runs on; the next poll may work), so the run polled
again for as long as the batch stayed open. A batch object that can never be read (a server
that answers it in a shape that is no batch object, for ever) then kept a run without a
deadline polling for ever, one warning line per poll (break22 M1: 120 lines in two minutes).
Now each batch's failures are counted in a row: a failure is said when it is new or changes,
and once every open batch has failed LIMIT polls in a row the run ends with them still open
(exit 10, collected by a later --resume), as a deadline ends it.
"""

from __future__ import annotations

from ._batch_state import BatchEntry
from ._exceptions import RequestFailed
from ._formats import one_line, short
from ._options import Notice
from ._routing import another_author

LIMIT = 20  # polls in a row: 20 minutes at the default batch_poll_s of 60 s
# A batch is taken as lost (its rows errors) after this many 404s in a row: one 404 just after
# the 202 that created it may be a read that came before the write (break22 m10).
NOT_FOUND_POLLS = 3


class PollFailures:
    def __init__(self, notice: Notice) -> None:
        self.notice = notice
        self._in_a_row: dict[str, tuple[int, str]] = {}  # batch key -> (failed polls, the last kind)
        self.last_said: dict[str, str] = {}  # batch key -> its last failure, as said
        # The longest Retry-After of this round of polls: the next round waits at least that
        # (break22 m6: a 429 asking for a pause was polled again every batch_poll_s).
        self.wait_s = 0.0
        self._odd_model: set[str] = set()  # batch keys whose polls named another model, said once
        self.elsewhere: set[str] = set()  # batch keys submitted to another endpoint, unknown at this one

    def lost(self, entry: BatchEntry, in_a_row: int, base_url: str) -> bool:
        """After a 404, `in_a_row` of them: whether `entry` is lost (its rows end as errors), at
        the endpoint it was submitted to (or one not recorded). Another endpoint's 404s say nothing
        of it (out-185 F5: a tick on another --base-url ended every batch as lost, and
        --retry-errors paid for their rows again while they ran): it is left open, not polled
        again by this run, and said, under --quiet too."""
        if in_a_row < NOT_FOUND_POLLS:
            return False
        if entry.endpoint is None or entry.endpoint == base_url:
            return True
        self.elsewhere.add(entry.key)
        self.notice(
            f"warning: batch {entry.key} ({entry.batch_id}) was submitted to {entry.endpoint}: this run's endpoint "
            f"{base_url} does not know it (404); left open: collect it with --base-url {entry.endpoint}"
        )
        return False

    def here(self, entries: list[BatchEntry]) -> list[BatchEntry]:
        """The batches of `entries` this run can poll: not those another endpoint holds."""
        return [e for e in entries if e.key not in self.elsewhere]

    def failed(self, entry: BatchEntry, failure: RequestFailed) -> int:
        """Count a failed poll of `entry`; the polls it has failed in a row."""
        # Said once per kind in a row: an error text that varies (a gateway's request id in its
        # page) printed a line at every poll (verify22 N6).
        count, last = self._in_a_row.get(entry.key, (0, ""))
        self.last_said[entry.key] = f"{failure.kind}: {failure.message}"
        if failure.kind != last:
            self.notice(f"batch {entry.key} ({entry.batch_id}): poll failed: {self.last_said[entry.key]}")
        self._in_a_row[entry.key] = (count + 1, failure.kind)
        entry.poll_failed = self.last_said[entry.key]  # kept in the batch record: `batches list` says it
        self.wait_s = max(self.wait_s, failure.retry_after or 0.0)
        return count + 1

    def next_wait(self, poll_s: float) -> float:
        """The wait before the next round: batch_poll_s, or the longest Retry-After of this
        round, up to ten polls' worth (a server's figure is not trusted to stop a run)."""
        wait, self.wait_s = max(poll_s, min(self.wait_s, 10 * poll_s)), 0.0
        return wait

    def read(self, entry: BatchEntry, model: str | None) -> None:
        """A poll of `entry` answered, for a batch of `model` (None: not said)."""
        self._in_a_row.pop(entry.key, None)
        entry.poll_failed = None
        if isinstance(model, str) and another_author(entry.model, {}, model) and entry.key not in self._odd_model:
            # Its id is the one sent, so it is read; but adopt refuses the same mismatch, and a
            # poll took it in silence (out-145 F8). Once: each later poll would say it again. A
            # dated id of the same author is its own, as a row's reply's is (out-148 F7).
            self._odd_model.add(entry.key)
            self.notice(
                f"warning: batch {entry.key}: OpenRouter says it is for {one_line(short(model))}, not {entry.model} "
                "as sent; its rows are recorded with the model each answer names"
            )

    def given_up(self, entries: list[BatchEntry]) -> bool:
        """True when every batch in `entries` failed its last LIMIT polls, or is another endpoint's."""
        return bool(entries) and len(self.unreadable(entries)) == len(self.here(entries))

    def unreadable(self, entries: list[BatchEntry]) -> list[BatchEntry]:
        """The batches in `entries` that failed their last LIMIT polls."""
        return [e for e in self.here(entries) if self._in_a_row.get(e.key, (0, ""))[0] >= LIMIT]

    def last_failed(self, entries: list[BatchEntry]) -> list[BatchEntry]:
        """The batches in `entries` whose last poll failed: how they stand is not known."""
        return [e for e in self.here(entries) if self._in_a_row.get(e.key, (0, ""))[0] > 0]

    def unread_words(self, entries: list[BatchEntry]) -> str:
        """`entries` (whose last poll failed), as a warning names them."""
        if self.given_up(entries):
            return f"batch(es) could not be read in {LIMIT} polls in a row"
        return "batch(es) whose last poll failed: how they stand is not known"

    def describe(self, entries: list[BatchEntry]) -> str:
        """The open batches, as the run's stop message says them."""
        away = len(entries) - len(self.here(entries))
        there = [f"{away} submitted to another endpoint"] if away else []
        entries = self.here(entries)
        if not entries:
            return ", ".join(there)
        if self.given_up(entries):
            return ", ".join([f"{len(entries)} batch(es) could not be read in {LIMIT} polls in a row", *there])
        unknown = len(self.last_failed(entries))
        parts = [f"{len(entries) - unknown} batch(es) still running"] if unknown < len(entries) else []
        return ", ".join(parts + ([f"{unknown} whose last poll failed"] if unknown else []) + there)
