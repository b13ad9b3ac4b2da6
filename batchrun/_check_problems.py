"""What is wrong with a job's checks, found at validate time: a check's own value (a blank text,
a regex or schema that will not compile), and what one row's values make of its templated checks
(a value that empties a text check or a rubric, a regex that no longer compiles)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._checks import TEXT_KINDS, blank_text, check_kind, text_values
from ._files import read_json_once
from ._formats import short
from ._jobfile import job_schema
from ._json_text import outside_reference, schema_patterns
from ._schema_messages import shown_message
from ._template import emptied_by, names_in, render_nested
from ._timed_match import PatternError, compile_pattern


def check_problems(check: dict[str, Any], base_dir: Path) -> list[str]:
    """What is wrong with one (schema-valid) check, found at validate time."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    kind = check_kind(check)
    value = check[kind]
    if kind == "judge" and "{{" not in value and not value.strip():
        return ["the rubric is only whitespace: a grader would have nothing to grade against"]
    if kind in TEXT_KINDS:
        for text in text_values(value)[1]:
            if "{{" not in text and blank_text(text, check):  # templated ones are checked per row (see _job)
                never = _never(check)
                return [f"the check value {text!r} is empty or only whitespace, so the check could never {never}"]
    if kind == "regex" and "{{" not in value:
        try:
            compile_pattern(value, check.get("flags", ""))  # the engine that will search with it
        except PatternError as exc:
            return [f"invalid regex {short(value, 80)!r}: {exc}"]
    if kind == "tool_call" and isinstance(value, dict) and isinstance(value.get("arguments"), dict):
        try:
            Draft202012Validator.check_schema(value["arguments"])
        except SchemaError as exc:
            return [f"tool_call arguments is not a valid JSON Schema: {shown_message(exc, exc.message)}"]
        if (outside := outside_reference(value["arguments"]) or _pattern_problem(value["arguments"])) is not None:
            return [f"tool_call arguments: {outside}"]
    if kind == "json_schema":
        if isinstance(value, str):
            schema_path = base_dir / value
            try:
                value = read_json_once(schema_path)
            except (OSError, ValueError) as exc:
                return [f"json_schema file {str(value)!r} cannot be read as JSON: {exc}"]
        try:
            Draft202012Validator.check_schema(value)
        except SchemaError as exc:
            return [f"json_schema is not a valid JSON Schema: {shown_message(exc, exc.message)}"]
        if (outside := outside_reference(value) or _pattern_problem(value)) is not None:
            return [f"json_schema: {outside}"]
    return []


def _whitespace(text: str) -> bool:
    return not text.strip()  # a rubric of only whitespace: nothing to grade against


def _never(check: dict[str, Any]) -> str:
    """What a text check of an empty value could never do: every text holds "" (not_contains "",
    or any text check under not: true, could never pass; out-152 F1 said "fail")."""
    return "pass" if (check_kind(check) == "not_contains") != bool(check.get("not")) else "fail"


def _pattern_problem(schema: Any) -> str | None:
    """A schema's pattern that will not compile, found now: at grading it dropped each paid
    answer as an `internal` error (verify60 F6)."""
    for pattern in schema_patterns(schema):
        try:
            compile_pattern(pattern, "")
        except PatternError as exc:
            return f"pattern {short(pattern)!r}: {exc}"
    return None


def row_check_problem(checks: list[dict[str, Any]], row: Mapping[str, Any]) -> str | None:
    """The first of row_check_problems, as a prompt's checks with one row of values say it."""
    found = row_check_problems(checks, row)
    return found[0][1] if found else None


def row_check_problems(checks: list[dict[str, Any]], row: Mapping[str, Any]) -> list[tuple[int, str]]:
    """What a row's values make of the templated checks it is graded by, found at validate
    time, by each check's index: a value that empties a check (it would compare with nothing and
    pass), or a regex that no longer compiles (`x{{a}}` with a = "(" was sent, paid, and ended as
    an internal error: verify20 V3). Each, not the first (out-139 F2: three rounds of fixes)."""
    found: list[tuple[int, str]] = []
    for i, check in enumerate(checks):  # first: one emptied fails every row, not "could never fail" (out-134 F2)
        reasons = check.get("finish_reason")
        for reason in [reasons] if isinstance(reasons, str) else reasons if isinstance(reasons, list) else []:
            # As a finish_reason written in the job is (out-133 F2: a row's `Stop` failed every row, exit 0).
            templated = isinstance(reason, str) and "{{" in reason and names_in([reason]) <= row.keys()
            if templated and (filled := render_nested(reason, row)) not in (allowed := finish_reasons()):
                found.append((i, f"finish_reason {short(filled)!r} for this row is none of {', '.join(allowed)}"))
    for i, check in enumerate(checks):
        # A text check or a rubric: empty, it decides nothing. `equals: ""` or a schema's `const: ""`
        # can fail: a row whose right answer is nothing was refused with the whole job (out-152 F1).
        kind = check_kind(check)
        blank = functools.partial(blank_text, check=check) if kind in TEXT_KINDS else _whitespace
        empty = emptied_by(check[kind], row, blank) if kind in TEXT_KINDS or kind == "judge" else None
        if empty is not None and kind == "judge":
            found.append(
                (i, f"the rubric {empty!r} is empty for this row: a grader would have nothing to grade against")
            )
        elif empty is not None:
            found.append(
                (i, f"the check value {empty!r} is empty for this row, so the check could never {_never(check)}")
            )
    for i, check in enumerate(checks):
        if isinstance(check.get("regex"), str) and "{{" in check["regex"] and names_in([check["regex"]]) <= row.keys():
            pattern = render_nested(check["regex"], row)
            try:
                compile_pattern(pattern, check.get("flags", "") + ("i" if check.get("ignore_case") else ""))
            except PatternError as exc:
                found.append((i, f"the check's regex {short(pattern)!r} is invalid for this row: {exc}"))
    return found


def finish_reasons() -> list[str]:
    """OpenRouter's normalized finish reasons (overview.mdx), as the job schema lists them."""
    enum: list[str] = job_schema()["$defs"]["finish_reason"]["else"]["enum"]
    return enum


def resolve_files(check: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """Make a json_schema file reference absolute, once, at job load."""
    if isinstance(check.get("json_schema"), str):
        try:
            return {**check, "json_schema": read_json_once(base_dir / check["json_schema"])}
        except (OSError, ValueError):
            return check  # already reported by check_problems
    return check
