"""Batch mode's part of a run: the output's record of batches, checked before anything is sent,
and the executor that submits and collects them (_batch_run)."""

from __future__ import annotations

from pathlib import Path

from ._batch_api import BatchClient
from ._batch_run import BatchExecutor
from ._batch_state import INTENT, SUBMITTED, BatchState, held_open, state_path
from ._client import OpenRouterClient
from ._exceptions import ConfigError
from ._job import Job
from ._options import Notice, RunOptions
from ._preflight import keep_row
from ._results import ScanResult
from ._settings import RunSettings
from ._status import Status
from ._summary_beside import read_run_summary
from ._worker_pool import Runner


def batch_setup(job: Job, options: RunOptions, settings: RunSettings, output: Path) -> BatchState | None:
    """In batch mode, this output's record of batches; None in sync mode."""
    state = BatchState.load(output, job.name, job.fingerprint)  # an empty one where there is none
    if (lost := _record_lost(output, state)) is not None:
        raise ConfigError(lost)
    if settings.mode != "batch":
        if held_open(state):
            # Rows in a batch still open would be sent again in sync mode and paid twice, and
            # the batch's reservation would not be counted (break-14b C13): collect it first.
            rows = sum(len(e.rows) for e in state.entries if e.state in (INTENT, SUBMITTED))
            raise ConfigError(
                f"{state_path(output)} lists {rows} row(s) in batches of an earlier batch-mode run that are "
                "still open or in doubt: a sync run would send them again; collect them with --mode batch "
                "(see `batchrun batches list`)"
            )
        return None
    if settings.isolated_key:
        raise ConfigError(
            "batch mode cannot use an isolated key: the key is deleted when the run ends, its batches are not"
        )
    if options.fresh_simulator and held_open(state):
        # That simulator went with its run: each poll would be a 404, three in a row ending
        # the rows after minutes of polling (break27 m11).
        raise ConfigError(
            f"{state_path(output)} lists batches an earlier run submitted to its own simulator, which is gone: "
            "--simulate cannot collect them (serve one with `batchrun simulate` and --base-url to try collecting; "
            "`batchrun batches release` sends their rows again)"
        )
    return state


# Without a deadline, the polling ends an hour after the Batch API's completion window (24 h): a
# batch that never left in_progress polled for ever (out-100 F5). The run ends at exit 10, its
# batches open, collected by a later run.
BATCH_WAIT_S = 25 * 3600.0


def _record_lost(output: Path, state: BatchState) -> str | None:
    """Why this output cannot be run: its batch record is gone (or lists no batch), while the last
    run's summary says batches were still open or in doubt. Their rows were submitted again and
    billed twice, exit 0, the summary's hold forgotten (out-100 F1: a rename of the results and
    summary, as batchrun's own advice says, left the record behind)."""
    batches = read_run_summary(output).get("batches")
    if not isinstance(batches, dict) or state.entries:
        return None
    opened, doubt = batches.get("open"), batches.get("in_doubt")
    count = (opened if type(opened) is int and opened > 0 else 0) + (len(doubt) if isinstance(doubt, list) else 0)
    if not count:
        return None
    return (
        f"{state_path(output)} is missing or lists no batch, but the last run's summary says {count} batch(es) were "
        "still open or in doubt at OpenRouter: their rows would be sent again and paid twice. Put the batch record "
        "back beside the results (renamed with them); or, once those batches are cancelled or expired, move the "
        "summary away"
    )


def batch_executor(
    runner: Runner,
    client: OpenRouterClient,
    state: BatchState,
    job: Job,
    options: RunOptions,
    states: ScanResult | None,
    started: float,
    notice: Notice,
    killed_run_bound: float | None,
) -> BatchExecutor:
    settings = job.run
    retry_rows = set()
    if states is not None and options.retry_errors:
        retry_rows = {i for i in states.ids(Status.ERROR) if (s := states.get(i)) is not None and s.retryable}
    return BatchExecutor(
        runner,
        BatchClient(client),
        state,
        settings,
        deadline_s=BATCH_WAIT_S
        if settings.deadline_s is None
        else max(0.0, settings.deadline_s - (options.clock.monotonic() - started)),
        keep=lambda r: keep_row(states, r, options.retry_errors),
        retry_rows=retry_rows,
        notice=notice,
        kill_after_submit=options.test_kill_after_submit,
        killed_run_bound=killed_run_bound,
    )
