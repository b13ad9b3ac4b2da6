"""What is wrong with one row of variables, a prompt's or a dataset's (validate's view of it)."""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ._check_problems import check_problems, row_check_problem, row_check_problems
from ._dataset import ADVICE, unnamed
from ._formats import short
from ._job_source import format_path
from ._jobfile import job_schema
from ._json_text import json_leaves
from ._limits import MAX_RENDERED_BYTES
from ._schema_messages import null_shapes_hint, schema_message
from ._scrub import KEY_LIKE
from ._template import PLACEHOLDER, names_in, render_nested, template_problems


def keyed_checks(checks: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The templated checks a row's value could complete into key-like text (`sk-or-v1-{{h}}`:
    neither part looks like a key until filled in; a failing check's reason carried it into the
    results: verify47 N5). Found once: rendering every check for every row cost 1.4 s a 100,000."""
    return [check for check in checks if "sk" in json.dumps(check) and names_in([check])]


def filled_key_problem(keyed: list[dict[str, Any]], row: dict[str, Any]) -> str | None:
    """A check (of `keyed`, or the row's own) that this row fills in with key-like text."""
    own = row.get("checks")
    for check in [*keyed, *(own if isinstance(own, list) else [])]:
        if names_in([check]) <= row.keys() and KEY_LIKE.search(json.dumps(render_nested(check, row))):
            return f"a check, filled in from this row, holds text that looks like an OpenRouter API key: {ADVICE}"
    return None


def row_checker(
    needed: set[str],
    base_dir: Path,
    checks: tuple[dict[str, Any], ...] = (),
    graded: bool = True,
    messages: Any = (),
    prompt_id: str | None = None,
    tool_call: Callable[[Any], str | None] = lambda check: None,
) -> Callable[[dict[str, Any]], str | None]:
    """What is wrong with one row of variables: a variable the prompt needs, a value that is
    not a scalar, a templated check that comes out empty, its own checks (`graded`: the job
    names a grader, so a judge check may go without one; `tool_call`: what is wrong with one
    naming a function, against the tools sent), or `messages` rendered past
    MAX_RENDERED_BYTES (20,000 placeholders of a 1 MB value: a 20 GB body, MemoryError: break59 F4)."""
    validator = None
    keyed = keyed_checks(checks)

    def templated(numbered: Iterable[tuple[int, Any]]) -> list[tuple[int, Any]]:
        """The `tool_call` checks filled in from the row (`{tool_call: "{{fn}}"}`)."""
        return [(i, c) for i, c in numbered if isinstance(c, dict) and "tool_call" in c and names_in([c])]

    prompts = templated((-1, c) for c in checks)

    def calls(row: dict[str, Any], own: list[Any]) -> list[str]:
        """Templated `tool_call` checks, filled in from the row, that could only fail (out-144 F1)."""
        found = [(i, tool_call(render_nested(check, row))) for i, check in [*prompts, *templated(enumerate(own))]]
        return [
            f"{f'checks[{i}].' if i >= 0 else 'a check filled in from this row: '}tool_call: {w}" for i, w in found if w
        ]

    # The checks are rendered per row too (a judge's rubric goes to the grader): a rubric of
    # 20,000 placeholders was a MemoryError at validate, 200 of them a 200 MB grader request (verify60 F4).
    texts = [leaf for leaf in json_leaves([messages, list(checks)]) if isinstance(leaf, str)]
    literal = sum(len(text) for text in texts)
    uses = Counter(name for text in texts for name in PLACEHOLDER.findall(text))

    def _rendered_size_problem(row: dict[str, Any]) -> str | None:
        own = [leaf for leaf in json_leaves(row.get("checks")) if isinstance(leaf, str)]  # a row's own (verify61 F3)
        counted = uses + Counter(name for text in own for name in PLACEHOLDER.findall(text)) if own else uses
        size = literal + sum(map(len, own))
        size += sum(times * len(str(row[name])) for name, times in counted.items() if row.get(name) is not None)
        if size <= MAX_RENDERED_BYTES:
            return None
        return (
            f"the prompt's messages and checks render to about {size:,} characters with this row, past the "
            f"{MAX_RENDERED_BYTES:,} a request may hold"
        )

    def check_row(row: dict[str, Any]) -> str | None:
        nonlocal validator
        missing = needed - row.keys()
        # Which prompt: three shared the dataset, and "the prompt" named none (break65 F6).
        used_by = "the prompt" if prompt_id is None else f"prompt {prompt_id!r}"
        if missing:
            return f"row lacks variable(s) {', '.join(sorted(missing))} used by {used_by}{_header_hint(row, missing)}"
        if nulls := sorted(name for name in needed if row[name] is None):
            return _null_problem(nulls, used_by)
        # Before anything renders a check with this row (the key-like checks below do).
        if (too_large := _rendered_size_problem(row)) is not None:
            return too_large
        if (filled := filled_key_problem(keyed, row)) is not None:
            return filled
        for name, value in row.items():
            if unnamed(name):
                return "a variable with no name (an empty key, or only invisible characters): name it, or leave it out"
            if name != "checks" and isinstance(value, (dict, list)):
                kind = "an object" if isinstance(value, dict) else "a list"
                return f"variable {name!r} is {kind}: values are strings, numbers, booleans or null"
        if "checks" not in row:
            return row_check_problem(list(checks), row) or _all_of(calls(row, [])) or None  # `icontains: ""` passes
        if isinstance(row["checks"], str):  # a CSV column named so
            return (
                f"checks is {short(row['checks'])!r}: a row's `checks` is its own list of checks "
                "(a JSONL dataset's); name the variable otherwise"
            )
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import best_match

        if validator is None:
            validator = Draft202012Validator({"$ref": "#/$defs/checks", "$defs": job_schema()["$defs"]})
        # Each mistake, not the first (out-135 F6: three bad checks of a row, one said a run).
        said = []
        for error in (best_match([e]) for e in validator.iter_errors(row["checks"])):
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
            # Not Python's None (out-139 F4): of one shape, named; of several (anyOf), said plainly.
            message = null_shapes_hint(error.message, error.instance) or error.message
            if error.instance is None and error.validator in ("anyOf", "oneOf"):
                message = "is empty (null): give the check's value"
            said.append(f"checks{where}: {schema_message(error, ['checks', *error.absolute_path]) or message}")
        if said:
            return _all_of(said)
        # The row's own checks once their shape is known: `"checks": ["x"]` was a traceback
        # here, exit 1, in every command (break34 M1). Each check's mistakes by its index, all of
        # them: a variable the row lacks hid a bad regex beside it, and said no index (out-137 1).
        for i, check in enumerate(row["checks"]):
            used = names_in([check])  # before they are rendered below
            if unknown := used - row.keys():
                said.append(f"checks[{i}]: uses variable(s) {', '.join(sorted(unknown))} the row lacks")
            elif nulls := sorted(name for name in used if row[name] is None):
                said.append(f"checks[{i}]: {_null_problem(nulls, 'this check')}")
            said += [f"checks[{i}]: {message}" for message in check_problems(check, base_dir)]
            if (undeclared := tool_call(check)) is not None:
                said.append(f"checks[{i}].tool_call: {undeclared}")
            if "judge" in check and "grader" not in check and not graded:
                # As a prompt's is: every row was undecided, exit 1 (verify34 N6).
                said.append(f"checks[{i}]: a judge check needs a grader: set judge.model or the check's grader")
        said += [
            f"{format_path(place)[2:]}: {message}" for place, message in template_problems(row["checks"], ("checks",))
        ]
        if said:
            return _all_of(said)
        # Rendered (every name is there): the row's own by their index, the prompt's as they are.
        found = row_check_problems([*checks, *row["checks"]], row)
        said = [f"checks[{i - len(checks)}]: {m}" if i >= len(checks) else m for i, m in found]
        said += calls(row, row["checks"])
        return _all_of(said) if said else None

    return check_row


def _all_of(said: list[str], most: int = 5) -> str:
    """A row's problems in its one line: the first `most`, and how many more."""
    more = f"; and {len(said) - most} more" if len(said) > most else ""
    return "; ".join(said[:most]) + more


def _null_problem(names: list[str], used_by: str) -> str:
    """A null a template would write as nothing: a missing value, most likely (a JSONL dataset's
    gap), sent as a prompt with a hole in it and paid for, silently (out-110 F8)."""
    named = f"variable {names[0]!r} is" if len(names) == 1 else f"variables {', '.join(map(repr, names))} are"
    return f'{named} null, used by {used_by}: it would be written as nothing; write "" for empty text, or give a value'


def _header_hint(row: dict[str, Any], missing: set[str]) -> str:
    """Why a row lacks names its file seems to have (out-102 F10): a CSV in another separator is
    one column, and a header saved in decomposed Unicode (some macOS tools) spells `país` apart."""
    names = [name for name in row if name != "checks"]
    if len(names) == 1 and any(separator in names[0] for separator in "\t;|"):
        return f": the file's header is one column, {names[0]!r}: is the file comma-separated?"
    spelt = {unicodedata.normalize("NFC", name): name for name in names}
    wanted = [unicodedata.normalize("NFC", name) for name in sorted(missing)]
    apart = [spelt[name] for name in wanted if name in spelt]
    return f": the file's {apart[0]!r} is written in other Unicode code points (save it in NFC)" if apart else ""
