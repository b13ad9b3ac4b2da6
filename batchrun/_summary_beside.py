"""The summary a run wrote beside its results file (`X.summary.json` beside `X.jsonl`), read
once for all a reader asks of it: its fields as written, whether it can be read at all,
whether it is this file's and this job's, and the key gap it counted.

One read, one view: `report` read the file five times (out-133), so a summary replaced while
it ran could vouch for the rows by one version and give the key gap of another.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._exceptions import ResultsError
from ._failure_text import clip
from ._files import read_regular_text
from ._journal_file import journal_first_at, journal_header, journal_key_gap, journal_path
from ._output_paths import named_results, summary_path
from ._pricing import money
from ._results import results_job
from ._status import StopReason
from ._summary_floor import digest_differs, records_appended, sealed_end


@dataclass(frozen=True)
class SummaryBeside:
    results: Path
    data: Any  # as parsed; None when not read
    why: str | None  # why not read: "absent", an OS error's words (never waited on), "not JSON"
    job: str | None  # the job the results file's first record names (None: none, or not read)
    # Whether the file's bytes up to a size differ from what the summary saw: one read of a
    # large file for all the views that ask (endpoint, doubts, changed).
    _differs: dict[int, bool] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def read(cls, results: Path) -> SummaryBeside:
        try:
            data, why = json.loads(read_regular_text(summary_path(results))), None
        except FileNotFoundError:
            data, why = None, "absent"
        except OSError as exc:
            data, why = None, exc.strerror or str(exc)
        except (ValueError, RecursionError):  # a summary nested past the reader too
            data, why = None, "not JSON"
        job = None
        if isinstance(data, dict):
            with contextlib.suppress(OSError, ResultsError):
                job = results_job(results)
        return cls(results, data, why, job)

    @property
    def kept(self) -> dict[str, Any]:
        """The summary as written ({} when absent or unreadable)."""
        return _as_written(self.data) if isinstance(self.data, dict) else {}

    def run_summary(self, any_file: bool = False) -> dict[str, Any]:
        """The summary (budget, stop); {} when absent or unreadable, or (unless `any_file`)
        written for another file: `report` and `history` took a copied summary's key gap,
        budget and stop as this run's (break52 F5).

        Only a handful of its scalar fields are used: for display, and `key_gap_usd`, which a
        resume counts as spent (_orchestration). The rows themselves are always counted again
        from the results file.
        """
        kept = self.kept
        if isinstance(kept.get("job"), str) and self.job is not None and kept["job"] != self.job:
            return {}  # another job's (break21 R16): its budget, stop and key gap are not this file's
        # One that names no file ("", ".", none) is read as this file's, as a resume reads it for its
        # key gap: "no summary beside it" there, and its key gap counted all the same (out-148 F5).
        named = named_results(kept)
        if not any_file and named is not None and named != self.results.name:
            return {}
        return kept

    def vouched(self) -> dict[str, Any]:
        """The summary, only when it can vouch for the file as it is: readable, naming this file,
        of its job, and written when the file had its size now. What answered the file is taken
        from no other: a summary naming no file said "simulator" of real answers, and the
        simulator's graders re-graded them (out-137 3), as a try-out's put beside a real shard
        of the same name did (out-116 F3)."""
        summary = self.run_summary()  # {} when it names another file; unreadable() when none
        if self.unreadable() or self.of_another_job():
            return {}
        try:
            size = self.results.stat().st_size
        except OSError:
            return {}
        if summary.get("results_bytes") != size or self._digest_differs(summary, size) or "results_edited" in summary:
            # Another file of its size in its place (out-138 F1); a summary of before the digest
            # vouches for nothing either: the sizes of small runs often agree (out-139 F8).
            return {}
        return summary

    def _digest_differs(self, summary: dict[str, Any], size: int) -> bool:
        if size not in self._differs:
            self._differs[size] = digest_differs(self.results, summary, size)
        return self._differs[size]

    def unreadable(self) -> str | None:
        """Why the summary is there but says nothing: not JSON, or not an object (cut short by a
        full disk, a 0-byte placeholder). Not "no summary": a gate cannot count the rows by it
        (out-129 F2: 30 of 105 rows removed, exit 0), as a resume refuses it."""
        path, results, data = summary_path(self.results), self.results, self.data
        if self.why == "absent":
            return None
        if self.why is not None:
            return f"{path}: cannot be read ({self.why}): the rows of {results.name} cannot be counted against its run"
        if not isinstance(data, dict):
            what = "not a JSON object"
        elif not (isinstance(data.get("total"), dict) and type(data["total"].get("rows")) is int):
            what = "no run's counts (`total.rows`) in it"  # {} or {"foo": 1} counts nothing either (out-132 F1)
        elif named_results(data) is None:
            # Every run and merge names its file: one that names none cannot be tied to this one,
            # and vouched for it with 56 of 105 rows gone, exit 0 and not a word (out-135 F2).
            what = "no `output` naming the file it was written for"
        elif not isinstance(data.get("job"), str):
            # Every run and merge names its job: `job: 3`, or none, passed as a summary (out-137 5, out-138 F4).
            what = "its `job` is not a name" if "job" in data else "no `job` naming the job it ran"
        else:
            return None
        return f"{path}: not a summary ({what}): the rows of {results.name} cannot be counted against its run"

    def of_another_job(self) -> str | None:
        """Why the summary written for this very file (its `output`) cannot vouch for it: the run
        was of another job than the file's first record names. The file was edited or replaced
        since (out-125 F1: one record's job changed, the other 104 rows were set aside as another
        job's and `report` passed on the one left); a gate cannot tell what it holds of its run."""
        named, ran = named_results(self.kept), self.kept.get("job")
        if named != self.results.name or not isinstance(ran, str):
            return None
        if self.job is None or ran == self.job:
            return None
        return (
            f"{self.results}: its summary is of a run of job {clip(ran)!r}, its first record of job "
            f"{clip(self.job)!r} (edited, or another job's file put in its place?): its rows cannot be "
            "checked against that run"
        )

    def of_another_file_and_job(self) -> str | None:
        """Why a summary beside the file, readable, is left out: written for another file, of
        another job than the file's first record names (another job's pair half-copied). Not
        "no summary", nor "unreadable": what readers and a resume said of it (out-173 F6)."""
        ran = self.kept.get("job")
        if not isinstance(ran, str) or self.job is None or ran == self.job or self.of_another_job():
            return None
        return (
            f"{summary_path(self.results)}: the summary of a run of job {clip(ran)!r}, not of job "
            f"{clip(self.job)!r} whose records {self.results.name} holds"
        )

    def doubts(self) -> list[str]:
        """Why the summary is not its run's, for a reader to say: another file's (left out), or
        one written when the file was smaller, with no journal of a run after it (lines appended
        since, such as two runs `cat`-ed together: the rows read are both's)."""
        results = self.results
        if (foreign := self.of_another_file_and_job()) is not None:
            return [f"{foreign}: left out (rows never written cannot be counted)"]
        summary = self.run_summary(any_file=True)
        named, written = named_results(summary), summary.get("results_bytes")
        if named is not None and named != results.name:
            return [
                f"{summary_path(results)}: the summary of {named}, not of {results.name}: left out "
                "(rows never written cannot be counted)"  # as with no summary at all (out-135 F10)
            ]
        try:
            size = results.stat().st_size
        except OSError:
            return []
        grown = size - self._sealed(written, size) if type(written) is int else 0
        if grown > 0 and not self.run_since() and not self.changed():
            return [
                f"{results}: {grown:,} byte(s) longer than when its summary was written, with no run since "
                "(lines appended: two runs put together?): its rows are read as one run"
            ]
        return []

    def unsealed(self) -> str | None:
        """Why the file cannot be checked against what its run wrote, for a gate to say: no summary
        beside it, or one of this file that says nothing of what the file held (no `results_bytes`,
        or neither digest). Not a failure (a file copied alone is read as it is), but the gate
        passed an edited night in silence (out-165 F4)."""
        cannot = "whether its records were edited since its run cannot be told"
        if not self.results.is_file():
            return None  # no file to tell of: said as such
        if self.why == "absent":
            return f"{self.results}: no summary of its run beside it: {cannot}"
        summary = self.run_summary()
        seen = any(isinstance(summary.get(name), str) for name in ("results_digest", "results_tail"))
        if summary and (type(summary.get("results_bytes")) is not int or not seen):
            return f"{self.results}: its summary does not say what the file held (its results_digest): {cannot}"
        return None

    def changed(self, shorter: bool = True) -> str | None:
        """Why the file is not the one its own summary saw (of this file, of its job): shorter (records
        removed), or its bytes up to where the summary saw it end are not those (its digest of them
        differs: records edited, another run's file put in its place). None when they are, or when no
        such summary says what it saw. A run only appends, a resume too: lines after that end are
        `doubts`. The gate passed a failing night whose failed records were replaced by another
        night's passing ones, exit 0 and not a word, where `report` said the rows were gone (out-149 F1).
        `shorter` False: only the bytes (a resume goes on from a file cut short, counting its summary)."""
        summary = self.run_summary()
        if isinstance(mark := summary.get("results_edited"), str) and not self.of_another_job():
            return f"{self.results}: {mark[:200]}: its rows are not its runs'"
        written = summary.get("results_bytes")
        seen = any(isinstance(summary.get(name), str) for name in ("results_digest", "results_tail"))
        if type(written) is not int or self.of_another_job():
            return None
        try:
            size = self.results.stat().st_size
        except OSError:
            return None
        if size < written:
            if not shorter:
                return None
            return (
                f"{self.results}: {written - size:,} byte(s) shorter than when its summary was written: records "
                "removed since (what they cost is not counted)"
            )
        if seen and self._digest_differs(summary, written):
            return (
                f"{self.results}: not the file its summary was written for (what it held then changed since: "
                "records edited, or another file put in its place): its rows are not its run's"
            )
        if size > written and not self.run_since() and records_appended(self.results, self._sealed(written, size)):
            # Only a run appends, and a run keeps its journal (or a batch run its batch state) until
            # its summary is written: lines after the summary's end with neither are appended by
            # hand. A later record of a row stands for it, so a failing night's failed rows
            # appended as passes got past the gate with only a warning (out-163 F1).
            return (
                f"{self.results}: {size - written:,} byte(s) appended since its summary was written, with no "
                "run since (records added by hand, or two runs put together): its rows are not its run's"
            )
        return None

    def _sealed(self, written: int, size: int) -> int:
        """Where the lines the file's runs appended end: past the summary's end (`written`) by
        what a resume's lookups appended before it was killed or refused (seal_looked_up)."""
        return sealed_end(self.results, self.run_summary(any_file=True), written, size) if size > written else written

    def run_since(self) -> bool:
        """Whether a run went on from the file since its summary: the journal of a run of its job
        (killed, or under way) is beside it. Every run keeps one until its summary is written, a
        batch-mode tick too; a finished batch-mode night keeps its batch state for good, and an
        empty file under the journal's name is none: either let appended lines through (out-165
        F1, F2). Nor is one whose attempts went out when the file was shorter than the summary saw:
        a journal of a run before it, or another file's copied beside it (out-173 F2)."""
        job = (journal_header(self.results) or {}).get("job")
        if not isinstance(job, str) or (self.job is not None and job != self.job):
            return False
        written, first = self.run_summary().get("results_bytes"), journal_first_at(self.results)
        return type(written) is not int or first is None or first >= written

    def key_gap(self) -> float:
        """The key's usage that the file's runs counted beyond its rows' reported costs (in no
        record): the summary's `key_gap_usd` (which adds up the runs it resumed) and what a run
        killed since then left in its journal. The readers show it beside the rows' cost
        (break14c N12: a file that cost $0.036 showed as a known $0.0003)."""
        counted = money(self.run_summary().get("key_gap_usd")) or 0.0
        return counted + journal_key_gap(journal_path(self.results))


def read_run_summary(results: Path, any_file: bool = False) -> dict[str, Any]:
    """SummaryBeside.run_summary, for a reader that asks nothing else of it."""
    return SummaryBeside.read(results).run_summary(any_file)


def file_key_gap(results: Path) -> float:
    """SummaryBeside.key_gap, for a reader that asks nothing else of it."""
    return SummaryBeside.read(results).key_gap()


def _as_written(data: dict[str, Any]) -> dict[str, Any]:
    """The summary with each field readers take from it of the type a run writes; one of
    another type (a hand edit, another tool's file) reads as absent. A budget of text, a
    stop that was a list and a `merged_from` of 5 were tracebacks in report --html and
    history, and a NaN budget was shown as "$nan" (break21 R9-R12)."""
    kept = dict(data)
    if data.get("budget_usd") is not None and money(data["budget_usd"]) is None:
        del kept["budget_usd"]
    if data.get("stop") is not None and data["stop"] not in list(StopReason):
        del kept["stop"]
    for name in ("stop_message", "output", "job", "job_fingerprint", "shard"):
        if data.get(name) is not None and not isinstance(data[name], str):
            del kept[name]
    merged = data.get("merged_from")
    if merged is not None and not (isinstance(merged, list) and all(isinstance(m, str) for m in merged)):
        del kept["merged_from"]
    return kept


EDITED = "records edited after a run's summary was written, before a resume went on from them"
REMOVED = "records removed or cut short after a run's summary was written, before a resume asked them again"


def edit_mark(results: Path) -> str | None:
    """What the summary a resume is about to replace says of edits to `results`: its own mark,
    carried on, or that the bytes it saw changed since. The resume goes on (counting what that
    summary said was spent: break44 F4), but its summary must not vouch for the edit: it did, and
    `report` passed a failed row edited to a pass (out-160 F2)."""
    beside = SummaryBeside.read(results)
    carried = beside.run_summary().get("results_edited")
    if isinstance(carried, str):
        return carried[:200]  # a summary anyone may have written: carried on, not grown
    # Records removed too (out-173 F1): the failing rows of a night taken out, and the resume asked
    # them again until they passed; its summary said nothing and the gate passed.
    changed = beside.changed()
    if changed is None:
        return None
    return REMOVED if beside.changed(shorter=False) is None else EDITED
