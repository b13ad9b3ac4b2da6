"""What answered a results file's rows, over every run of it, and the resumes that would mix.

A summary said only what answered the last run of its file. A `--simulate` resume of a real
night (nothing left to send) relabelled it "simulator", and the simulator's graders then decided
its real answers' verdicts, the gate passing (out-116 F1); the other way, a try-out shard resumed
against the endpoint was labelled the endpoint, and the CI gate passed on made-up answers with no
warning (out-116 F2). So a file keeps the endpoint of every run (merged: _simulated), a killed
run's named by its journal, and a resume that would add the simulator's answers to an
endpoint's, or the reverse, is refused before anything is written.
"""

from __future__ import annotations

from pathlib import Path

from ._exceptions import ConfigError, JobError, ResultsError
from ._journal_file import journal_header, journal_path, read_journal
from ._reader import final_records
from ._simulated import MIXED_ENDPOINTS, merged_endpoint, simulated
from ._summary_beside import SummaryBeside, read_run_summary

_WHO = {True: ("the built-in simulator", "an endpoint"), False: ("an endpoint", "--simulate")}


def recorded_endpoint(results: Path | SummaryBeside) -> str | None:
    """What answered `results`, by the summary beside it, only when that summary vouches for the
    file as it is now (SummaryBeside.vouched). None when no summary says."""
    beside = results if isinstance(results, SummaryBeside) else SummaryBeside.read(results)
    endpoint = beside.vouched().get("endpoint")
    return endpoint if isinstance(endpoint, str) else None


def earlier_endpoints(output: Path, resuming: bool) -> list[str]:
    """The endpoints that answered `output`'s earlier runs, as its summary (when it is resumed)
    and a killed run's journal name them (none when neither says). The journal's, resumed or not:
    a run killed before its first record left an empty file, taken as new, whose journal's
    attempts this run records as its own rows (out-117 F1)."""
    summary = read_run_summary(output).get("endpoint") if resuming else None
    header = journal_header(output) or {}
    return [endpoint for endpoint in (summary, header.get("endpoint")) if isinstance(endpoint, str)]


def resumed_endpoint(output: Path, endpoint: str, resuming: bool) -> str:
    """What the summary of this run of `output` against `endpoint` says answered the file: this
    endpoint, with those of the runs it resumes. Raises ConfigError for a resume that would mix
    the simulator's answers with an endpoint's in one file."""
    earlier = earlier_endpoints(output, resuming)
    for before in earlier:
        if simulated(before) != simulated(endpoint):
            what, now = _WHO[simulated(before)]
            raise ConfigError(
                f"{output} was answered by {what}: resumed with {now}, it would hold made-up answers beside a model's, "
                "and its gate could not tell them apart; run into a new file (-o)"
            )
    return merged_endpoint([*earlier, endpoint]) or endpoint


def answered_by(beside: SummaryBeside) -> str | None:
    """What answered a results file, by the summary of its run or, without one (a run killed, its
    summary not copied with it), the journal its run kept; None when neither says."""
    # Only a summary that saw the file as it is: a try-out's beside a model's file copied over
    # it (or one appended to since) said "simulator" of a model's answers, or the reverse (out-138 F1).
    return recorded_endpoint(beside) or _journal_endpoint(beside.results)


def _journal_endpoint(results: Path) -> str | None:
    """The endpoint a killed run's journal names, when the journal is of this file: one of its
    records' generation ids is among the journal's attempts' (or it holds no record). A journal
    left beside another file copied over the killed run's vouched for that file (out-138 F6)."""
    endpoint = (journal_header(results) or {}).get("endpoint")
    if not isinstance(endpoint, str):
        return None
    try:
        journaled = {a.get("gen") for c in read_journal(journal_path(results), None).values() for a in c.attempts}
        recorded = {r.get("generation_id") for r in final_records(results, journal=False)}
    except (OSError, ResultsError, JobError):
        return None
    # Records with no generation id (an endpoint that sends none) cannot be tied to it (out-139 F6).
    return endpoint if not recorded or (recorded - {None}) & journaled else None


_SIMULATOR_WORDS = {
    "simulator": "answered by the built-in simulator (--simulate), not by a model",
    MIXED_ENDPOINTS: "answered in part by the built-in simulator (a merge of simulated and real shards)",
    None: "nothing beside it (a summary, a journal) says what answered it: made-up answers cannot be told apart",
}


def _kind(endpoint: str | None) -> str | None:
    """ "simulator", MIXED_ENDPOINTS, "model", or None (not known)."""
    if endpoint is None or endpoint == MIXED_ENDPOINTS:
        return endpoint
    if simulated(endpoint):
        return "simulator"
    # An endpoint is a URL: "" or "SIMULATOR" says nothing of what answered (out-138 F4).
    return "model" if endpoint.startswith(("http://", "https://")) else None


def simulator_note(beside: SummaryBeside) -> str | None:
    """What a gate over the file says of the simulator's answers in it (out-108 F7), by the
    summary or, without one, the journal (a kill -9'd try-out); None when none are known."""
    kind = _kind(answered_by(beside))
    return f"{beside.results}: {_SIMULATOR_WORDS[kind]}" if kind in ("simulator", MIXED_ENDPOINTS) else None


def unlike_answers(before: SummaryBeside, after: SummaryBeside) -> list[str]:
    """What a comparison of two files must say of what answered them: the simulator's answers
    against a model's read as "no regression" in silence (out-136 F3), as did a kill -9'd try-out,
    a merge with a try-out shard in it, and a try-out copied without its summary (out-137 4)."""
    kinds = {beside.results: _kind(answered_by(beside)) for beside in (before, after)}
    if len(set(kinds.values())) == 1:
        return []  # both the simulator's, both a model's, or neither known
    # Of a file edited since its summary, that is said (by its reader) rather than "nothing beside it".
    said = {beside.results for beside in (before, after) if beside.changed() is None}
    return [f"{path}: {_SIMULATOR_WORDS[kind]}" for path, kind in kinds.items() if kind != "model" and path in said]
