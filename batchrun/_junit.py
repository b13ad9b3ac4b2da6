"""`report --junit PATH`: a results file as JUnit XML, so CI shows one test case per row.

One `<testsuite>` per prompt, one `<testcase>` per row, or per item (model x prompt x
variables) when the run has repeats; an item then fails unless it meets the per-item gate
(`run.pass_threshold.per_item`, default: every answered repeat passes). A failed check is a
`<failure>`, a row that ended in error or a check whose grader failed is an `<error>`, a
skipped row is `<skipped>`.

The layout follows the Apache Ant JUnit schema (windyroad/JUnit-Schema, `JUnit.xsd`), the
strictest of the common ones; GitHub, GitLab and Jenkins read it. The tests validate the
output against that schema.
"""

from __future__ import annotations

import itertools
import re
import socket
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._items import ItemGate, item_key
from ._matrix import Request
from ._report_file import write_report_file

# XML 1.0 cannot carry most control characters, and a model's answer may contain them.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
MAX_TEXT = 4000


def _clean(text: str, limit: int = MAX_TEXT) -> str:
    text = _NOT_XML.sub("?", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _cut(value: Any, limit: int) -> Any:
    return value[:limit] if isinstance(value, str) else value


def _token(text: str) -> str:
    """xs:token: no leading, trailing or repeated whitespace."""
    return " ".join(_clean(text, 300).split()) or "-"


def _vars_label(variables: dict[str, Any]) -> str:
    shown = ", ".join(f"{k}={v}" for k, v in variables.items())
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _failed_checks(record: dict[str, Any]) -> list[str]:
    return [f"{c['name']}: {c.get('reason') or 'failed'}" for c in record.get("checks") or [] if c.get("pass") is False]


def _errored_checks(record: dict[str, Any]) -> list[str]:
    return [f"{c['name']}: {c.get('error') or 'grader error'}" for c in record.get("checks") or [] if c.get("error")]


@dataclass
class _Case:
    name: str
    seconds: float = 0.0
    outcome: str = "pass"  # pass | failure | error | skipped
    message: str = ""
    detail: list[str] = field(default_factory=list)


# Rows of the job's matrix with no answer to their request as it is now (`report --job`): a CI
# reading the file saw a green suite where the gate said 12 (break27 MAJOR-2).
_UNANSWERED = {
    "missing": "no record: the row never ran, or its line was lost",
    "stale": "answered an earlier version of its request (prompt, model or parameters edited since)",
}


def _row_case(record: dict[str, Any], with_repeat: bool) -> _Case:
    name = f"{record['model']} [{record['vars_label']}]"
    if with_repeat:
        name += f" repeat {record.get('repeat', 0)}"
    case = _Case(_token(name), float(record.get("elapsed_ms") or record.get("latency_ms") or 0) / 1000)
    status = record.get("status")
    content = record.get("content")
    if status in _UNANSWERED:
        case.outcome, case.message = "error", _UNANSWERED[status]
    elif status == "skipped":
        case.outcome, case.message = "skipped", f"skipped: {record.get('reason')}"
    elif status == "error":
        error = record.get("error") or {}
        case.outcome, case.message = "error", f"{record.get('reason')}: {error.get('message', '')}"
    elif record.get("passed") is False:
        failed = _failed_checks(record)
        case.outcome, case.message = "failure", "; ".join(failed) or "failed"
        case.detail = [*failed, f"answer: {content}"]
    elif _errored_checks(record):
        case.outcome, case.message = "error", "; ".join(_errored_checks(record))
        case.detail = [f"answer: {content}"]
    return case


def _item_case(records: list[dict[str, Any]], gate: ItemGate) -> _Case:
    first = records[0]
    case = _Case(
        _token(f"{first['model']} [{first['vars_label']}]"),
        sum(float(r.get("elapsed_ms") or r.get("latency_ms") or 0) for r in records) / 1000,
    )
    graded = [r for r in records if r.get("status") == "ok" and r.get("passed") is not None]
    passes = sum(1 for r in graded if r["passed"])
    rows = [_row_case(r, True) for r in sorted(records, key=lambda r: int(r.get("repeat") or 0))]
    case.detail = [
        f"repeat {r.get('repeat')}: {row.outcome} {row.message}".rstrip()
        for r, row in zip(sorted(records, key=lambda r: int(r.get("repeat") or 0)), rows, strict=True)
    ]
    verdict = gate.verdict(passes, len(graded), len(records))
    gaps = [r["status"] for r in records if r.get("status") in _UNANSWERED]
    if gaps and verdict is not False:
        case.outcome = "error"
        case.message = f"{len(gaps)} of {len(records)} repeat(s) without an answer: {_UNANSWERED[gaps[0]]}"
    elif not graded:
        worst = next((row for row in rows if row.outcome in ("error", "skipped")), rows[0])
        case.outcome, case.message = worst.outcome, worst.message or "not graded"
    elif verdict is False:
        case.outcome = "failure"
        case.message = f"passed {passes} of {len(graded)} repeat(s); {gate.describe(len(graded))}"
    elif verdict is None:
        # Undecided: too few repeats were graded to tell (break21 R26: it was a green case,
        # while the summary said undecided and the run exited 1).
        case.outcome = "error"
        case.message = (
            f"undecided: passed {passes} of {len(graded)} graded repeat(s) of {len(records)}; "
            f"{gate.describe(len(graded))}"
        )
    return case


def _suite(
    parent: ET.Element,
    index: int,
    name: str,
    cases: list[_Case],
    stamp: str,
    host: str,
    properties: dict[str, str] | None = None,
) -> None:
    suite = ET.SubElement(
        parent,
        "testsuite",
        {
            "package": _token(name),
            "id": str(index),
            "name": _token(name),
            "timestamp": stamp,
            "hostname": host,
            "tests": str(len(cases)),
            "failures": str(sum(c.outcome == "failure" for c in cases)),
            "errors": str(sum(c.outcome == "error" for c in cases)),
            "skipped": str(sum(c.outcome == "skipped" for c in cases)),
            "time": f"{sum(c.seconds for c in cases):.3f}",
        },
    )
    listed = ET.SubElement(suite, "properties")
    for key, value in (properties or {}).items():
        ET.SubElement(listed, "property", {"name": key, "value": value})
    for case in cases:
        element = ET.SubElement(
            suite, "testcase", {"name": case.name, "classname": _token(name), "time": f"{case.seconds:.3f}"}
        )
        if case.outcome == "pass":
            continue
        attributes = {"message": _clean(case.message, 1000)}
        if case.outcome != "skipped":
            attributes["type"] = case.outcome
        child = ET.SubElement(element, case.outcome, attributes)
        child.text = _clean("\n".join(case.detail or [case.message]))
    ET.SubElement(suite, "system-out")
    ET.SubElement(suite, "system-err")


def _gate_case(code: int, reasons: list[str]) -> _Case:
    """`report --job`'s verdict as a test case of its own: green exactly when the exit code is 0."""
    case = _Case("exit code")
    if code:
        case.outcome, case.message = "failure", f"exit {code}: " + ("; ".join(reasons) or "the gate failed")
    return case


def write_junit(
    records: Iterable[dict[str, Any]],
    path: Path,
    job_name: str | None,
    gate: ItemGate,
    unanswered: Iterable[tuple[Request, str]] = (),
    verdict: tuple[int, list[str]] | None = None,
    unread: int = 0,
) -> dict[str, int]:
    """Write the JUnit file; returns counts of test cases by outcome. With `report --job`, the
    matrix's rows without an answer (`unanswered`) are errors, and the gate's `verdict` (exit
    code, reasons) is a test case of its own; lines of the results file set aside or cut
    (`unread`) are a property of its suite: a row may be missing (break62 F6: said nowhere)."""
    by_prompt: dict[str, dict[str, list[dict[str, Any]]]] = {}
    repeats = False
    name = job_name
    gaps = (
        {"id": r.id, "model": r.model, "prompt_id": r.prompt_id, "vars": r.vars, "repeat": r.repeat, "status": why}
        for r, why in unanswered
    )
    for record in itertools.chain(records, gaps):
        name = name or record.get("job")
        repeats = repeats or int(record.get("repeat") or 0) > 0
        slim = {
            k: record.get(k)
            for k in (
                "id",
                "model",
                "prompt_id",
                "vars",
                "repeat",
                "status",
                "reason",
                "error",
                "passed",
                "checks",
                "content",
                "latency_ms",
                "elapsed_ms",
            )
        }
        # Kept only as far as a case shows them: 40 answers of 10 MB held 496 MB (out-158 F2), and
        # rows of 6 MB of variables 989 MB (out-159 F5); the item key is made of the whole record.
        slim["content"] = _cut(slim["content"], MAX_TEXT + 1)
        if isinstance(error := slim["error"], dict):
            slim["error"] = {**error, "message": _cut(error.get("message"), MAX_TEXT + 1)}
        slim["vars_label"] = _vars_label(slim.pop("vars") or {})
        checks = slim["checks"] if isinstance(slim["checks"], list) else []
        slim["checks"] = [
            {k: _cut(c.get(k), MAX_TEXT + 1) for k in ("name", "pass", "reason", "error")}
            for c in checks
            if isinstance(c, dict)
        ]
        by_prompt.setdefault(record["prompt_id"], {}).setdefault(item_key(record), []).append(slim)
    root = ET.Element("testsuites")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    host = _token(socket.gethostname())
    counts = {"tests": 0, "failure": 0, "error": 0, "skipped": 0}
    for index, (prompt_id, items) in enumerate(sorted(by_prompt.items())):
        if repeats:
            cases = _told_apart([(_item_case(rows, gate), rows[0]) for rows in items.values()])
        else:
            cases = _told_apart([(_row_case(row, False), row) for rows in items.values() for row in rows])
        _suite(root, index, f"{name or 'batchrun'}.{prompt_id}", cases, stamp, host)
        _count(counts, cases)
    if verdict is not None:
        cases = [_gate_case(*verdict)]
        # Named apart from every prompt's suite: a prompt may have the id `gate` (verify27 N5).
        properties = {"unread_lines": str(unread)} if unread else {}
        _suite(root, len(by_prompt), f"{name or 'batchrun'} (gate)", cases, stamp, host, properties)
        _count(counts, cases)
    write_report_file(path, ET.tostring(root, encoding="unicode", xml_declaration=True))
    return counts


def _told_apart(cases: list[tuple[_Case, dict[str, Any]]]) -> list[_Case]:
    """Cases whose names collide (variables cut at 80 characters; 1 and "1") named with their
    row's id too: a CI keeps a case's history by its name, and a failure hid behind its passing
    twin (break53 F6). Names that do not collide stay as they were."""
    seen = Counter(case.name for case, _ in cases)
    for case, record in cases:
        if seen[case.name] > 1:
            case.name = f"{case.name} [{str(record.get('id'))[:8]}]"
    return [case for case, _ in cases]


def _count(counts: dict[str, int], cases: list[_Case]) -> None:
    counts["tests"] += len(cases)
    for case in cases:
        if case.outcome != "pass":
            counts[case.outcome] += 1
