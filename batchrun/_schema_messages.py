"""What a job-schema error says to a person, where jsonschema's own words mislead: a prompt with
`text` and `messages` was "a check has one kind", `vars` beside `dataset` a Python dict "should
not be valid under {'required': ...}", a content part's mistyped `type` "'image_url' is a required
property", a header value with a newline a network error at run time (break57 F1, F3)."""

from __future__ import annotations

import decimal
import math
import re
from collections.abc import Sequence
from typing import Any

from ._formats import short
from ._scrub import hide_keys

# Sent as HTTP headers (HTTP-Referer, X-Title): printable ASCII, as the schema says.
HEADER_FIELDS = {"app_url": "HTTP-Referer", "app_title": "X-Title"}


def _noun(path: Sequence[Any]) -> str:
    """What the object at `path` is, for a person: a prompt, a grader, or (by default) a check."""
    names = [p for p in path if isinstance(p, str)]
    last = names[-1] if names else ""
    if last == "prompts" and path and isinstance(path[-1], int):
        return "a prompt"
    return {"judge": "the judge"}.get(last, "a check")


def schema_message(error: Any, path: Sequence[Any]) -> str | None:
    """A message for `error` (a jsonschema ValidationError) at `path`, or None for its own."""
    value = error.validator_value
    if error.validator == "oneOf" and isinstance(value, list):
        if all(isinstance(b, dict) and list(b) == ["required"] for b in value):
            kinds = [b["required"][0] for b in value]
            present = [k for k in kinds if k in error.instance] if isinstance(error.instance, dict) else []
            noun = _noun(path)
            if present:
                return f"{noun} has one kind, not {len(present)}: {', '.join(present)}"
            return f"{noun} needs one kind: {', '.join(kinds)}"
        allowed = (error.schema.get("properties", {}).get("type") or {}).get("enum")
        given = error.instance.get("type") if isinstance(error.instance, dict) else None
        if isinstance(allowed, list) and isinstance(given, str) and given not in allowed:
            return f"a content part's type is one of {', '.join(allowed)}, not {given!r}"
    if error.validator == "not" and isinstance(value, dict) and list(value) == ["required"]:
        first, second = value["required"]
        among = " (a prompt given as messages has its system message among them)" if first == "system" else ""
        return f"give {first} or {second}, not both{among}"
    if error.validator == "maxLength" and path and path[-1] in HEADER_FIELDS and isinstance(error.instance, str):
        return (
            f"{len(error.instance):,} characters: it is sent as the {HEADER_FIELDS[path[-1]]} header, which "
            f"servers refuse past a size: at most {value:,}"
        )
    # The schema says it as "no character outside printable ASCII": a pattern's `$` passes a final newline.
    if error.validator == "not" and path and path[-1] in HEADER_FIELDS and isinstance(error.instance, str):
        return (
            f"it is sent as the {HEADER_FIELDS[path[-1]]} header, which carries printable ASCII only: no newline "
            "(a `|` block ends with one: write it on one line) and no accented or other non-ASCII letter"
        )
    if error.validator == "enum" and error.instance is None and isinstance(value, list):
        return f"is empty (null in YAML): give one of {', '.join(map(repr, value))}"
    if error.validator == "pattern" and isinstance(error.instance, str) and value in _PATTERNS_SAID:
        # A regex is no answer to a newcomer (out-130 F8: `name: my eval`, `api_key_env: $OPENROUTER_API_KEY`).
        hint = " (the variable's name, without the $)" if error.instance.startswith("$") else ""
        return f"{short(repr(error.instance), 60)}: {_PATTERNS_SAID[value]}{hint}"
    return None


_PATTERNS_SAID = {
    "^[A-Za-z0-9][A-Za-z0-9._-]*$": (
        "ASCII letters, digits, '.', '_' and '-' only, starting with a letter or digit (no spaces)"
    ),
    "^[A-Za-z0-9_-]+$": "ASCII letters, digits, '_' and '-' only (no spaces)",
    "^~?[A-Za-z0-9][A-Za-z0-9._:/~-]*$": (
        "a model id, author/slug: ASCII letters, digits, '.', '_', ':', '/', '~' and '-' only (no spaces)"
    ),
    "^[A-Za-z0-9_.:-]+$": (
        "a function's name: ASCII letters, digits, '_', '.', ':' and '-' only (no spaces, no newline)"
    ),
    "^(function|openrouter:[a-z0-9_]+|web_search[a-z0-9_]*)$": (
        "not a tool type: function, a server tool (openrouter:web_search, openrouter:datetime...) or a web "
        "search shorthand (web_search_preview...), in lowercase"
    ),
    "^[A-Za-z_][A-Za-z0-9_]*$": (
        "an environment variable's name: ASCII letters, digits and '_', not starting with a digit"
    ),
}


def yaml_type_hint(value: Any, expected: Any, path: tuple[str | int, ...] = ()) -> str | None:
    """A type error YAML 1.1 made, said as such (verify68 F7): `equals: NO` read "False is not
    of type 'string'", `budget_usd: 1e-9` "'1e-9' is not of type 'number'" (no dot: text). A
    prompt written as its text alone, as promptfoo's are, is shown its shape (out-176 F2)."""
    wanted = set(expected) if isinstance(expected, list) else {expected}
    if isinstance(value, str) and len(path) == 2 and path[0] == "prompts":
        return f"{short(repr(value), 60)} is a prompt's text alone: a prompt is a mapping, {{id: p1, text: ...}}"
    if value is None and "null" not in wanted:  # not Python's "None is not of type 'object'" (out-130 F8)
        kinds = " or ".join(_KIND_SAID.get(kind, kind) for kind in sorted(wanted))
        return f"is empty (null in YAML: nothing after the colon or the dash, or ~ or null): give {kinds}"
    if isinstance(value, bool) and "string" in wanted:
        return (
            f"reads as the boolean {str(value).lower()} in YAML (yes, no, on and off too): quote it to use it as text"
        )
    if isinstance(value, str) and wanted & {"number", "integer"} and (number := _EXPONENT.fullmatch(value)):
        figure = float(value)
        whole, dot, sign, power = number.groups()
        if not math.isfinite(figure) or not any(c.isdigit() for c in whole + (dot or "")):
            return None  # 1e400: no spelling of it is a number
        if "number" not in wanted:  # a whole number's field took 1.0e+3 as 1000.0, refused (out-132 F3)
            exact = decimal.Decimal(value)  # not through a float: 9007199254740993e0 is no ...992 (out-133 F4)
            whole_number = exact == int(exact) and abs(exact) < 2**63  # 1e20 is sent as no integer (out-133 F4)
            return f"{value!r} reads as text in YAML 1.1: write {int(exact)}" if whole_number else None
        # YAML 1.1's float needs a dot and a signed exponent: "write 1.0e3" was refused too (out-130 F3).
        mantissa = whole + "0" if whole in ("", "+", "-") else whole
        return (
            f"{value!r} reads as text in YAML 1.1 (an exponent needs a dot and a sign): "
            f"write {mantissa}{dot or '.0'}e{sign or '+'}{power}"
        )
    return None


def null_shapes_hint(shapes: str | None, value: Any) -> str | None:
    """A null where the shapes said ("None is not of type 'string' or 'object'") are wanted, said
    as every other empty value is (out-139 F4: Python's None, in a check's contains)."""
    if value is not None or not shapes or not shapes.startswith("None is not of type"):
        return None
    return yaml_type_hint(None, re.findall(r"'(\w+)'", shapes))


_KIND_SAID = {
    "object": "a mapping",
    "array": "a list",
    "string": "text",
    "number": "a number",
    "integer": "a whole number",
}
_EXPONENT = re.compile(r"([-+]?[0-9]*)(\.[0-9]*)?[eE]([-+]?)([0-9]+)")


def shown_message(error: Any, message: str) -> str:
    """jsonschema's `message` for `error`, at most about 160 characters, its reason kept: it starts
    with the value's repr, which a long value made all of it ("'openai/gpt-4o-mini, anthropic/...'
    is ...": `models:` on one line; a 300-character name never said "too long": out-130 F2)."""
    value = hide_keys(repr(error.instance))
    if len(value) > 60 and message.startswith(value):
        return short(value, 60) + short(message[len(value) :], 100)
    return short(message, 160)
