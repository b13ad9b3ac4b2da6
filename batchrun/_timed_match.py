"""Regular expressions from a job run against a model's answer, with a time limit.

A pattern that backtracks catastrophically (`(a|aa)+$` on forty a's and a "!") held the event
loop in C for minutes, past the run's deadline and SIGTERM (verify20 V15): Python's re has no
timeout. The regex module reads re's syntax (VERSION0) and stops a search at one; regex checks
and JSON Schema's `pattern` (in json_schema and tool_call checks) both search through it.
"""

from __future__ import annotations

import importlib
import math
import re
import threading
import time
import warnings
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import regex

from ._formats import short

REGEX_TIMEOUT_S = 1.0  # read at each search: tests shorten it
_FLAG_BITS = {"i": regex.IGNORECASE, "m": regex.MULTILINE, "s": regex.DOTALL, "x": regex.VERBOSE}


class PatternTimedOut(Exception):
    """A search ran past REGEX_TIMEOUT_S."""

    def __init__(self, pattern: str, seconds: float) -> None:
        super().__init__(pattern)
        self.pattern = pattern
        self.seconds = seconds


PatternError = regex.error  # a pattern that does not compile


MAX_PATTERN_ITEMS = 100_000  # what a pattern's nested counted repeats may multiply out to


def _parts(sre: Any, op: Any, arg: Any) -> list[Any] | None:
    """The sub-patterns of a group, an assertion, an atomic group, a branch or a conditional."""
    if op == sre.SUBPATTERN:
        return [arg[-1]]
    if op in (sre.ASSERT, sre.ASSERT_NOT):
        return [arg[1]]
    if op == sre.ATOMIC_GROUP:
        return [arg]
    if op == sre.BRANCH:
        return list(arg[1])
    if op == sre.GROUPREF_EXISTS:
        return [part for part in arg[1:] if part is not None]
    return None


def _expanded(items: Any, budget: int) -> tuple[int, bool]:
    """(how many items `items`, re's parse of a pattern, stands for once repeats nested in
    repeats are multiplied out, whether it holds a repeat), stopping once past `budget`. A repeat
    of repeat-free text is cheap (`.{1,1000000}` compiles in 11 MB): only nesting multiplies."""
    sre = importlib.import_module("re._constants")
    total, repeats = 0, False
    for op, arg in items:
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            low, high, sub = arg
            inner, nested = _expanded(sub, budget)
            times = max(1, high if high != sre.MAXREPEAT else low) if nested else 1
            total, repeats = total + times * inner, True
        elif (subs := _parts(sre, op, arg)) is not None:
            for sub in subs:
                inner, nested = _expanded(sub, budget)
                total, repeats = total + inner, repeats or nested
        else:
            total += 1
        if total > budget:
            break
    return total, repeats


_REGEX_ONLY = re.compile(r"\\[pPX](\{[^}]*\}|\w)?|\\N\{[^}]*\}|\(\?[a-zA-Z0-9]+\)|\{e<=\d+\}")


def _too_large(pattern: str, flags: str = "") -> bool:
    """Whether the pattern's nested counted repeats multiply out past MAX_PATTERN_ITEMS:
    compiling `((a{1000}){1000}){1000}` took all the machine's memory, a traceback at validate
    (break59 F3), as did its `x`-flag, atomic, conditional and `\\p{L}` spellings (verify60 F2).
    The regex module's own syntax is read as re's with a stand-in character."""
    parser = importlib.import_module("re._parser")  # re's own reader of its syntax (no stubs)
    bits = re.VERBOSE if "x" in flags else 0
    # `{ 1000 }` under the x flag is a repeat to the regex module, text to re (verify61 F2).
    pattern = re.sub(
        r"\{\s*(\d+)\s*(,\s*(\d*)\s*)?\}", lambda m: "{" + m[1] + ("," + m[3] if m[2] else "") + "}", pattern
    )
    for text in (pattern, _REGEX_ONLY.sub("a", pattern)):
        try:
            with warnings.catch_warnings():  # re's "possible nested set": the regex module's syntax
                warnings.simplefilter("ignore")
                parsed = parser.parse(text, bits)
        except (re.error, RecursionError, OverflowError, ValueError):
            continue
        return _expanded(parsed.data, MAX_PATTERN_ITEMS)[0] > MAX_PATTERN_ITEMS
    # Neither reads it: its counted repeats, however placed, may not multiply out past the bound.
    product = 1
    for found in re.finditer(r"\{(\d+)(?:,(\d*))?\}", pattern):
        product *= max(1, int(found.group(2) or found.group(1)))
        if product > MAX_PATTERN_ITEMS:
            return True
    return False


@lru_cache(maxsize=256)
def compile_pattern(pattern: str, flags: str) -> regex.Pattern[str]:
    """The pattern as it will be searched (validation compiles it here too); PatternError."""
    bits = 0
    for letter in flags:
        bits |= _FLAG_BITS[letter]
    if _too_large(pattern, flags):
        raise PatternError(f"its nested repeats multiply out past {MAX_PATTERN_ITEMS:,} items")
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


SCHEMA_TIMEOUT_S = 2.0  # what checking one answer against a schema may take; read at each check
_checking = threading.local()  # the monotonic time the check in this thread must end by


class _SchemaTimedOut(Exception):
    """Internal: a schema check ran past SCHEMA_TIMEOUT_S."""


def _timed(keyword: Any) -> Any:
    """A schema keyword that first looks at the clock: `anyOf`s of `$ref`s doubling at each level
    (however the refs are written) graded one answer for a minute and 3 GB, past the deadline
    and SIGTERM (break59 F2, verify60 F1); the check now fails at the limit."""

    def check(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[Any]:
        if time.monotonic() > getattr(_checking, "until", math.inf):
            raise _SchemaTimedOut()
        yield from keyword(validator, value, instance, schema)

    return check


def _canonical(value: Any) -> Any:
    """`value` as a hashable key, equal where JSON Schema's equality is (1 and 1.0; not true and 1)."""
    if isinstance(value, bool) or value is None:
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", value)
    if isinstance(value, list):
        return ("l", tuple(map(_canonical, value)))
    if isinstance(value, dict):
        return ("d", frozenset((k, _canonical(v)) for k, v in value.items()))
    return ("s", value)


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[Any]:
    """`uniqueItems` in one pass: jsonschema's compares unsortable items pairwise, 46 s for an
    answer of 8,000 objects, inside one keyword the clock cannot stop (verify60 F3)."""
    from jsonschema.exceptions import ValidationError

    if unique and validator.is_type(instance, "array"):
        seen: set[Any] = set()
        for item in instance:
            key = _canonical(item)
            if key in seen:
                yield ValidationError(f"{short(repr(instance), 80)} has non-unique elements")
                return
            seen.add(key)


def _pattern_properties(validator: Any, patterns: Any, instance: Any, schema: Any) -> Iterator[Any]:
    """`patternProperties` searched with the limit: jsonschema's uses re.search, with none, in the
    thread the deadline and signals need (`^(a+)+$` on 33 a's: past SIGTERM, verify61 F1)."""
    if validator.is_type(instance, "object"):
        for pattern, subschema in patterns.items():
            for key, value in instance.items():
                if timed_search(pattern, "", key):
                    yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, allowed: Any, instance: Any, schema: Any) -> Iterator[Any]:
    """`additionalProperties`, its `patternProperties` searched with the limit (as above)."""
    from jsonschema.exceptions import ValidationError

    if not validator.is_type(instance, "object"):
        return
    named, patterns = schema.get("properties", {}), list(schema.get("patternProperties", {}))
    extras = [k for k in instance if k not in named and not any(timed_search(p, "", k) for p in patterns)]
    if validator.is_type(allowed, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], allowed, path=extra)
    elif not allowed and extras:
        yield ValidationError(f"additional properties are not allowed ({short(', '.join(map(repr, extras)), 120)})")


@lru_cache(maxsize=1)
def _schema_validator() -> Any:
    from jsonschema import Draft202012Validator, validators

    keywords = {name: _timed(keyword) for name, keyword in Draft202012Validator.VALIDATORS.items()}
    keywords.update(
        pattern=_timed(_timed_pattern),
        uniqueItems=_timed(_unique_items),
        patternProperties=_timed(_pattern_properties),
        additionalProperties=_timed(_additional_properties),
    )
    return validators.extend(Draft202012Validator, keywords)  # type: ignore[no-untyped-call]


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

    _checking.until = time.monotonic() + SCHEMA_TIMEOUT_S
    try:
        validator = _schema_validator()(schema, registry=_local_registry())
        return next(iter(validator.iter_errors(instance)), None)
    except _SchemaTimedOut:
        return _Unchecked(f"the schema took over {SCHEMA_TIMEOUT_S:g} s to check this answer")
    except RecursionError:
        return _Unchecked("nested too deeply to check")
    except (ArithmeticError, ValueError, TypeError) as exc:  # multipleOf on a 4,000-digit number (verify61 F4)
        return _Unchecked(f"a number in it cannot be checked ({short(str(exc), 80)})")
    except Unresolvable as exc:
        return _Unchecked(f"the schema's reference cannot be followed ({str(exc)[:100]})")
