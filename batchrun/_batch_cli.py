"""`batchrun batches list|cancel|adopt|release RESULTS.jsonl`: a batch-mode run's batches.

`list` reads the batch record beside the results file (no network). `cancel` asks
OpenRouter to cancel the run's open batches; the quickstart documents no cancel endpoint,
so this says so plainly when the endpoint has none. `adopt` and `release` settle a batch
left in doubt by a crash (see `_batch_state`). All but `list` hold the output's lock, so
they never race a run writing the same file.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ._batch_state import INTENT, RELEASED, SUBMITTED, BatchEntry, BatchState, by_row
from ._exceptions import ConfigError, RequestFailed
from ._generation import valid_generation_id
from ._lock import OutputLock
from ._scrub import SECRET_VARIABLES, Scrubber, hide_keys

if TYPE_CHECKING:  # the HTTP client is loaded by the commands that call (not `list`)
    from ._batch_api import BatchClient, BatchInfo

# An adopted batch created this long before its rows were sent is another one (clocks differ).
CLOCK_SLACK_S = 300
# ... or this long after: a submission is one exchange, made again after a 429's wait at most.
SEND_WINDOW_S = 3600
_DOUBT = "in doubt: submitted or not, unknown (a crash, or an answer that named no batch of its own)"


def list_lines(state: BatchState) -> list[str]:
    if not state.entries:
        return [f"{state.path}: no batches"]
    lines = [
        f"{'key':<5} {'model':<40} {'state':<10} {'status':<12} {'rows':>6} {'reserved $':>11} {'cost $':>10}  batch id"
    ]
    for e in state.entries:
        cost = "-" if e.cost_usd is None else f"{e.cost_usd:.6f}"
        status = e.status or ("-" if e.state != INTENT else "?")
        if e.poll_failed is not None and e.state == SUBMITTED:
            status += "?"  # as last read: the last poll failed (said below)
        lines.append(
            f"{e.key:<5} {e.model:<40} {e.state:<10} {status:<12} {len(e.rows):>6} {e.reserved_usd:>11.6f} "
            f"{cost:>10}  {e.batch_id or _DOUBT}"
        )
    when = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(min(e.intent_at for e in state.entries)))
    lines.append(f"first submitted {when}; open: {len(state.open_entries())}, in doubt: {len(state.in_doubt())}")
    for e in state.entries:
        if e.poll_failed is not None and e.state == SUBMITTED:
            lines.append(f"{e.key}: its last poll failed ({e.poll_failed}): its status is as last read")
    return lines


def _environment_keys() -> list[str | None]:
    return [os.environ.get(name) for name in SECRET_VARIABLES]


def _needs_key(state: BatchState, key: str | None) -> str:
    if not key:
        raise ConfigError("give the batch key (b1, b2...) shown by `batchrun batches list`")
    state.entry(key)
    return key


async def batches_command(
    action: str,
    results: Path,
    key: str | None,
    batch_id: str | None,
    job_path: Path | None,
    base_url: str | None,
    api_key: str | None,
) -> list[str]:
    if action == "list":
        return list_lines(BatchState.read(results))
    lock = OutputLock(results)
    lock.acquire()
    try:
        state = BatchState.read(results)
        if action == "adopt":
            entry = state.entry(_needs_key(state, key))
            if entry.state != INTENT or not batch_id:
                raise ConfigError(f"adopt takes a batch in doubt and its id; {entry.key} is {entry.state}")
            # Kept in X.batches.json and sent back in URLs, like an id the Batch API answers: a
            # pasted one holding a key (or a fragment of one) must not reach the disk (break14c N18).
            # Key-like text is refused too, with no key in the environment to compare with
            # (break28 m2: the key pasted as the id was printed and written to the state file).
            if valid_generation_id(batch_id, Scrubber(api_key, *_environment_keys())) is None or (
                hide_keys(batch_id) != batch_id
            ):
                raise ConfigError("adopt: that batch id is not an id (letters, digits, - and _ only, and no key)")
            # One batch collected under two keys would book its charge twice and leave the
            # adopting rows without results (break14e E15).
            holder = next((e for e in state.entries if e.batch_id == batch_id), None)
            if holder is not None:
                raise ConfigError(f"adopt: {batch_id} is already {holder.key}'s batch ({holder.state}) in {state.path}")
            await _check_adopted(entry, batch_id, job_path, base_url, api_key)
            entry.batch_id, entry.state = batch_id, SUBMITTED
            state.save()
            return [f"{entry.key}: adopted {batch_id}; the next run on {results} collects it"]
        if action == "release":
            entry = state.entry(_needs_key(state, key))
            if entry.state != INTENT:
                raise ConfigError(f"release takes a batch in doubt; {entry.key} is {entry.state}")
            entry.state = RELEASED
            state.save()
            return [f"{entry.key}: released; the next run submits its {len(entry.rows)} row(s) again"]
        return await _cancel(state, key, job_path, base_url, api_key)
    finally:
        lock.release()


def not_this_batch(entry: BatchEntry, info: BatchInfo) -> str | None:
    """Why the batch OpenRouter describes cannot be the one `entry` sent, or None. A batch of
    another night (the same rows, the same custom_ids) was adopted, its old answers recorded as
    new rows and the hold on the batch really in doubt released (break49 F1)."""
    if info.model is not None and info.model != entry.model:
        return f"its model is {info.model}; {entry.key}'s rows are for {entry.model}"
    if info.created_at is not None:
        # On our clock: the server's may differ (its reply's Date says by how much: verify50 N3).
        created = info.created_at - info.server_ahead_s
        made, sent = (time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t)) for t in (created, entry.intent_at))
        if created < entry.intent_at - CLOCK_SLACK_S:
            return f"it was created at {made} (by this machine's clock), before {entry.key} was sent ({sent})"
        if created > entry.intent_at + SEND_WINDOW_S:  # another night's, made after (verify50 N1)
            return f"it was created at {made} (by this machine's clock), long after {entry.key} was sent ({sent})"
    # By custom_id, which carries the body sent (`<row>-<fingerprint>`): the same row ids asking
    # another question (another job's batch, the prompt edited since) are not its rows (out-185 F4).
    ids = {item.get("custom_id") for item in by_row(entry, info.results) or [] if isinstance(item, dict)}
    # Another count than the rows sent is another batch, fewer too (break64 F5: 2 requests were
    # adopted for 4 rows, which then ended `batch_missing_result`, the real one's hold released);
    # a total of 0 is one not counted yet (validating).
    if not ids <= set(entry.rows) or info.request_counts["total"] not in (0, len(entry.rows)):
        return f"it holds requests that are not {entry.key}'s {len(entry.rows)} row(s)"
    return None


async def _check_adopted(
    entry: BatchEntry, batch_id: str, job_path: Path | None, base_url: str | None, api_key: str | None
) -> None:
    async with _batch_api(job_path, base_url, api_key) as api:
        try:
            info = await api.get(batch_id)
        except RequestFailed as failure:
            if failure.http_status != 404:
                raise
            # As its own refusal, not "the endpoint failed before the run started" (verify50 N5).
            raise ConfigError(f"adopt: {api.url} does not know the batch {batch_id} (404)") from None
    if (problem := not_this_batch(entry, info)) is not None:
        raise ConfigError(f"adopt: {batch_id} is not {entry.key}'s batch: {problem}")
    if not info.terminal:
        # Its results are not out: whose rows it holds cannot be read. Another submission's,
        # adopted while it ran, was found wrong at collection, and b2's hold released (out-145 F1).
        raise ConfigError(
            f"adopt: {batch_id} is {info.status}: whose rows it holds can be checked only once it has ended; "
            f"adopt it then ({entry.key}'s worst case stays counted as spent meanwhile)"
        )


@asynccontextmanager
async def _batch_api(job_path: Path | None, base_url: str | None, api_key: str | None) -> AsyncIterator[BatchClient]:
    """The Batch API at the job's endpoint (or --base-url), with its key from the environment."""
    from ._batch_api import BatchClient
    from ._client import OpenRouterClient
    from ._job import load_job
    from ._settings import DEFAULT_BASE_URL

    job = load_job(job_path) if job_path is not None else None
    key_env = job.endpoint.api_key_env if job else "OPENROUTER_API_KEY"
    api_key = api_key or os.environ.get(key_env)
    if not api_key:
        raise ConfigError(f"no API key: set ${key_env}")
    async with OpenRouterClient(base_url or (job.endpoint.base_url if job else DEFAULT_BASE_URL), api_key) as client:
        yield BatchClient(client)


async def _cancel(
    state: BatchState, key: str | None, job_path: Path | None, base_url: str | None, api_key: str | None
) -> list[str]:
    targets = [state.entry(key)] if key else state.open_entries()
    lines = []
    async with _batch_api(job_path, base_url, api_key) as api:
        for entry in targets:
            if entry.state != SUBMITTED or entry.batch_id is None:
                lines.append(f"{entry.key}: {entry.state}, nothing to cancel")
                continue
            try:
                info = await api.cancel(entry.batch_id)
            except RequestFailed as failure:
                if failure.http_status != 409:
                    raise
                # Ended already (the API's 409): not "the endpoint failed before the run started" (out-145 F4).
                lines.append(f"{entry.key}: {entry.batch_id} has ended already; the next run collects it")
                continue
            entry.status = info.status
            lines.append(f"{entry.key}: {entry.batch_id} is {info.status}; the next run collects what it finished")
        state.save()
    return lines or ["no open batches"]
