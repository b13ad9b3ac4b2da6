"""Where a run's or a merge's summary goes: refused before anything is written, unless it is free
or holds a summary batchrun wrote."""

from __future__ import annotations

import json
from pathlib import Path

from ._exceptions import ConfigError
from ._files import irregular_kind, open_regular
from ._lock import lock_created
from ._output_paths import named_results, summary_path

_SUMMARY_MAX_BYTES = 64 << 20  # past this, no summary batchrun wrote


def refuse_summary_place(output: Path, new: bool) -> None:
    """Refuse the place the summary of results `output` is to be written (`new`: beside a new
    results file) when it is not a regular file, or (new) holds a file that is not a batchrun
    summary, or the summary of another results file. A summary's name
    held by a folder was found once every row was paid (exit 11), and a FIFO there was replaced
    in silence (break44 F6): both are known before anything is sent; a merge replaced a user's
    file there, or wrote its file and then failed on a folder (out-125 F2)."""
    summary = summary_path(output)
    try:
        kind = irregular_kind(summary.stat().st_mode)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"{summary}: the summary cannot go there: {exc.strerror or exc}") from None
    if kind is not None:
        raise ConfigError(f"{summary}: not a regular file ({kind}): a summary goes there; move it away")
    # Nor, beside a new run's file, one of someone else's: replaced in silence, where a foreign
    # results file, lock or journal is refused (break59 F10: run.output aimed at any *.summary.json).
    # A resume's is read, and refused there if it is not the file's own (earlier_summary).
    if not new:
        return
    try:
        with open_regular(summary) as handle:
            text = handle.read(_SUMMARY_MAX_BYTES + 1)  # a foreign file may be any size
        data = json.loads(text) if len(text) <= _SUMMARY_MAX_BYTES else None
    except (OSError, ValueError, RecursionError):  # 200,000 [ was a traceback (verify61 F5)
        data = None
    # Its keys, in whatever order: a summary re-saved with sorted keys is still one (verify60 F10).
    if not (isinstance(data, dict) and {"job", "total", "models", "prompts"} <= data.keys()):  # what every summary has
        raise ConfigError(f"{summary}: not a batchrun summary: a summary goes there; it was left untouched")
    named = named_results(data)
    if named is None:
        # Every run and merge names its file: one naming none may be anyone's, with what it
        # counted, and was replaced in silence (out-144 F8d).
        raise ConfigError(
            f"{summary}: names no results file (no `output`): it may be another run's; it was left untouched; "
            "move it away, or give another --output"
        )
    if named != output.name:
        # A pair copied or renamed apart: it was replaced in silence, with what it counted (out-143 F1).
        raise ConfigError(
            f"{summary}: the summary of {named}, not of {output.name}: it was left untouched; move it "
            "away, or give another --output"
        )


def results_created(output: Path, new: bool) -> None:
    """`output` exists now: flock it for the lock held on its name (_lock.lock_created). Of a
    `new` run, the summary beside it goes: that of a results file removed since (or emptied),
    which the run replaces at its end. Left there, a kill -9 before that end made the resume
    read it as the new file's: "records removed", exit 12 for good, and the removed file's spend
    counted against the budget (out-184 F2)."""
    lock_created(output)
    if new:
        summary_path(output).unlink(missing_ok=True)
