"""The job's pass thresholds checked against what it holds: each one must be able to apply.

A threshold that can never apply turned a gate off in silence (a typo in a model's name), or
failed every run (exit 1, "could not be checked") where validate had said ok (out-135 F8).
"""

from __future__ import annotations

from typing import Any

from ._exceptions import Problem
from ._job_source import JobSource

NEVER_CHECKED = "no prompt of the job has a check: this threshold could never be checked"


def threshold_problems(source: JobSource, rows: dict[str, set[str] | None]) -> list[Problem]:
    """What is wrong with `run.pass_threshold`; `rows` holds, by prompt id, what its rows'
    own checks hold (an empty set: none; None: not known, as a dataset's may bring some)."""
    data: dict[str, Any] = source.data
    problems: list[Problem] = []
    threshold = data.get("run", {}).get("pass_threshold")
    models = {m if isinstance(m, str) else m["id"] for m in data["models"]}
    named = {"models": models, "prompts": {p["id"] for p in data["prompts"]}}
    for kind, known in named.items() if isinstance(threshold, dict) else ():
        for name in sorted(set(threshold.get(kind, {})) - known, key=str):  # a typo must not turn a gate off
            message = f"no {kind[:-1]} {name!r} in {kind}: this threshold would never apply"
            problems.append(source.problem(("run", "pass_threshold", kind, str(name)), message, at_key=True))
    # Nor a threshold on a prompt with nothing to check (no checks of its own or by default, and
    # no dataset whose rows may bring some): it passed in silence (verify32).
    # In batch mode a row has no latency; but which rows go by batch is known only when the run
    # prices them ($0 ones and, under batch_multimodal: sync, non-text ones go in sync mode), and
    # --mode overrides run.mode: a latency-only threshold is said by the run, not here (out-138 F3).
    defaults = bool(data.get("defaults", {}).get("checks"))
    checked = {p["id"] for p in data["prompts"] if defaults or p.get("checks") or rows.get(p["id"]) != set()}
    unchecked = named["prompts"] - checked  # of two prompts of one id, one with checks: said as a duplicate
    for name in sorted(unchecked & set(threshold.get("prompts", {}) if isinstance(threshold, dict) else ()), key=str):
        message = f"prompt {name!r} has no checks: this threshold would never apply"
        problems.append(source.problem(("run", "pass_threshold", "prompts", str(name)), message, at_key=True))
    if threshold is not None and not checked:
        # Nor one over the whole job or a model's rows with no check anywhere: validate said ok,
        # then every run exited 1, "could not be checked" (out-135 F8).
        places: list[tuple[str, ...]] = [()]  # a number: the whole job's
        if isinstance(threshold, dict):
            places = [(kind,) for kind in ("overall", "per_item") if kind in threshold]
            places += [("models", str(m)) for m in threshold.get("models", {})]
        for place in places:
            problems.append(source.problem(("run", "pass_threshold", *place), NEVER_CHECKED, at_key=len(place) == 2))
    per_item = threshold.get("per_item") if isinstance(threshold, dict) else None
    if per_item:
        where = ("run", "pass_threshold", "per_item")
        if per_item["min"] > per_item["of"]:
            problems.append(source.problem(where, f"min {per_item['min']} is more than of {per_item['of']}"))
        repeat = data.get("repeat", 1)
        if repeat == 1:  # validated, then the run ignored it and report --job applied it (break54 F7)
            problems.append(source.problem(where, "judges an item on its repeats: it needs repeat 2 or more"))
        elif per_item["of"] > repeat:
            problems.append(source.problem(where, f"of {per_item['of']} is more than repeat {repeat}"))
        elif per_item["of"] < repeat:
            # Every repeat of an item counts: `{min: 3, of: 3}` with repeat 5 passed an item that
            # failed 2 of its 5, saying "at least 3 of 3 repeats" (break31 M5).
            why = f"of {per_item['of']} is less than repeat {repeat}: an item is judged on all its repeats"
            problems.append(source.problem(where, f"{why}; write of: {repeat}"))
    return problems
