"""`{{var}}` templates: compiled once per job, rendered once per row.

The variable-name grammar (README "The job file"): `{{ name }}`, spaces inside the braces
allowed, where a name is a letter (any Unicode letter) or `_`, then letters, digits or
`_` — Python's identifier rule for the common cases. Anything else with `{{` or `}}` in a
templated string (`{{country-name}}`, `{{1x}}`, `{{country}?`, a lone `}}`) is reported by
`template_problems` at validation, never sent as literal text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

PLACEHOLDER = re.compile(r"\{\{\s*([^\W\d]\w*)\s*\}\}")
_BROKEN = re.compile(r"\{\{[^{}\n]{0,40}\}?\}?|\}\}")
_TOUCHING = re.compile(r"\{+\{\{\s*[^\W\d]\w*\s*\}\}\}*|\{\{\s*[^\W\d]\w*\s*\}\}\}+")


def template_problems(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], str]]:
    """(path, message) for every string inside `value` with a `{{` or `}}` that is not a valid placeholder."""
    if isinstance(value, str):
        # `{{{country}}}` would send `{France}`: a brace touching a placeholder is refused
        # too, as a literal `{{` or `}}` cannot appear in a templated string.
        touching = _TOUCHING.search(value)
        rest = PLACEHOLDER.sub("", value)
        if touching is None and "{{" not in rest and "}}" not in rest:
            return []
        found = touching or _BROKEN.search(rest)
        fragment = found.group(0) if found else "{{"
        return [
            (
                path,
                f"{fragment!r} is not a valid placeholder: write {{{{name}}}}, a name being a letter or _ "
                "followed by letters, digits or _",
            )
        ]
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in template_problems(item, (*path, str(key)))]
    if isinstance(value, list):
        return [p for index, item in enumerate(value) for p in template_problems(item, (*path, index))]
    return []


def emptied_by(value: Any, row: Mapping[str, Any], blank: Callable[[str], bool]) -> str | None:
    """The first templated string inside `value` that renders `blank` for `row` (a check that
    would compare with nothing and pass), or None."""
    if isinstance(value, str):
        names = set(PLACEHOLDER.findall(value))
        if names and names <= row.keys() and blank(Template(value).render(row)):
            return value
        return None
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for item in items:
        found = emptied_by(item, row, blank)
        if found is not None:
            return found
    return None


class Template:
    """A string split once into literal text and variable names, so rendering is a join."""

    __slots__ = ("source", "_parts", "names")

    def __init__(self, source: str) -> None:
        self.source = source
        pieces = PLACEHOLDER.split(source)
        # re.split with one group alternates literal, name, literal, name, ...
        self._parts: tuple[str, ...] = tuple(pieces)
        self.names: frozenset[str] = frozenset(pieces[1::2])

    def render(self, values: Mapping[str, Any]) -> str:
        if not self.names:
            return self.source
        parts = self._parts
        out = [parts[0]]
        for i in range(1, len(parts), 2):
            out.append(as_text(values[parts[i]]))
            out.append(parts[i + 1])
        return "".join(out)


def as_text(value: Any) -> str:
    """A variable's value as a placeholder writes it. A boolean as JSON writes it: a JSONL
    dataset's `true` was sent "True" (break65 F2). Null writes nothing: a row may hold it only
    in variables no template uses (_row_checker)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def names_in(value: Any) -> set[str]:
    """Every placeholder name used anywhere inside a nested structure of strings."""
    found: set[str] = set()
    if isinstance(value, str):
        found.update(PLACEHOLDER.findall(value))
    elif isinstance(value, dict):
        for item in value.values():
            found |= names_in(item)
    elif isinstance(value, list):
        for item in value:
            found |= names_in(item)
    return found


def render_nested(value: Any, values: Mapping[str, Any]) -> Any:
    """Render every string inside a nested structure (used for checks, not on the hot path)."""
    if isinstance(value, str):
        return Template(value).render(values) if "{{" in value else value
    if isinstance(value, dict):
        return {k: render_nested(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [render_nested(v, values) for v in value]
    return value
