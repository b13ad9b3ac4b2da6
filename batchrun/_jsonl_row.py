"""One line of a JSONL dataset read as one row of variables, strictly: a key given twice, a
number no request could carry, a line nested past what a job file may hold, or text that is
not text is a RowError naming the line."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from ._files import nesting_depth
from ._jobfile import MAX_INT, unusable_number
from ._limits import MAX_DEPTH


class RowError(Exception):
    """A malformed row: its line number and what is wrong."""

    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


_READ_AS_JSONL = ": a file not named .csv is read as JSON lines, an object a line"


def jsonl_row(number: int, line: str) -> dict[str, Any]:
    """The row a JSONL line holds, or RowError."""
    try:
        row = json.loads(
            line, object_pairs_hook=_unique_keys, parse_int=_int, parse_float=_float, parse_constant=_constant
        )
    except RowError as exc:
        raise RowError(number, exc.message) from None
    except (json.JSONDecodeError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        hint = "" if line.lstrip().startswith("{") else _READ_AS_JSONL  # a .tsv's lines: why (out-130 F9)
        raise RowError(number, f"not valid JSON ({reason}){hint}") from None
    if not isinstance(row, dict):
        # A JSON array of rows on one line (a `json.dump` of a list): said as its lines' are (out-152 F8).
        hint = _READ_AS_JSONL if isinstance(row, list) else ""
        raise RowError(number, f"a row must be a JSON object of variables{hint}")
    if nesting_depth(row) > MAX_DEPTH:  # orjson's limit is 255: it was said as a lone surrogate (out-143)
        raise RowError(number, f"nested deeper than {MAX_DEPTH} levels, as a job file may not be")
    try:
        orjson.dumps(row)  # what every request body and record does with it
    except orjson.JSONEncodeError:
        # "\ud800" is valid JSON but no text: the run died encoding its body (break24 F2).
        raise RowError(number, "a lone surrogate escape (\\ud800 to \\udfff) is not text") from None
    return row


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key, value in pairs:
        if key in row:
            raise RowError(None, f"duplicate key {key!r}")
        row[key] = value
    return row


def _int(text: str) -> int:
    # Past 4,300 digits int() raises ValueError, a traceback (out-143 3); 40 are past 64 bits already.
    value = int(text) if len(text) <= 40 else MAX_INT + 1
    if (why := unusable_number(value)) is not None:
        raise RowError(None, f"the number {text[:24]}{'...' if len(text) > 24 else ''} {why}")
    return value


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: Python reads it as inf, which no JSON body carries (break24 F3)
        raise RowError(None, f"the number {text[:24]}{'...' if len(text) > 24 else ''} is past what a number can hold")
    return value


def _constant(text: str) -> float:
    # NaN and Infinity are not JSON (RFC 8259), though Python's reader takes them.
    raise RowError(None, f"{text} is not a JSON number")
