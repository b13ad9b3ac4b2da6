"""Which rows of a batch-mode run are submitted in batches, and which go to the sync runner.

A row held by an open or doubtful batch waits for it; a kept row is not sent; rows with
non-text parts, rows re-run by `--retry-errors` (with `batch_retry: sync`), answers whose
graders a stop cut off, cache hits that need grading, and rows of no known worst case under a
limit go to the sync runner; other cache hits are answered at once; the rest are batched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ._checks import is_judge
from ._exceptions import ConfigError
from ._matrix import Request
from ._parts import non_text_part
from ._settings import RunSettings
from ._worker_pool import Runner, searches


def sort_rows(
    requests: Iterable[Request],
    held: dict[str, set[str | None]],
    pending: dict[str, Request],
    keep: Callable[[Request], bool],
    retry_rows: set[str],
    runner: Runner,
    settings: RunSettings,
    notice: Callable[[str], None],
) -> tuple[list[Request], list[Request]]:
    """(rows to submit, rows for sync mode); rows held by open or doubtful batches go to `pending`."""
    to_batch, to_sync = [], []
    edited = 0
    for request in requests:
        sent = held.get(request.id)
        if sent is not None and (request.fingerprint in sent or None in sent):
            pending[request.id] = request
            continue
        if keep(request):
            continue
        # A row edited since its batch was sent: that batch answers the earlier body, not
        # this one (break22 C1: it was recorded under the new fingerprint and request).
        edited += sent is not None
        if (kind := non_text_part(request.body)) is not None:
            if settings.batch_multimodal == "refuse":
                what = (
                    f"asks for non-text output ({kind})"
                    if kind in ("audio", "image_config", "modalities")
                    else "has non-text parts"
                )
                raise ConfigError(
                    f"prompt {request.prompt_id!r} {what}: the Batch API is text-only (run.batch_multimodal: refuse)"
                )
            to_sync.append(request)
        elif request.id in retry_rows and settings.batch_retry == "sync":
            to_sync.append(request)  # the sync runner asks the cache itself
        elif request.id in runner.regrade:
            to_sync.append(request)  # a kept answer whose graders a stop cut off: graded there
        elif _graded_hit(runner, request):
            to_sync.append(request)  # the sync runner answers it from the cache and grades it
        elif _unbounded_under_limit(runner, request):
            to_sync.append(request)
        elif (cached := runner.cache.lookup(request) if runner.cache else None) is not None:
            runner.answered_from_cache(request, cached)  # a hit is never submitted
        else:
            to_batch.append(request)
    if edited:
        notice(f"{edited} row(s) were edited since the batch holding them was sent: sent again as edited")
    return to_batch, to_sync


def _graded_hit(runner: Runner, request: Request) -> bool:
    """A row the cache answers whose judge checks need grader requests (sent in sync mode),
    or whose checks search (graded there off the event loop, as every answer is)."""
    cache = runner.cache
    if cache is None or not (searches(request.checks) or any(is_judge(c) for c in request.checks)):
        return False
    return cache.peek(request) is not None


def _unbounded_under_limit(runner: Runner, request: Request) -> bool:
    """A row whose worst case is $0 (a model listed free) or unknown (`allow_unknown_prices`),
    under a limit. A batch is charged at once, and /key cannot be read between its requests,
    so a charge above the listed price would show only when the batch is collected: every
    such row of the job could be charged past the budget (break14e F7). In sync mode the
    probe reads /key every few requests and bounds it; the batch discount lost is 50% of $0."""
    costs = runner.costs
    return runner.ledger.limit is not None and costs is not None and not costs.worst_case(request)
