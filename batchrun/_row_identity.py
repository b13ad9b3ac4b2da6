"""What tells one row of variables from another, for the check that refuses a row given twice."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from ._template import as_text

# Keys sorted, as _matrix spells a row in its id (stable_id).
_ROW_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
REPEAT_HINT = (
    "as a prompt writes them: a row's variables are its id (the resume key); to ask the same row again, use `repeat:`"
)


def row_key(row: dict[str, Any]) -> bytes | None:
    """What tells a row apart from another: its variables as the templates write them, not its
    own checks (`x: 1` and `x: "1"` send one request twice, under two ids: out-110 F8); None if
    they cannot be encoded (such a row is refused for that reason elsewhere)."""
    try:
        encoded = orjson.dumps({k: as_text(v) for k, v in row.items() if k != "checks"}, option=_ROW_OPTIONS)
    except orjson.JSONEncodeError:
        return None
    return hashlib.sha256(encoded).digest()[:16]
