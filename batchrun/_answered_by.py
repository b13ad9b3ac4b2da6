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

from ._exceptions import ConfigError
from ._journal_file import journal_header
from ._simulated import merged_endpoint, simulated
from ._summary_beside import SummaryBeside, read_run_summary

_WHO = {True: ("the built-in simulator", "an endpoint"), False: ("an endpoint", "--simulate")}


def recorded_endpoint(results: Path) -> str | None:
    """What answered `results`, by the summary beside it, only when that summary vouches for the
    file as it is now (SummaryBeside.vouched). None when no summary says."""
    endpoint = SummaryBeside.read(results).vouched().get("endpoint")
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
