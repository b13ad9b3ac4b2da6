"""`{{var}}` templates: compiled once per job, rendered once per row."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class Template:
    """A string split once into literal text and variable names, so rendering is a join."""

    __slots__ = ("source", "_parts", "names")

    def __init__(self, source: str) -> None:
        self.source = source
        pieces = _PLACEHOLDER.split(source)
        # re.split with one group alternates literal, name, literal, name, ...
        self._parts: tuple[str, ...] = tuple(pieces)
        self.names: frozenset[str] = frozenset(pieces[1::2])

    def render(self, values: Mapping[str, Any]) -> str:
        if not self.names:
            return self.source
        parts = self._parts
        out = [parts[0]]
        for i in range(1, len(parts), 2):
            value = values[parts[i]]
            out.append("" if value is None else str(value))
            out.append(parts[i + 1])
        return "".join(out)


def names_in(value: Any) -> set[str]:
    """Every placeholder name used anywhere inside a nested structure of strings."""
    found: set[str] = set()
    if isinstance(value, str):
        found.update(_PLACEHOLDER.findall(value))
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
