"""Deterministic checks on each answer.

A check is a mapping with exactly one kind key (`contains`, `regex`, ...) and the shared
options `name`, `weight`, `not`, `trim`, `ignore_case`, `flags`. Checks are templated with
the row's variables before they run (see _matrix), so `{contains: "{{expect}}"}` works.

Each kind is a function (answer, value, options) -> (passed, reason) in `_KINDS`. A
model-graded (`judge`) check needs the client and the budget, so it is not in this
synchronous table: the runner sends its grader requests after the answer arrives
(_judging) and its results come into `run_checks` as `judged`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from ._answer import Answer, NotKnown, Outcome, max_cost, max_latency, max_tokens
from ._formats import short
from ._json_text import parse_json
from ._record_shape import row_verdict
from ._timed_match import PatternTimedOut, first_schema_error, timed_search

_OPTION_KEYS = frozenset({"name", "weight", "not", "trim", "ignore_case", "flags", "grader"})


def check_kind(check: dict[str, Any]) -> str:
    return next(k for k in check if k not in _OPTION_KEYS)


def _prepare(text: str, check: dict[str, Any], fold: bool) -> str:
    if check.get("trim", True):
        text = text.strip()
    return text.casefold() if fold else text


def text_values(value: Any) -> tuple[str, list[str]]:
    """`contains: x` or `contains: {any: [...]}` / `{all: [...]}` as (mode, needles)."""
    if isinstance(value, str):
        return "all", [value]
    mode = "any" if "any" in value else "all"
    return mode, list(value[mode])


# Validation refuses a templated check that comes out empty for a row; a dataset changed
# since then still cannot make a check against nothing pass (`x in answer` is always true).
class CannotPass(NamedTuple):
    """An outcome no `not` may turn into a pass: the check could not be made at all."""

    passed: bool
    reason: str


_EMPTY: Outcome = CannotPass(False, "the expected text is empty (an empty or missing variable?): the check cannot pass")


def blank_text(text: str, check: dict[str, Any]) -> bool:
    """Whether a text check's value decides nothing: empty, which every answer contains or starts
    with, or only whitespace where it is trimmed to that (`trim`, the default). A regex is never
    trimmed: `regex: " "` (not: a one-word answer) decides, as does `contains: " "` with `trim:
    false`, and both were refused (out-153 F3)."""
    return not text or (check_kind(check) != "regex" and check.get("trim", True) and not text.strip())


def _contains(answer: Answer, value: Any, check: dict[str, Any], fold: bool) -> Outcome:
    mode, needles = text_values(value)
    if any(blank_text(n, check) for n in needles):
        return _EMPTY
    haystack = _prepare(answer.content, check, fold)
    found = [n for n in needles if _prepare(n, check, fold) in haystack]
    passed = bool(found) if mode == "any" else len(found) == len(needles)
    if len(needles) == 1:
        return passed, f"expected to contain {short(needles[0])!r}"
    return passed, f"expected to contain {mode} of {', '.join(repr(short(n, 30)) for n in needles)}"


def _equals(answer: Answer, value: Any, check: dict[str, Any]) -> Outcome:
    fold = bool(check.get("ignore_case", False))
    got = _prepare(answer.content, check, fold)
    return got == _prepare(value, check, fold), f"expected {short(value)!r}, got {short(answer.content.strip())!r}"


def _not_contains(answer: Answer, value: Any, check: dict[str, Any]) -> Outcome:
    if any(blank_text(n, check) for n in text_values(value)[1]):
        return _EMPTY
    passed, _ = _contains(answer, {"any": text_values(value)[1]}, check, bool(check.get("ignore_case", False)))
    return not passed, f"expected not to contain {short(', '.join(text_values(value)[1]))!r}"


def _regex(answer: Answer, value: Any, check: dict[str, Any]) -> Outcome:
    if blank_text(value, check):
        return _EMPTY
    flags = check.get("flags", "") + ("i" if check.get("ignore_case") else "")
    try:
        found = timed_search(value, flags, answer.content)
    except PatternTimedOut as timed_out:
        return _timed_out(timed_out, "")
    return bool(found), f"expected to match /{short(value)}/"


def _timed_out(timed_out: PatternTimedOut, whose: str) -> Outcome:
    """A search stopped at its limit: the check could not be made."""
    took = f"ran past {timed_out.seconds:g} s on this answer: it backtracks without end"
    return CannotPass(False, f"{whose}/{short(timed_out.pattern)}/ {took}")


def _starts_with(answer: Answer, value: Any, check: dict[str, Any]) -> Outcome:
    if blank_text(value, check):
        return _EMPTY
    fold = bool(check.get("ignore_case", False))
    return _prepare(answer.content, check, fold).startswith(
        _prepare(value, check, fold)
    ), f"expected to start with {short(value)!r}"


def _is_json(answer: Answer, value: Any, check: dict[str, Any]) -> Outcome:
    return parse_json(answer.content)[0], "expected valid JSON"


def _json_schema(answer: Answer, value: Any, check: dict[str, Any]) -> Outcome:
    ok, parsed = parse_json(answer.content)
    if not ok:
        return False, "expected JSON matching the schema, got invalid JSON"
    schema = value if isinstance(value, dict) else json.loads(Path(value).read_text(encoding="utf-8"))
    try:
        error = first_schema_error(schema, parsed)
    except PatternTimedOut as timed_out:
        return _timed_out(timed_out, "the schema's pattern ")
    return error is None, f"expected JSON matching the schema ({short(error.message) if error else 'ok'})"


def _finish_reason(answer: Answer, value: Any, check: dict[str, Any]) -> Outcome:
    allowed = [value] if isinstance(value, str) else list(value)
    return answer.finish_reason in allowed, f"expected finish_reason {' or '.join(allowed)}, got {answer.finish_reason}"


def _tool_call(answer: Answer, value: Any, check: dict[str, Any]) -> Outcome:
    """A call of the named function (any, without a name) whose arguments match the schema."""
    spec: dict[str, Any] = {"name": value} if isinstance(value, str) else dict(value)
    name: str | None = spec.get("name")
    schema: dict[str, Any] | None = spec.get("arguments")
    wanted = f"a call of {name}" if name else "a tool call"
    if schema is not None:
        wanted += " with arguments matching the schema"
    problems = []
    for call in answer.tool_calls:
        # A call names its function: an entry with none (`42` as kept) is no call; arguments that
        # are missing or "" are no JSON (the README's rule), not `{}` (break54 F8).
        if call.get("name") is None or (name is not None and call.get("name") != name):
            continue
        if schema is None:
            return True, f"expected {wanted}"
        raw = call.get("arguments")
        ok, arguments = parse_json(raw) if isinstance(raw, str) and raw.strip() else (False, None)
        try:
            error = first_schema_error(schema, arguments) if ok else None
        except PatternTimedOut as timed_out:
            return _timed_out(timed_out, "the schema's pattern ")
        if ok and error is None:
            return True, f"expected {wanted}"
        problems.append("invalid JSON arguments" if not ok else short(error.message if error else ""))
    called = ", ".join(str(c.get("name")) for c in answer.tool_calls) or "no tool"
    return False, f"expected {wanted}, got {called}" + (f" ({problems[0]})" if problems else "")


# Kinds whose value is text (or an any/all list of text) compared with the answer.
TEXT_KINDS = frozenset({"contains", "icontains", "not_contains", "regex", "starts_with"})

_KINDS: dict[str, Callable[[Answer, Any, dict[str, Any]], Outcome | NotKnown]] = {
    "equals": _equals,
    "contains": lambda a, v, c: _contains(a, v, c, bool(c.get("ignore_case", False))),
    "icontains": lambda a, v, c: _contains(a, v, c, True),
    "not_contains": _not_contains,
    "regex": _regex,
    "starts_with": _starts_with,
    "is_json": _is_json,
    "json_schema": _json_schema,
    "max_latency_ms": max_latency,
    "max_cost_usd": max_cost,
    "max_tokens": max_tokens,
    "finish_reason": _finish_reason,
    "tool_call": _tool_call,
}


def ungraded(check: dict[str, Any], why: str) -> dict[str, Any]:
    """A check that could not be decided (its grader failed): neither pass nor fail."""
    return {
        "name": check.get("name", check_kind(check)),
        "pass": None,
        "reason": "",
        "weight": check.get("weight", 1),
        "error": why,
    }


def is_judge(check: dict[str, Any]) -> bool:
    return "judge" in check


def run_checks(
    checks: list[dict[str, Any]], answer: Answer, judged: dict[int, dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Each check's {name, pass, reason, weight}; reasons say what was expected. Judge checks
    are graded by a model elsewhere (_judging): their results come in `judged`, by index."""
    results = []
    for index, check in enumerate(checks):
        kind = check_kind(check)
        if kind == "judge":
            found = (judged or {}).get(index)
            # A kept verdict weighs as the check does now: its weight moves the score, never the
            # verdict, and an edited one kept the file's (out-153 F1).
            results.append(
                {**found, "weight": check.get("weight", 1)}
                if found
                else ungraded(check, "not graded: no grader was asked")
            )
            continue
        outcome = _KINDS[kind](answer, check[kind], check)
        if isinstance(outcome, NotKnown):  # negated or not, neither pass nor fail
            results.append(ungraded(check, outcome.reason))
            continue
        passed, reason = outcome
        if check.get("not") and not isinstance(outcome, CannotPass):  # negating "cannot pass" must not pass
            passed, reason = not passed, "negated: " + reason
        results.append(
            {
                "name": check.get("name", kind),
                "pass": passed,
                "reason": "" if passed else reason,
                "weight": check.get("weight", 1),
            }
        )
    return results


def verdict_of(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The check fields of a record: results, verdict and weighted score. A row with a check
    that failed has failed, whatever a check not decided would say; one with a check not decided
    and none failed has no verdict (`passed: null`): it neither passes nor fails. A known failure
    was undecided beside a grader's error: out of the pass rate, which read 100% (break61 F1)."""
    decided = [r for r in results if r["pass"] is not None]
    total = sum(r["weight"] for r in decided)
    return {
        "checks": results,
        "passed": row_verdict([r["pass"] for r in results]),
        "score": round(sum(r["weight"] for r in decided if r["pass"]) / total, 4) if total else None,
    }


def grade(
    checks: list[dict[str, Any]], answer: Answer, judged: dict[int, dict[str, Any]] | None = None
) -> dict[str, Any]:
    return verdict_of(run_checks(checks, answer, judged))


def graded_now(
    record: dict[str, Any], checks: list[dict[str, Any]], judged: dict[int, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A stored answer graded by the job's checks now; with none, no verdict, as a run of the
    job writes it: a prompt whose checks were all removed kept its old verdicts, and the gate
    passed or failed on a check the job no longer had (out-136 F1)."""
    if not checks:
        return {k: v for k, v in record.items() if k not in ("checks", "passed", "score")}
    return {**record, **grade(checks, answer_of(record), judged)}


def answer_of(record: dict[str, Any]) -> Answer:
    """A stored row's answer, as the checks see it (`cost` is the answer's: judging is
    `judge_cost`, apart). A cache hit's is what the answer first cost (`cost_saved`), as the run
    graded it: its own 0 passed every max_cost_usd in report --job, a green gate on a run that
    failed it (break54 F3)."""
    usage = record.get("usage") or {}
    hit = record.get("cached") is True
    own = record.get("answer_cost")  # a row folded over several records (_fold): its answer's own
    costs = own if isinstance(own, dict) else record
    return Answer(
        record.get("content") or "",
        record.get("latency_ms"),
        record.get("cost_saved") if hit else costs.get("cost"),
        usage.get("completion_tokens"),
        record.get("finish_reason"),
        tuple(record.get("tool_calls") or ()),
        record.get("cost_saved_status") if hit else costs.get("cost_status"),
        None if hit else costs.get("cost_held"),
        not hit and (costs.get("cost_doubted") is True or record.get("cost_doubted") is True),
    )


def stored_judgements(record: dict[str, Any], checks: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The judge results a row already holds, by the index of the check now: the n-th check of a
    name is the n-th the record holds of that name. By the name alone, two unnamed judge checks
    (both `judge`) were one: a resume gave the first, cut off by a stop, the second's verdict and
    the run exited 0 on a rubric never graded (break54 F1)."""
    held: dict[Any, list[dict[str, Any]]] = {}
    for entry in record.get("checks") or []:
        if isinstance(entry, dict):
            held.setdefault(entry.get("name"), []).append(entry)
    seen: dict[str, int] = {}
    out = {}
    for index, check in enumerate(checks):
        name = check.get("name", check_kind(check))
        nth = seen[name] = seen.get(name, -1) + 1
        same = held.get(name, [])
        found = same[nth] if is_judge(check) and nth < len(same) else None
        if found is not None and ("judge" in found or found.get("error")):
            out[index] = found
    return out


def without_latency_checks(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Batch rows have no per-request latency (a batch answers within 24 h): latency checks
    do not apply to them, when they are answered or re-graded."""
    return [c for c in checks if "max_latency_ms" not in c]
