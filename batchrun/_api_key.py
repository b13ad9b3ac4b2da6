"""An API key as an HTTP header can carry it, checked wherever one enters: the environment
(the CLI), RunOptions and OpenRouterClient (a library caller)."""

from __future__ import annotations

import re

from ._exceptions import ConfigError

# What a header can carry of a key: visible ASCII, no space (RFC 9110 field values).
HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


def sendable_key(key: str | None, where: str = "the API key") -> str | None:
    """The key, or a ConfigError that does not show it: one no header can carry was a bare
    UnicodeEncodeError holding the whole key in its args (break50 F1), or, ending in a newline,
    a "network error" retried for seconds."""
    if key is not None and not HEADER_SAFE.fullmatch(key):
        raise ConfigError(
            f"{where} holds a space, a newline or a non-ASCII character, which an HTTP header cannot carry; "
            "check how it was set (the key is not shown)"
        )
    return key
