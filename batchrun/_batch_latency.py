"""A pass threshold that batch mode could never check, refused before anything is sent.

A batch row has no latency (a batch answers within 24 h), so its `max_latency_ms` checks do not
apply. A threshold whose rows have no other check was met by no row: the run paid for every
row, then exited 1, "could not be checked". Validation cannot say it: `--mode` overrides
run.mode, and rows with non-text parts go in sync mode, where latency is measured (out-138 F3).
"""

from __future__ import annotations

from ._job import Job, PromptSpec, rows_kinds
from ._judge import check_kinds
from ._matrix import request_params
from ._parts import non_text_part
from ._request_body import request_body
from ._settings import RunSettings


def _checked(job: Job, prompt: PromptSpec, model: str, params: dict[str, object], unknown_prices: bool) -> bool:
    """Whether a row of `prompt` for `model` may be checked in batch mode: it may go in sync mode
    (non-text parts, as run.batch_multimodal sends them; a `:free` model's, $0, or under
    allow_unknown_prices an unknown price's, under a limit), or some check of it is not a latency
    check (a dataset's rows not read yet: assumed so). The prices are read later, in pre-flight:
    a row that may go in sync mode is taken as one that does (out-146 F8)."""
    rows = rows_kinds(prompt)
    if rows is None:
        return True
    kinds = check_kinds(list(prompt.checks)) | rows
    body = request_body(model, list(prompt.messages), request_params(job, params, prompt.params))
    sync = unknown_prices or model.endswith(":free") or non_text_part(body) is not None
    return "checks" in kinds if sync else "untimed" in kinds


def latency_only_threshold(job: Job, settings: RunSettings, given: float | None = None) -> str | None:
    """Why `settings.pass_threshold`, or `given` (--pass-threshold, over the whole job), could
    never be checked in this batch-mode run, or None."""
    threshold = settings.pass_threshold
    if settings.mode != "batch" or (threshold is None and given is None):
        return None
    checked = {
        (m.id, p.id): _checked(job, p, m.id, m.params, settings.allow_unknown_prices)
        for m in job.models
        for p in job.prompts
    }
    scopes: list[tuple[str, set[tuple[str, str]]]] = [("--pass-threshold", set(checked))] if given is not None else []
    if isinstance(threshold, (int, float)):
        scopes.append(("run.pass_threshold", set(checked)))
    elif isinstance(threshold, dict):
        scopes += [
            (f"run.pass_threshold.{kind}", set(checked)) for kind in ("overall", "per_item") if kind in threshold
        ]
        scopes += [
            (f"run.pass_threshold.models.{m}", {c for c in checked if c[0] == m}) for m in threshold.get("models", {})
        ]
        scopes += [
            (f"run.pass_threshold.prompts.{p}", {c for c in checked if c[1] == p}) for p in threshold.get("prompts", {})
        ]
    for label, cells in scopes:
        if cells and not any(checked[cell] for cell in cells):
            return (
                f"{label}: in batch mode it could never be checked: its rows' only checks are max_latency_ms, and a "
                "batch row has no latency; run them with --mode sync, or give them another check"
            )
    return None
