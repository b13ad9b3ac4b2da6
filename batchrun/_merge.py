"""`batchrun merge`: the shard files of one job as one results file, checked for completeness."""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

import orjson

from ._answered_by import answered_by, recorded_endpoint
from ._argtypes import summary_given
from ._batch_state import pending_batches
from ._exceptions import OutputFailed, ResultsError
from ._files import file_identity, followed
from ._fold import Earlier
from ._gate import MatrixCoverage, named_by_its_id, shard_layout
from ._items import ItemGate
from ._job import Job
from ._lock import OutputLock
from ._merged_key_gap import merged_key_gap
from ._output_paths import SIDECARS, current_umask, sidecar_name_problem, summary_path, write_json_atomically
from ._reader import Warn, spent_on
from ._results import RESULTS_MODE, ResultsWriter, final_records
from ._scrub import environment_scrubber
from ._simulated import MIXED_ENDPOINTS, answered_in_part, merged_endpoint, simulated
from ._summary import SummaryBuilder
from ._summary_beside import SummaryBeside, read_run_summary
from ._summary_floor import sealed
from ._summary_place import refuse_summary_place
from ._summary_types import Summary
from ._verdict import ungraded_reason

_RANK = {"ok": 2, "error": 1, "skipped": 0}  # which record of a row in several files stands


def merge_shards(shards: list[Path], output: Path, job: Job | None = None, warn: Warn = lambda _: None) -> Summary:
    """One file with the final record of every row of every shard, and its summary beside it
    (returned); refuses mixed jobs.

    `complete` in the result is true only when every row of the job's matrix is there
    and answered: checked against `job` when given, else against the shards' summaries.
    Raises LockHeld if a run is still writing one of the shards.
    """
    problem = sidecar_name_problem(output)
    if problem is not None:
        raise ResultsError(problem)
    if output.is_symlink():
        # A link would be replaced by the merged file, its target never written (verify21 V19),
        # and readers find the summary by the link's name.
        raise ResultsError(f"{output} is a symbolic link: merge writes a new file; give the path it should have")
    if output.exists() and (output.stat().st_size > 0 or not output.is_file()):
        # A FIFO, a device or a folder too: it was replaced by the merged file (break24 F10).
        raise ResultsError(f"{output} already exists: merge writes a new file")
    shards = [followed(shard) for shard in shards]  # a link's run files are beside its target
    if len({file_identity(shard) for shard in shards}) < len(shards):
        raise ResultsError("a file is named twice: give each shard once")
    if output.exists():
        # Empty (a mktemp's file is taken), but not a shard named as the output too, nor a run's
        # file: a shard killed before its first record leaves an empty one beside its journal of
        # paid attempts, which merge filled and made unresumable (out-110 F3).
        if file_identity(output) in {file_identity(shard) for shard in shards}:
            raise ResultsError(f"{output} is one of the shards: merge writes a new file; name another output")
        if left := [name for suffix in SIDECARS if (name := output.with_name(output.stem + suffix)).exists()]:
            raise ResultsError(f"{output} already exists, beside a run's {left[0].name}: merge writes a new file")
    refuse_summary_place(output, new=True)  # a user's file there was replaced (out-125 F2)
    shards = _without_sidecars(shards, warn)
    _refuse_merged_twice(shards)
    with contextlib.ExitStack() as held:
        for shard in shards:
            _hold(shard, held)
        return _merge(shards, output, job, warn)


def _without_sidecars(shards: list[Path], warn: Warn) -> list[Path]:
    """The shards named, less what batchrun writes beside any of them (its attempt journal, left
    by a shard that was killed; its summary, batch state or lock), which a glob such as
    `shard-*` names too. Each is read with its shard; named as one, the merge exited 2 or 8
    (break30 F2, verify30 N6)."""
    beside = {}
    for shard in shards:
        stem = shard.name[: -len(".jsonl")] if shard.name.endswith(".jsonl") else shard.name
        for suffix, what in SIDECARS.items():
            name = shard.name + ".lock" if suffix == ".jsonl.lock" else stem + suffix
            beside[file_identity(shard.with_name(name))] = (what, shard)
    kept = []
    for shard in shards:
        found = beside.get(file_identity(shard))
        if found is None:
            kept.append(shard)
        else:
            warn(f"{shard}: the {found[0]} of {found[1]}, read with it: not merged as a shard")
    for shard in kept:  # given alone, it was "not JSON", of a JSON file (verify67)
        if (said := summary_given(shard)) is not None:
            raise ResultsError(f"{shard}: {said}")
    return kept


def _refuse_merged_twice(shards: list[Path]) -> None:
    """A merged file and a shard its summary lists (`merged_from`, as named then: from where
    merge ran, or beside the merged file) would count that shard's rows and costs twice: each
    row in two files is folded as paid twice (break30 m2: +35%, exit 0)."""
    given = {file_identity(shard): shard for shard in shards}
    for merged in shards:
        sources = read_run_summary(merged).get("merged_from")
        for source in sources if isinstance(sources, list) else ():
            if not isinstance(source, str) or not source or "\0" in source:
                continue
            for place in (Path(source), merged.parent / Path(source).name):
                shard = given.get(file_identity(place))
                if shard is not None and shard != merged:
                    raise ResultsError(f"{shard} is merged into {merged} already (its merged_from): name one of them")


def _hold(shard: Path, held: contextlib.ExitStack) -> None:
    """Lock `shard` as a run does, so no run writes it while it is merged. A run still writing
    it has rows in flight that the merge read as killed: "crashed", their worst cases held at
    17x the real spend (break24 F13). A shard that is not there is the reader's to name; one in a
    folder where no lock file can be made (a read-only artifact folder) has no writer to wait for."""
    if not shard.is_file():
        return
    lock = OutputLock(shard, f"{shard} is being written", role="merge")
    try:
        lock.acquire()
    except OSError:  # no lock file can be made there (read-only folder or file system)
        return
    held.callback(lock.release)


def _merge(shards: list[Path], output: Path, job: Job | None, warn: Warn) -> Summary:
    for shard in shards:
        # A batch still running (or in doubt) beside a shard has rows with no record yet, and
        # may be billed: a merged file would show neither. Collect it first (break14c).
        pending = pending_batches(shard, warn)
        if pending:
            raise ResultsError(
                f"{shard}: {len(pending)} batch(es) still open or in doubt ({', '.join(e.key for e in pending)}): "
                f"their rows have no record yet; run the job on it with --resume to collect them, "
                f"or see `batchrun batches list {shard}`"
            )
    # A shard tried out with --simulate beside real ones made the night's gate green on made-up
    # answers, without a word (out-101 F4).
    besides = [SummaryBeside.read(shard) for shard in shards]
    for beside in besides:
        if (changed := beside.changed() or beside.of_another_job()) is not None:
            # Merged, it was a new file with a new summary: an edited shard's rows passed every
            # gate after it (out-149 F1); another job's file under its name was exit 12 (out-160).
            # Not "or move its summary away": that was advice on how to launder it (out-165 F4).
            raise ResultsError(f"{changed}: not merged; run that shard again")
    endpoints = [recorded_endpoint(beside) for beside in besides]
    # A killed shard's journal says what answered it too (out-138 F5): enough to say the merge is
    # mixed, never to make it the simulator's, whose graders may then re-grade it (_answered_by).
    said = [endpoint or answered_by(beside) for endpoint, beside in zip(endpoints, besides, strict=True)]
    for shard, endpoint in zip(shards, said, strict=True):
        if endpoint is None and any(said):  # out-139 F5: a try-out copied over a real shard merged in silence
            warn(f"{shard}: nothing beside it (a summary that saw it as it is, its run's journal) says who answered")
    if any(map(answered_in_part, said)) and any(e is not None and not simulated(e) for e in said):
        endpoints = [MIXED_ENDPOINTS]
        warn(
            "some shards were answered by the built-in simulator (--simulate), others by an endpoint: "
            "merged all the same"
        )
    # A row in two files (shards of another N, a shard run again into a new file) keeps its
    # answered record before an error, an error before a skip (a run stopped by its budget
    # answers nothing it answered before), then the newest, by when it finished, then by the
    # files' order; the others' costs are folded into it, as within one file: each was paid for
    # (break24 F1: the duplicate's cost was dropped, and the order of the arguments chose which
    # record, pass or error, stood).
    last: dict[str, tuple[int, str, int]] = {}
    seen: Counter[str] = Counter()  # records of each row, over every file
    names: Counter[str] = Counter()
    versions: dict[Path, tuple[str, str]] = {}  # each file's newest record's (finished_at, job_fingerprint)
    edited: list[str] = []  # rows whose fields are not those their id was made from
    for index, shard in enumerate(shards):
        for record in final_records(shard, warn, other_jobs=True):  # another job's rows refuse the merge
            names[record["job"]] += 1
            if not named_by_its_id(record):  # without --job too: no matrix is needed for it
                edited.append(f"{shard}: id {record['id'][:12]}, {record.get('model')} / {record.get('prompt_id')}")
            finished = record.get("finished_at")
            finished = finished if isinstance(finished, str) else ""
            versions[shard] = max(versions.get(shard, ("", "")), (finished, record.get("job_fingerprint") or ""))
            rank = _RANK.get(record["status"], 0), finished, index
            last[record["id"]] = max(last.get(record["id"], rank), rank)
            seen[record["id"]] += 1
    if len(names) > 1:
        raise ResultsError(f"the files come from different jobs: {', '.join(names)}")
    # A file resumed after an edit holds rows of both versions, each answering its own request:
    # refused for ever, though it was brought up to date as the README says (break57 F2). Files
    # are of one version when their newest rows are; with --job, each row is judged by its request
    # (an earlier version's is missing, not merged as the job's).
    current = {fingerprint for _, fingerprint in versions.values()}
    if job is None and len(current) > 1:
        raise ResultsError(
            f"the files come from different versions of job {next(iter(names))} ({', '.join(sorted(current))}): "
            "give --job JOB.yaml to merge them as its current version (rows answered for another count as missing)"
        )
    if not last:
        raise ResultsError(f"the shard files hold no records: {', '.join(map(str, shards))}")
    if edited:
        raise ResultsError(
            f"{len(edited)} row(s) have a model, prompt, variables or repeat that their id was not made from "
            f"(edited?), e.g. {edited[0]}"
        )
    duplicate_rows = seen.total() - len(last)
    earlier = _duplicates_of(shards, last, seen, warn) if duplicate_rows else {}
    if earlier:
        warn(
            f"{len(earlier)} row(s) are in more than one file: each keeps its answered record before an error, an "
            "error before a skip, then its newest, with what the others cost folded in"
        )
    coverage = MatrixCoverage.of(job) if job is not None else None
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(output)
        handle, temporary = tempfile.mkstemp(dir=output.parent, prefix=output.name, suffix=".tmp")
    except OSError as exc:  # named as the file asked for, not its temporary's name (break44 F10)
        raise OutputFailed(f"{output}: cannot write it: {exc.strerror or exc}") from None
    os.fchmod(handle, RESULTS_MODE & ~current_umask())  # as a run's results file, not mkstemp's 0600
    os.close(handle)
    builder, spent = SummaryBuilder(_item_gate(shards, job)), 0.0
    # A shard's lines were scrubbed by the run that wrote them, of that run's keys; a file that
    # was not (written by hand, by an older version, or forged) kept a key into the merged file
    # and its summary (out-180 F5). The environment's keys, as every file the CLI writes.
    scrub = environment_scrubber(*([job.endpoint.api_key_env] if job is not None else []))
    try:
        writer = ResultsWriter(Path(temporary))
        writer.scrub = scrub
        try:
            for index, shard in enumerate(shards):
                records = (
                    _folded(r, earlier) for r in final_records(shard, other_jobs=True) if last[r["id"]][2] == index
                )
                for record in records if coverage is None else coverage.review(records, keep_stale=True):
                    writer.write(_as_merged(record))
                    builder.add(record)
                    spent += spent_on(record)
        finally:
            writer.close()
        matrix_rows: int | None
        if coverage is not None:
            coverage.foreign_rows(", ".join(map(str, shards)))  # raises: no edit is merged
            shortfalls = coverage.shortfalls()
            complete, matrix_rows = not shortfalls, len(coverage.checks)
        else:
            layout = shard_layout(shards, len(last), builder.total.skipped, next(iter(names)))
            complete, shortfalls, matrix_rows = layout
        if builder.total.regradable:  # answers whose graders a shard's stop cut off (verify63 F5)
            shortfalls = [*shortfalls, ungraded_reason(builder.total.regradable)]
            complete = False
        key_gap = round(merged_key_gap(shards), 8)
        # The matrix's size and the spend, as a run's summary has them: without them a complete
        # merged file merged again was "no usable summary", exit 12 (break56 F5).
        summary = builder.result(
            output=str(output),
            merged_from=[str(s) for s in shards],
            duplicate_rows=duplicate_rows,
            stop=None,
            complete=complete,
            shortfalls=shortfalls,
            key_gap_usd=key_gap,
            shard=None,  # the job's rows, whichever shards they came from
            matrix_rows=matrix_rows,
            spent_usd=round(spent + key_gap, 12),
        )
        if (merged_by := merged_endpoint(endpoints)) is not None:
            summary["endpoint"] = merged_by
        summary = cast(Summary, scrub.value(summary))
        summary["results_bytes"], summary["results_digest"] = sealed(Path(temporary), os.stat(temporary).st_size)
        # The summary first: a partial merge in place without it read as whole (out-125 F2). Then
        # the file: whatever fails before leaves no merged file behind, which would refuse the
        # next merge as "already exists" (break21 R6-R8); a summary alone the next one replaces.
        try:
            write_json_atomically(summary_path(output), summary)
        except OSError as exc:
            raise OutputFailed(f"{summary_path(output)}: writing the summary failed: {exc.strerror or exc}") from None
        os.replace(temporary, output)
    except OutputFailed as failed:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        # Named as the user gave it, not as the temporary file beside it (break21 R25).
        raise OutputFailed(str(failed).replace(temporary, str(output))) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return summary


def _as_merged(record: dict[str, Any]) -> dict[str, Any]:
    """A file's final record as the merged file holds it. Alone there, a row written again with a
    cost learnt late replaces nothing: its `resolves` would take its spend away. Nor is it a
    shard's: the merged file holds the job's rows, and its resume (its summary lost) would be
    refused as that one shard's (verify31 N1)."""
    record.pop("resolves", None)
    record.pop("shard", None)
    return record


def _duplicates_of(
    shards: list[Path], kept: dict[str, tuple[int, str, int]], seen: Counter[str], warn: Warn
) -> dict[str, Earlier]:
    """The records of rows in several files (`seen` more than once) that are not the one kept,
    less copies: a record the same as one already counted (a shard's file copied, a merged
    file beside a copy of one of its shards: CI artifacts are copies) is one attempt paid once,
    not two (verify30 N4: cost +35%, or doubled for a merged file given twice)."""
    copies: dict[str, set[bytes]] = {}  # row id -> the records counted, as bytes
    pending: list[tuple[int, dict[str, Any]]] = []
    for index, shard in enumerate(shards):
        for record in final_records(shard, other_jobs=True):
            if seen[record["id"]] > 1:
                pending.append((index, _as_merged(record)))
    earlier: dict[str, Earlier] = {}
    same = 0
    for index, record in sorted(pending, key=lambda item: kept[item[1]["id"]][2] != item[0]):  # the kept first
        text = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
        counted = copies.setdefault(record["id"], set())
        if text in counted:
            same += 1
            continue
        counted.add(text)
        if kept[record["id"]][2] != index:
            earlier.setdefault(record["id"], Earlier()).add(record)
    if same:
        warn(f"{same} record(s) are copies of another file's (the same attempt): counted once")
    return earlier


def _folded(record: dict[str, Any], earlier: dict[str, Earlier]) -> dict[str, Any]:
    folding = earlier.get(record["id"])
    if folding is None:
        return record
    record.pop("resolves", None)
    before = (record.get("earlier_records") or 0, record.get("earlier_spent") or 0.0)  # within its own file
    folded = folding.fold(record)
    folded["earlier_records"] += before[0]
    folded["earlier_spent"] += before[1]
    return folded


def _item_gate(shards: list[Path], job: Job | None) -> ItemGate:
    """The job's per-item gate, else the one every shard's summary records: the merged summary,
    its report and JUnit had failed items "every repeat must pass" that the gate passed (141
    failed for the job's 95: break68 F1)."""
    if job is not None:
        return ItemGate.from_threshold(job.run.pass_threshold)
    # Of the summaries there: one missing (a shard's lost) says nothing (verify69 F9).
    gates = {ItemGate.recorded(summary) for shard in shards if (summary := read_run_summary(shard))}
    return gates.pop() if len(gates) == 1 else ItemGate()


STALE_TEMPORARY_S = 3600  # a merge writing its temporary touches it far more often than this


def _remove_stale_temporaries(output: Path) -> None:
    """Temporaries of an earlier merge into `output` that a kill -9 left (break64 F7: a
    multi-MB `OUT.jsonlXXXXXXXX.tmp` stayed for good); only mkstemp's names, not touched for an
    hour (a merge still writing one keeps it fresh)."""
    name = re.compile(re.escape(output.name) + r"[a-z0-9_]{8}\.tmp")
    now = time.time()
    for path in output.parent.iterdir():
        with contextlib.suppress(OSError):
            info = path.lstat()
            if name.fullmatch(path.name) and stat.S_ISREG(info.st_mode) and now - info.st_mtime > STALE_TEMPORARY_S:
                path.unlink()
