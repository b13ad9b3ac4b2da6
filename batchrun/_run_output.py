"""The results file a run writes: which one, whether it may, and what earlier runs left beside it."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from ._batch_state import state_path
from ._client import OpenRouterClient
from ._earlier_costs import EarlierCosts, resolve_earlier_costs
from ._exceptions import ConfigError, ResultsError
from ._files import open_regular, refuse_shared_output, resolved
from ._formats import utc
from ._job import Job
from ._job_runs import incomplete_shards, latest_incomplete
from ._journal import recover
from ._journal_file import a_fragment_of_its_run, journal_header, journal_path
from ._killed_run import summary_key_seen
from ._matrix import Shard, matrix_requests, shard_text
from ._options import Notice, RunOptions
from ._output_paths import (
    fresh_output,
    job_folder,
    job_path_problem,
    named_results,
    sidecar_name_problem,
    summary_path,
    write_json_atomically,
)
from ._pricing import money
from ._reader import MAX_RECORD_BYTES, ScanResult, Warn
from ._record_head import state_blob
from ._results import (
    final_records,
    first_record,
    foreign_record,
    last_record,
    repair_torn_tail,
    scan_states,
    whole_record,
)
from ._summary_beside import SummaryBeside, read_run_summary
from ._summary_floor import changed_after, results_size
from ._summary_place import refuse_summary_place
from ._ungraded import stopped_gradings


def resolve_output(job: Job, options: RunOptions, now: float, notice: Notice) -> Path:
    """The run's results file, as an absolute path: a library caller's chdir mid-run sent the
    summary and the rows written again to another folder, or nowhere (verify69 F4)."""
    # Joined, not normalised: `link/../r.jsonl` is the kernel's to resolve (verify70 F2: ./r.jsonl).
    return Path.cwd() / _output(job, options, now, notice)


def _output(job: Job, options: RunOptions, now: float, notice: Notice) -> Path:
    if options.output is not None:
        refuse_shared_output(options.output)  # before its lock: /dev/stdout's is beside a pipe
        if options.resume and not _run_left(options.output):
            # A resume's -o mistyped (a wrong date) bought the whole job again without a word
            # (break42 F5); said under --quiet too. A collect tick whose submit never ran goes on.
            notice(f"warning: --resume: {options.output} holds no run: nothing to resume, a new run starts there")
        # A link's sidecars would be the link's own, not its file's: a resume through
        # `latest.jsonl -> real.jsonl` read no summary and spent the key gap again (G3).
        return _followed(options.output)
    if options.resume:
        shard = shard_text(options.shard)
        found = latest_incomplete(job.name, job.run.output, shard, options.retry_errors, options.fresh_simulator)
        part = "" if shard is None else f" (shard {shard})"
        if found is None:
            shards = incomplete_shards(job.name, job.run.output) if shard is None else []
            hint = f"; shard run(s) {', '.join(shards)} are: give --shard {shards[0]}" if shards else ""
            # Where it looked: the job's outputs are relative to the folder it is run from (out-152 F5).
            where = job_folder(job.name, job.run.output)
            raise ConfigError(
                f"--resume: no incomplete run of {job.name!r}{part} was found in {where}{hint}; or give --output"
            )
        refuse_shared_output(found)  # before the notice: stderr may be this file (verify43 F3)
        which = "run" if options.retry_errors else "incomplete run"
        notice(f"resuming {found}, the most recent {which} of {job.name}{part}")
        return _job_chosen(found)
    return _job_chosen(fresh_output(job.name, job.run.output, now, options.shard.tag if options.shard else ""))


def killed_run_notice(job: Job, options: RunOptions, notice: Notice) -> None:
    """A new run of a job (its lock held) beside a run of it that was killed (its journal left: attempts
    that may have been paid for, recorded nowhere): said, under --quiet too. Cron heard nothing of a
    killed night but from `history` (out-108 F6)."""
    if options.output is not None or options.resume:
        return
    shard = shard_text(options.shard)
    found = latest_incomplete(job.name, job.run.output, shard, False, options.fresh_simulator)
    if found is not None and journal_path(found).exists():
        notice(
            f"warning: {found}: an earlier run of {job.name} left attempts no record holds (killed, or its "
            "writes failed; its attempt journal is there): --resume finishes it"
        )


def _job_chosen(path: Path) -> Path:
    """The results file the job chose (`run.output`, or the default): never through a link out
    of the working folder; and when it is a link, its file, whose sidecars are its own, as for
    -o (out-108 F1: the first run's summary beside the link, the resume's beside the file)."""
    if (problem := job_path_problem(path, "the job's results file")) is not None:
        raise ConfigError(problem)
    return _followed(path)


def _followed(path: Path) -> Path:
    """`path`, or the file its link leads to; never into folders that do not exist: the folders
    made are those of the path given, not a dangling link's (as for a page: break23)."""
    if not path.is_symlink():
        return path
    target = resolved(path)
    if not target.parent.is_dir():
        raise ConfigError(f"{path}: its link leads into {target.parent}, which does not exist: name the file itself")
    return target


def _run_left(output: Path) -> bool:
    """Whether a run of `output` left anything a resume goes on from: records, a summary, a
    batch record or a journal (an empty file alone is a shell's `: > r.jsonl`: verify45 N5)."""
    try:
        if output.stat().st_size > 0:
            return True
    except OSError:
        if output.is_symlink():
            return True  # dangling: check_output says what it is
    return any(path.exists() for path in (summary_path(output), state_path(output), journal_path(output)))


def check_output(output: Path, job: Job, resume: bool, shard: Shard | None = None) -> bool:
    """May this run write `output`? True when it already holds this job's results (resume them).
    Only a file whose first record is this job's is ever appended to or repaired; any other
    existing file is refused and left byte for byte as it was."""
    if output.name.endswith(".summary.json") and (problem := sidecar_name_problem(output)) is not None:
        raise ConfigError(problem)  # said first: "not a batchrun results file (not JSON)" (out-176 F4)
    try:
        info = output.stat()
    except FileNotFoundError:
        info = None
    if info is not None:
        refuse_shared_output(output)
    first = None
    if info is not None and info.st_size > 0:
        try:
            first = first_record(output)
        except ResultsError as exc:
            if not (resume and a_fragment_of_its_run(output, job.name, MAX_RECORD_BYTES)):
                raise ConfigError(f"{exc}: it was left untouched; give another --output") from None
        owner = None if first is None else first["job"]
        if owner is not None and owner != job.name:
            raise ConfigError(
                f"{output} holds results of job {owner!r}, not {job.name!r}: it was left untouched; "
                "give another --output"
            )
    # After what an existing file is: its name is the next thing wrong with it.
    problem = sidecar_name_problem(output)
    if problem is not None:
        raise ConfigError(problem)
    refuse_summary_place(output, new=info is None or info.st_size == 0)
    merged = read_run_summary(output) if info is not None else {}
    if merged.get("merged_from") and merged.get("complete") is False:
        # A partial merge's resume paid again for the rows of the shard it lacks, although that
        # shard's own file had answered them (out-130 F1). A whole one's resume looks up costs.
        names = merged["merged_from"]
        shards = ", ".join(Path(name).name for name in names[:3]) + (", ..." if len(names) > 3 else "")
        raise ConfigError(
            f"{output} is a partial merge of {shards}: it was left untouched; resume the shards (each with "
            "its --shard), or run the one missing, and merge them again"
        )
    if resume:  # an empty file too: a shard killed before its first record left its journal
        _refuse_another_shard(output, shard, first)
    if resume and info is None and summary_path(output).exists():
        # Removed from beside its summary: resumed as new, the summary and the spend of its runs
        # were replaced in silence (out-143 F1). Emptied (below), it is resumed with that spend.
        raise ConfigError(
            f"{output} is not there, but its summary is: put the results back to resume them, create the file "
            f"empty (: > {output.name}) to resume counting what its runs spent, or move the summary away"
        )
    if info is None or info.st_size == 0:
        # Emptied beside its summary (logrotate's copytruncate, `: >`): resumed, so the spend the
        # summary counted is not forgotten; read as new, the rows were all bought again past the
        # budget (verify69 F1).
        return resume and info is not None and summary_path(output).exists()
    if not resume:
        # Appending a second run would mix two runs in one file; continuing is explicit.
        raise ConfigError(
            f"{output} already holds results of {job.name}: add --resume to continue that run, or give another --output"
        )
    try:
        foreign = foreign_record(output, job.name)
    except OSError as exc:
        raise ConfigError(f"{output}: cannot be read: {exc.strerror or exc}") from None
    if foreign is not None:
        raise ConfigError(
            f"{foreign}, after rows of {job.name!r}: a resume would mix two jobs in one file; it was left "
            "untouched; give another --output"
        )
    return True


def _refuse_another_shard(output: Path, shard: Shard | None, first: dict[str, Any] | None) -> None:
    """A resume continues the shard its file ran (its summary says which): resumed without
    --shard, a shard's file was run to the whole matrix, every row of the other shards paid
    again, exit 0 (break30 F1); a run killed before its first summary, its journal's header (verify30
    N1); a file with neither, its first or last record (a shard's records name it: verify31 N1; an
    older batchrun's file resumed by this one has them after its own: verify34 N1). Only records
    of an older batchrun, with neither beside them, cannot say."""
    summary = read_run_summary(output) or journal_header(output) or _shard_named(first)
    if not summary and first is not None:
        summary = _shard_named(last_record(output))
    ran, wanted = summary.get("shard"), shard_text(shard)
    if "shard" not in summary or ran == wanted or not (ran is None or isinstance(ran, str)):
        return
    if ran is None:
        raise ConfigError(f"{output} holds a run of the whole job, not shard {wanted}: resume it without --shard")
    other = "without --shard" if wanted is None else f"with --shard {wanted}"
    raise ConfigError(
        f"{output} holds shard {ran} of the job: resume it with --shard {ran} ({other}, the rows of "
        "other shards would be sent into it)"
    )


def _shard_named(record: dict[str, Any] | None) -> dict[str, Any]:
    """{"shard": "K/N"} of a sharded run's record; {} (cannot say) for a record without one:
    a whole job's, or one of a batchrun that did not write it."""
    return {"shard": record["shard"]} if record is not None and isinstance(record.get("shard"), str) else {}


def release_in_summary(output: Path, released: float) -> None:
    """Worst cases an earlier run counted that a resume found were never charged (_killed_run
    released_charge), taken out of that run's summary at once: a kill of the resume left them
    counted again by the next (verify39 F1). Its readings go with them: measured."""
    earlier = dict(earlier_summary(output))
    if not earlier:
        return
    earlier["key_gap_usd"] = round(max(0.0, (money(earlier.get("key_gap_usd")) or 0.0) - released), 8)
    earlier.pop("key_readings", None)
    write_json_atomically(summary_path(output), earlier)


def earlier_summary(output: Path) -> dict[str, Any]:
    """The summary an earlier run wrote beside `output`, for what it counted as spent beyond
    the records (`key_gap_usd`). One that is there but unreadable, or another file's, is refused:
    read as none, the resume spent the budget again (verification of break14e, F9)."""
    beside = SummaryBeside.read(output)
    earlier = beside.run_summary(any_file=True)
    path = summary_path(output)
    named = named_results(earlier)
    if path.exists() and not earlier and (foreign := beside.of_another_file_and_job() or beside.of_another_job()):
        raise ConfigError(f"{foreign}: move it away to resume")
    if path.exists() and not earlier:
        raise ConfigError(
            f"{path}: not the summary of {output.name} (unreadable): what earlier runs counted as spent beyond "
            "the records cannot be read; move it away to resume"
        )
    if path.exists() and named is not None and named != output.name:
        # A pair renamed together is the commonest cause: said, with the way on (break35 F8).
        raise ConfigError(
            f"{path}: the summary of {named}, not of {output.name}: if the two were renamed together, "
            f'set its "output" to {output.name} (and rename its .batches.json too, if there is one); else move it '
            "away to resume"
        )
    return earlier


def _unterminated_row(output: Path, job: str) -> set[str]:
    """The row of a whole record of `job` on a last line without its newline: the scan passes it
    over as torn, and the resume's repair keeps it (out-143 F6: a row the job no longer has went
    unseen). Another job's is the repair's to refuse, as such."""
    with open_regular(output) as reader:
        size = os.fstat(reader.fileno()).st_size
        reader.seek(max(0, size - 1))
        if size == 0 or reader.read(1) == b"\n":
            return set()  # every resume: one byte read, not the tail's 32 MiB
        reader.seek(max(0, size - MAX_RECORD_BYTES - 1))
        tail = reader.read()
    record = whole_record(tail[tail.rfind(b"\n") + 1 :])
    return {record["id"]} if record is not None and record["job"] == job else set()


def _foreign_rows_problem(output: Path, states: ScanResult, job: Job, shard: Shard | None) -> str | None:
    """Why resuming `output` would leave a file no gate accepts: rows it holds that the job
    (this shard of it) no longer has. They were kept and counted in the summary, exit 0, and
    then `report --job` and `merge` refused the file for ever (break24 F8)."""
    unterminated = _unterminated_row(output, job.name)
    stray = (states.ids() | unterminated) - {request.id for request in matrix_requests(job, shard)}
    if not stray:
        return None
    part = "" if shard is None else f" (shard {shard.index}/{shard.count})"
    head = f"{output}: {len(stray)} row(s) of the file are not in the matrix of job {job.name!r}{part}, e.g. id "
    head += min(stray)[:12]
    if shard is not None and not stray - {request.id for request in matrix_requests(job)}:
        # All the job's: another shard's, or a shard file of an earlier batchrun, which split
        # an item's repeats over the shards (out-136 F4).
        return (
            f"{head}: they are another shard's of this job (run with another --shard, or by a batchrun before "
            "shards kept an item's repeats together): run this shard into a new --output"
        )
    # A whole record on a last line without its newline: the readers pass it over as torn, where
    # they refuse whole lines; the resume's repair would keep it (out-144 F7: the message said
    # `report --job` and `merge` refused the file, which they did not).
    kept = "`report --job` and `merge` would refuse the file"
    if stray <= unterminated:
        kept = "the resume would keep its last line (a whole record, without its newline)"
    return (
        f"{head}: its models, variables, dataset or repeat changed since they ran, and {kept}; run into a new "
        "--output, or resume with the job as it was"
    )


def resume_states(output: Path, warn: Warn) -> ScanResult:
    """Each row's state for a resume: the scan's, from each line's head (fast). Where the last run
    set lines aside (its summary's `unread_lines`), left no summary, or the file changed after it
    (a crash, an edit), a line whose head is a record's and the rest not is no row's state: the
    readers set it aside, so the row is sent again (verify35 M1: the resume took it as done, the
    gate said it missing, exit 12 for ever). A full read costs ~25 us a line, five times the
    scan: only where it can find something."""
    states = scan_states(output, warn)
    earlier = read_run_summary(output)
    if earlier and not earlier.get("unread_lines") and not changed_after(output, earlier):
        return states
    read: dict[bytes, bytes] = {}
    for record in final_records(output, lambda _: None, journal=False):  # said by the scan, and at the end
        state = (record.get("fingerprint") or "", record["status"], record.get("reason"), bool(record.get("retryable")))
        read[record["id"].encode()] = state_blob(*state)
    return replace(states, _states=read)


async def earlier_work(
    job: Job, options: RunOptions, output: Path, resuming: bool, client: OpenRouterClient, notice: Notice
) -> ScanResult | None:
    """What earlier runs left in `output`: a torn tail mended, the attempts a crash left in the
    journal recorded (_journal), then the rows' states; None for a fresh output."""
    rows = matrix_requests(job, options.shard)
    said: list[str] = []  # the first scan's warnings: said unless the file changes before the second
    first = resume_states(output, said.append) if resuming and output.exists() else None
    if first is not None and (problem := _foreign_rows_problem(output, first, job, options.shard)) is not None:
        # Before anything is written: a refused resume had appended "crashed" records and cut a torn tail (out-102 F7).
        raise ConfigError(problem)
    # Whether the summary's `runs` are every run of the file: its own say so, and nothing came after it.
    before, size = read_run_summary(output), results_size(output)
    listed = not size or (before.get("runs_complete") is True and before.get("results_bytes") == size)
    mended = repair_torn_tail(output, job.name) if resuming else None
    if mended:
        notice(f"{output}: {mended}")
    now = utc(options.clock.time())
    limit = min(job.run.timeout_s, job.run.deadline_s or job.run.timeout_s)  # the lookups of what a crash left
    found = await recover(output, (job.name, job.fingerprint, shard_text(options.shard)), rows, client, now, limit)
    if found.rows:
        notice(
            f"{output}: {found.rows} row(s) had attempts an earlier run left unrecorded (killed, or its results could "
            f"not be written): recorded as skipped (crashed); {found.held} of unknown cost, their worst cases held"
        )
    for warning in found.warnings:
        notice(f"warning: {warning}")
    if found.orphans:
        notice(
            f"{output}: {found.orphans} row(s) the job no longer has had attempts in flight when an earlier run "
            f"was killed: ${found.orphans_usd:.6f} counted as spent (key_gap_usd), no record written"
        )
    # A killed run that wrote no record may have left readings of the key all the same: its batches
    # were charged with no record yet (verify38 N1: without them, their worst cases counted).
    if not (resuming or found.rows or found.key_gap or found.key_seen):
        return None
    if not output.exists():
        # A crashed run that wrote no record left only spend beyond any record: still counted.
        return (
            ScanResult({}, 0.0, 0, found.key_gap, key_seen=found.key_seen) if found.key_gap or found.key_seen else None
        )
    # The summary as it was at the start: recovery and a torn tail's repair do not write it.
    costs, summary, killed = EarlierCosts(), before, bool(found.rows or found.key_gap or found.key_seen)
    if resuming and not summary and not killed and first:
        # Not a killed run's (its journal says what it spent beyond its records): a file copied alone (out-121 F3).
        notice(
            f"warning: {output} has no summary beside it: what its runs spent beyond their records (key_gap_usd) "
            "is not known, and costs looked up for its rows are taken only where they raise what they counted"
        )
    if _may_hold_unknown_costs(summary):
        requests = {request.id: request for request in matrix_requests(job, options.shard)}
        costs = await resolve_earlier_costs(output, requests, client, now, limit, summary, found.asked)
        for line in costs.notices(output):
            notice(line)
    if first is None or mended or found.rows or costs.rows:
        states = resume_states(output, lambda message: notice(f"warning: {message}"))
    else:  # the file as the first scan read it
        states = first
        for message in said:
            notice(f"warning: {message}")
    # A killed run's readings: in its journal, or carried on by a run that could not read the key.
    seen = found.key_seen or summary_key_seen(summary)
    return replace(
        states,
        key_gap_usd=found.key_gap,
        regrade=stopped_gradings(output),
        key_seen=seen,
        costs_moved_usd=costs.moved,
        costs_raised_usd=costs.raised + found.raised,
        runs_complete=listed and not (mended or killed),
    )


def _may_hold_unknown_costs(earlier: dict[str, Any]) -> bool:
    """Whether rows of a file may have a cost to look up: unknown or in doubt, as its summary
    `earlier` counts them, or with no summary of it to say (a run killed, a file copied alone). A
    resume reads the file once more to find them only then."""
    total = earlier.get("total")
    return not isinstance(total, dict) or total.get("cost_unknown_rows") != 0 or earlier.get("cost_doubted_rows") != 0
