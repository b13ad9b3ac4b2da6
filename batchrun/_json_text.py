"""JSON an answer holds, read as the checks read it: a ```json fence is not part of the value,
nesting past what Python reads is no JSON to check, and a schema's `$ref` stays inside it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson

from ._formats import short

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_text(value: Any) -> Any:
    """`value` with every lone surrogate in its strings (keys too) made U+FFFD. Python's
    json module keeps an escape such as "\\ud800" (which models do emit) as a lone
    surrogate, which UTF-8 cannot encode: the answer could be neither measured nor written
    (break14b C5). Iterative, so no nesting json.loads accepted can overflow the stack."""

    def fix(text: str) -> str:
        return _LONE_SURROGATE.sub("\ufffd", text)

    if isinstance(value, str):
        return fix(value)
    root: list[Any] = [value]
    stack: list[tuple[Any, Any]] = [(root, 0)]
    while stack:
        holder, at = stack.pop()
        item = holder[at]
        if isinstance(item, str):
            holder[at] = fix(item)
        elif isinstance(item, list):
            stack.extend((item, i) for i in range(len(item)))
        elif isinstance(item, dict):
            if any(_LONE_SURROGATE.search(k) for k in item):
                fixed = {fix(k): v for k, v in item.items()}
                item.clear()
                item.update(fixed)
            stack.extend((item, k) for k in item)
    return root[0]


def _not_json(text: str) -> Any:
    """NaN and Infinity: Python's reader takes them, JSON (RFC 8259) has no such values, and a
    consumer the check stands for would refuse them (break24 F11: NaN passed `maximum: 1`)."""
    raise ValueError(f"{text} is not JSON")


def _whole(text: str) -> Any:
    """An integer of any length is JSON (a 5,000-digit one failed Python's 4,300-digit limit)."""
    return int(text) if len(text) <= 4000 else Decimal(text)  # a float would be inf


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        raise ValueError("a key given twice")
    return data


def parse_json(content: str, unique_keys: bool = False) -> tuple[bool, Any]:
    """(True, the value) or (False, None). `unique_keys`: an object that gives a key twice is
    not JSON to rely on (readers differ on which one counts)."""
    text = content.strip()
    # Models often fence JSON in ```json blocks; the fence is not part of the value. Text after
    # the closing fence makes the answer prose: "```json {...} ``` On reflection: {...}" was read
    # as its first half, a grader's verdict contradicted by its own reply among them (break54 F9).
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text, _, after = text.rpartition("```") if "```" in text else (text, "", "")
        if after.strip():
            return False, None
    try:
        value = json.loads(
            text, object_pairs_hook=_unique_keys if unique_keys else None, parse_constant=_not_json, parse_int=_whole
        )
    except (ValueError, RecursionError):  # nested past what Python reads: not JSON to check (break24 F5)
        return False, None
    # A "\ud800" escape is read as a lone surrogate, which no record can hold: a grader's
    # reason with one stopped a run with exit 11 and no row written (break31 C1).
    return True, valid_text(value) if "\\ud" in text.lower() else value


def _schema_entries(schema: Any, depth: int = 0) -> Iterator[tuple[str, Any]]:
    """Every (key, value) of every object in a schema, to the depth a real schema goes (64:
    check_schema accepted it; the walk stops there)."""
    if depth > 64:
        return
    if isinstance(schema, dict):
        for key, item in schema.items():
            yield key, item
            yield from _schema_entries(item, depth + 1)
    elif isinstance(schema, list):
        for item in schema:
            yield from _schema_entries(item, depth + 1)


def outside_reference(schema: Any) -> str | None:
    """A `$ref` (or `$dynamicRef`) to anything but the schema itself: never followed when
    grading (break24 F6: fetched over the network with no timeout, or read from disk), so
    refused at validate time, where it can still be mended."""
    for key, item in _schema_entries(schema):
        if key in ("$ref", "$dynamicRef") and isinstance(item, str) and not item.startswith("#"):
            return f"{key} {short(item)!r} points outside the schema: put what it names in its $defs"
    return None


def schema_patterns(schema: Any) -> Iterator[str]:
    """Every regular expression a schema holds (`pattern` values, `patternProperties` keys)."""
    for key, item in _schema_entries(schema):
        if key == "pattern" and isinstance(item, str):
            yield item
        elif key == "patternProperties" and isinstance(item, dict):
            yield from (name for name in item if isinstance(name, str))


def json_leaves(value: Any) -> Iterator[Any]:
    """Every value inside a JSON value that is neither an object nor a list."""
    if isinstance(value, dict):
        for item in value.values():
            yield from json_leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from json_leaves(item)
    else:
        yield value


def is_json(data: bytes) -> bool:
    """Whether `data` is one whole JSON text."""
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True
