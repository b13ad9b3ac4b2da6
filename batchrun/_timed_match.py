"""Regular expressions from a job run against a model's answer, with a time limit.

A pattern that backtracks catastrophically (`(a|aa)+$` on forty a's and a "!") held the event
loop in C for minutes, past the run's deadline and SIGTERM (verify20 V15): Python's re has no
timeout. The regex module reads re's syntax (VERSION0) and stops a search at one; regex checks
and JSON Schema's `pattern` (in json_schema and tool_call checks) both search through it.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import regex

REGEX_TIMEOUT_S = 1.0  # read at each search: tests shorten it
_FLAG_BITS = {"i": regex.IGNORECASE, "m": regex.MULTILINE, "s": regex.DOTALL, "x": regex.VERBOSE}


class PatternTimedOut(Exception):
    """A search ran past REGEX_TIMEOUT_S."""

    def __init__(self, pattern: str, seconds: float) -> None:
        super().__init__(pattern)
        self.pattern = pattern
        self.seconds = seconds


PatternError = regex.error  # a pattern that does not compile


MAX_PATTERN_ITEMS = 100_000  # what a pattern's counted repeats may multiply out to


def _expanded(items: Any, budget: int) -> int:
    """How many items `items` (re's parse of a pattern) expands to, counted repeats multiplied
    out, stopping once past `budget`."""
    sre = importlib.import_module("re._constants")
    total = 0
    for op, arg in items:
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            low, high, sub = arg
            times = max(1, high if high != sre.MAXREPEAT else low)
            total += times * _expanded(sub, budget // times + 1)
        elif op == sre.SUBPATTERN:
            total += _expanded(arg[-1], budget)
        elif op == sre.BRANCH:
            total += sum(_expanded(branch, budget) for branch in arg[1])
        elif op in (sre.ASSERT, sre.ASSERT_NOT):
            total += _expanded(arg[1], budget)
        else:
            total += 1
        if total > budget:
            break
    return total


def _too_large(pattern: str) -> bool:
    """Whether the pattern's counted repeats multiply out past MAX_PATTERN_ITEMS: compiling
    `((a{1000}){1000}){1000}` took all the machine's memory, a traceback at validate (break59 F3).
    A pattern re cannot read (the regex module's own syntax) is left to compile."""
    parser = importlib.import_module("re._parser")  # re's own reader of its syntax (no stubs)
    try:
        parsed = parser.parse(pattern)
    except (re.error, RecursionError, OverflowError):
        return False
    return _expanded(parsed.data, MAX_PATTERN_ITEMS) > MAX_PATTERN_ITEMS


@lru_cache(maxsize=256)
def compile_pattern(pattern: str, flags: str) -> regex.Pattern[str]:
    """The pattern as it will be searched (validation compiles it here too); PatternError."""
    bits = 0
    for letter in flags:
        bits |= _FLAG_BITS[letter]
    if _too_large(pattern):
        raise PatternError(f"its repeats multiply out past {MAX_PATTERN_ITEMS:,} items")
    return regex.compile(pattern, bits)


def timed_search(pattern: str, flags: str, text: str) -> bool:
    """Whether `pattern` is found in `text`; PatternTimedOut past the limit."""
    try:
        # concurrent: the GIL is let go while it searches, so the run's event loop goes on.
        return compile_pattern(pattern, flags).search(text, timeout=REGEX_TIMEOUT_S, concurrent=True) is not None
    except TimeoutError:
        raise PatternTimedOut(pattern, REGEX_TIMEOUT_S) from None


def _timed_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    """JSON Schema's `pattern` keyword, searched with the limit (jsonschema's re.search has none)."""
    from jsonschema.exceptions import ValidationError

    if validator.is_type(instance, "string") and not timed_search(pattern, "", instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@lru_cache(maxsize=1)
def _schema_validator() -> Any:
    from jsonschema import Draft202012Validator, validators

    return validators.extend(Draft202012Validator, {"pattern": _timed_pattern})  # type: ignore[no-untyped-call]


class _Unchecked:
    """Why an instance could not be validated: a failure of the check, with a message, never
    an exception (an `internal` error) for an answer that was paid for."""

    def __init__(self, message: str) -> None:
        self.message = message


def _no_retrieval(uri: str) -> Any:
    """A `$ref` to anything outside the schema is never fetched (break24 F6: a check's
    `http://` ref was fetched at grading time, with no timeout: a URL that never answered
    hung the run past its deadline and SIGTERM)."""
    from referencing.exceptions import NoSuchResource

    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # an attrs class the stubs do not see


@lru_cache(maxsize=1)
def _local_registry() -> Any:
    from referencing import Registry

    return Registry(retrieve=_no_retrieval)  # type: ignore[call-arg]


def first_schema_error(schema: dict[str, Any], instance: Any) -> Any:
    """The first way `instance` fails `schema` (Draft 2020-12), or None; PatternTimedOut."""
    from referencing.exceptions import Unresolvable

    try:
        validator = _schema_validator()(schema, registry=_local_registry())
        return next(iter(validator.iter_errors(instance)), None)
    except RecursionError:
        return _Unchecked("nested too deeply to check")
    except Unresolvable as exc:
        return _Unchecked(f"the schema's reference cannot be followed ({str(exc)[:100]})")
