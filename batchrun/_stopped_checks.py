"""Judge checks a stop left without a verdict: read from a record, by the summary and a resume.

A grader never asked is not a grader that failed. A stop of the run (a deadline, a signal, the
budget) or of the grader's own scope (an availability code, a server's wait over the cap, a
daily cap) writes the check "not graded: ...", and a resume asks the grader again (_ungraded).
"""

from __future__ import annotations

import re
from typing import Any

STOPPED = "not graded: the run stopped"
# A grader whose model or rate-limit scope was stopped was never asked: not its failure either
# (verify25 N1: those rows stayed undecided for ever, exit 1 "a grader failed" on every resume).
GRADER_STOPPED = "not graded: the grader is stopped"
EITHER = b"not graded: the "  # what both begin with
# A model's daily cap is not a state a resume ends: its rows exit 1, as an answer's do.
_DAILY_CAP = re.compile(r"not graded: the grader is stopped \(daily[ _]cap\)")


def cut_by_stop(entry: Any) -> bool:
    """A judge check's entry that a stop left without a verdict."""
    if not isinstance(entry, dict) or entry.get("pass") is not None:
        return False
    return any(stop_text(error) for error in _errors(entry))


def resumable_cut(entry: Any) -> bool:
    """Cut by a stop that a resume ends (not only a model's daily cap)."""
    if not cut_by_stop(entry):
        return False
    return any(stop_text(error) and not _DAILY_CAP.search(error) for error in _errors(entry))


def _errors(entry: dict[str, Any]) -> list[Any]:
    """The check's own failure, and each of its graders'."""
    judge = entry.get("judge")
    graders = judge.get("graders") if isinstance(judge, dict) else None
    errors = [entry.get("error")]
    if isinstance(graders, list):
        errors += [g.get("error") for g in graders if isinstance(g, dict)]
    return errors


def stop_text(error: Any) -> bool:
    """A grader's or a check's failure that says a stop cut it."""
    return isinstance(error, str) and (STOPPED in error or GRADER_STOPPED in error)
