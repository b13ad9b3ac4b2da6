"""A row's one record: made from its request and outcome, written, and handed on.

Shared by the worker pool, batch mode (_batch_run) and cache hits. The first write that
fails stops dispatch (StopReason.IO): nothing more is paid for that cannot be recorded,
and the writer refuses later lines, so none follows a torn one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._clock import Clock
from ._exceptions import OutputFailed, RequestFailed
from ._formats import utc
from ._late_costs import LateCosts
from ._matrix import Request
from ._record_head import record_identity
from ._results import ResultsWriter, record_head
from ._retry import AttemptLog
from ._routing import PinWatch
from ._row import Row, internal_error
from ._row_cost import RowCharges, counted, skipped_fields, uncharged
from ._scrub import Scrubber
from ._status import Status, StopReason
from ._stops import Stops


class RowRecords:
    def __init__(
        self,
        writer: ResultsWriter | None,  # None: records are not written (re-grading in memory)
        clock: Clock,
        stops: Stops,
        *,
        job_name: str,
        job_fingerprint: str,
        shard: str | None = None,
        cache_on: bool,
        on_record: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        self.writer = writer
        self.clock = clock
        self.stops = stops
        self.job_name = job_name
        self.job_fingerprint = job_fingerprint
        self.shard = shard
        self.cache_on = cache_on
        self.on_record = on_record
        self.late = LateCosts()  # rows written with an unknown cost: written again once it is known
        self.pins = PinWatch()  # answers from a provider the request's pin did not allow

    def make(
        self,
        request: Request,
        status: Status,
        reason: str | None,
        retryable: bool,
        started: float | None,
        **fields: Any,
    ) -> dict[str, Any]:
        spent = counted(fields)
        cost = fields.pop("cost", None)
        record = record_head(request.id, request.fingerprint, status, reason, retryable, cost, spent)
        record.update(record_identity((self.job_name, self.job_fingerprint, self.shard)))
        record.update(
            model=request.model,
            prompt_id=request.prompt_id,
            vars=request.vars,
            repeat=request.repeat,
        )
        if request.checks_fingerprint:
            record["checks_fingerprint"] = request.checks_fingerprint
        if self.cache_on and status != Status.SKIPPED:
            record["cached"] = False  # with a cache on, every answered row says whether it was a hit
        record.update(fields)
        record["started_at"] = utc(started) if started is not None else None
        record["finished_at"] = utc(self.clock.time())
        return record

    def emit(self, request: Request, record: dict[str, Any]) -> None:
        # A row skipped before anything was sent has no body sent to record: with one, a stop
        # before the first request wrote 1 GB from 300 KB of input (break59 F5); the job rebuilds it.
        sent = record["status"] != Status.SKIPPED or bool(record.get("attempts"))
        try:
            if self.writer is not None:
                self.writer.write(record, request.payload if sent else None)
        except OutputFailed as failure:
            self.stops.request(StopReason.IO, str(failure))
            raise
        self.pins.note(request.model, request.body, record.get("provider"), record.get("response_model"))
        if self.on_record is not None:
            self.on_record(record)

    def finish(self, row: Row, record: dict[str, Any]) -> None:
        row.written = True  # set first: a row whose write failed must not be written twice
        self.emit(row.request, record)
        self.late.remember(row.request, record, row.charges, row.grading.charges() if row.grading else None)

    def skip(self, request: Request, reason: str) -> None:
        self.emit(request, self.make(request, Status.SKIPPED, reason, True, None, **uncharged(None)))

    def failed(self, request: Request, failure: RequestFailed, log: AttemptLog, started: float | None) -> None:
        """Write the record of a failed request (batch mode's entry point)."""
        self.emit(request, self.failure(request, failure, log, started))

    def failure(
        self,
        request: Request,
        failure: RequestFailed,
        log: AttemptLog,
        started: float | None,
        charges: RowCharges | None = None,
    ) -> dict[str, Any]:
        """The record of a failed request; the failure's class decides what else stops."""
        message = failure.message[:500]
        too_long = self.stops.too_long(failure)
        if too_long:
            message += f" ({too_long})"
        error: dict[str, Any] = {"kind": failure.kind, "http_status": failure.http_status, "message": message}
        # What OpenRouter said, when it said it (errors-and-debugging.mdx "Typed error codes").
        if failure.error_type:
            error["error_type"] = failure.error_type
        if failure.availability_code:
            error["availability_code"] = failure.availability_code
        status, reason = self.stops.react(request, failure, too_long, log.attempts, log.cut_by_deadline)
        skipped = status == Status.SKIPPED
        return self.make(
            request,
            status,
            reason,
            skipped or failure.retryable,
            started,
            error=error,
            attempts=log.attempts,
            attempt_errors=log.failures,
            # An error without a billable attempt cost nothing (zero-completion-insurance.mdx).
            **(charges.fields() if charges is not None and charges.parts else uncharged(None if skipped else 0.0)),
        )

    def unfinished(self, row: Row, error: BaseException | None, scrub: Scrubber) -> dict[str, Any]:
        """The record of a row cut short: skipped by a stop (`error` None), or `internal`.
        A request that went out is held as an abandoned attempt: its cost is unknown, and
        its worst case stays spent (`cost_held`), since it may be billed."""
        fields = {**row.charges.fields(), "attempts": row.log.attempts, "attempt_errors": row.log.failures}
        if error is None:
            fields.update(skipped_fields(row.charges))
            reason = self.stops.reason or StopReason.INTERRUPTED
            return self.make(row.request, Status.SKIPPED, reason, True, row.started, **fields)
        error_field = internal_error(error, scrub)
        sent = bool(row.charges.parts)
        if not sent:
            fields.update(uncharged(0.0))
        # Retryable only when nothing went out: a bug that struck after the answer was bought
        # strikes again, and `--retry-errors` bought it again each time (break24 F5).
        return self.make(row.request, Status.ERROR, "internal", not sent, row.started, error=error_field, **fields)
