"""Generation ids: what a reply's headers or body name, checked before anything keeps them.

A generation id is how a cost is looked up later (GET /generation?id=), so an attempt
abandoned in flight keeps the id its headers already gave.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from ._exceptions import RequestFailed
from ._scrub import Scrubber


class Flight:
    """An attempt in flight: its generation id as soon as the reply's headers (or a stream
    chunk) named it, so a cancel that throws the attempt away (the deadline, SIGTERM,
    SIGINT) still knows which generation to look up (break-14 #10). `seen` is told each new
    id (the attempt journal keeps it, so a resume after kill -9 can look it up: _journal)."""

    __slots__ = ("_id", "seen")

    def __init__(self, seen: Callable[[str], None] | None = None) -> None:
        self._id: str | None = None
        self.seen = seen

    @property
    def generation_id(self) -> str | None:
        return self._id

    @generation_id.setter
    def generation_id(self, value: str | None) -> None:
        if value is not None and value != self._id and self.seen is not None:
            self.seen(value)
        self._id = value


MESSAGE_LIMIT = 300  # a failure's message, once scrubbed (the client's own descriptions too)
_GENERATION_ID = re.compile(r"[A-Za-z0-9_.:-]{1,200}")


def valid_generation_id(value: Any, scrub: Scrubber) -> str | None:
    """A generation id is stored in records and sent back in a URL: only id characters pass,
    and never one holding a key or a fragment of one (a server may echo the key in it)."""
    if not isinstance(value, str) or not _GENERATION_ID.fullmatch(value):
        return None
    return value if scrub.text(value) == value else None


def generation_header(headers: Mapping[str, str] | None, scrub: Scrubber) -> str | None:
    """X-Generation-Id, sent on every endpoint's reply (api_reference/streaming.mdx)."""
    return valid_generation_id(headers.get("x-generation-id") if headers is not None else None, scrub)


def abandoned(
    failure: RequestFailed, headers: list[Mapping[str, str]], billable: bool, scrub: Scrubber
) -> RequestFailed:
    """Mark a failure after which the server may still bill the attempt. Its message may quote
    what the server sent (a Content-Encoding header echoing the key: out-109 F1), so it is
    scrubbed here, before the cut every message leaving the client has."""
    failure.message = scrub.text(failure.message)[:MESSAGE_LIMIT]
    if billable:
        failure.maybe_billed = True
        failure.generation_id = generation_header(headers[0] if headers else None, scrub)
    return failure
