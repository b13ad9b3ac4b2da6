"""How figures and times are written, the same everywhere: rates, milliseconds, UTC times."""

from __future__ import annotations

import calendar
import functools
import re
import time
from typing import Any

# Control characters other than newline and tab: a model or provider id, a check name or a
# server's provider field carrying ESC sequences set the terminal's title or cleared it
# (break21 R32); and the bidirectional overrides and isolates, which reorder what follows on
# the line (a grader's reason with U+202E: break23 F1). Shown escaped, as answers already were.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _shown(found: re.Match[str]) -> str:
    code = ord(found.group())
    # DEL, C1 and the rest as JSON writes escapes: JSON output (report --json) holds them raw,
    # and a \x escape would make it invalid; C0 never reaches here from JSON (it escapes those).
    return f"\\x{code:02x}" if code < 0x20 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """Text as a terminal or a log shows it: no control code reaches either, newlines aside."""
    return _CONTROL.sub(_shown, text)


def one_line(text: str) -> str:
    """`visible`, and on one line: a newline in a server's or a model's text forged a line."""
    return visible(text).replace("\n", "\\n")


def short(text: str, limit: int = 60) -> str:
    """Text cut to `limit` characters, the last three of them "..." when it was longer."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


_MARKDOWN = str.maketrans({"\\": "\\\\", "$": "\\$", "|": "\\|", "\n": " ", "\r": " ", "<": "&lt;", ">": "&gt;"})


def md_text(text: str) -> str:
    """Text a run carries (an answer, a model or check name, a reason) as Markdown shows it
    in a step summary: on one line, breaking no table, and neither HTML nor a link (an
    answer's `<img onerror>` or `</table>` was rendered: break21 R13), nor math: GitHub reads
    `$0.05 of $0.10 ($` as a formula between its dollars. A bare `https://...`, `www....` or
    e-mail address (`mailto:` and `xmpp:` too) is no link either: GitHub links them by itself
    (break62 F8), so a zero-width space breaks the scheme from its `://`, `www` from its dot and
    an address after its `@`. After the `://` it did not: cmark-gfm still linked the host, whose
    name drops the space (verify63 F2)."""
    shown = visible(text).translate(_MARKDOWN).replace("](", "]\\(")  # `[text](url)` is a link no more
    return _BARE_LINK.sub("\u200b", shown).replace("@", "@\u200b")


# Where GitHub's Markdown begins a link with no brackets (its "extended autolinks"): a zero-width
# space there, and cmark-gfm sees no scheme and no `www.`.
_BARE_LINK = re.compile(r"(?i)(?<=https)(?=://)|(?<=http)(?=://)|(?<=ftp)(?=://)|(?<=www)(?=\.)")


def vars_text(values: dict[str, Any], limit: int = 60) -> str:
    """A row's variables on one line, as `k=v, ...` (an item's name beside its model and prompt)."""
    return short(one_line(", ".join(f"{k}={v}" for k, v in values.items())), limit)


def md_code(text: str) -> str:
    """Text in a code span: a backtick in it would end the span early."""
    return "`" + visible(text).replace("`", "'").replace("\n", " ") + "`"


def pct(value: float | None) -> str:
    """A rate as a percentage with one decimal; "-" when there is none."""
    return "-" if value is None else f"{value * 100:.1f}%"


def ms(value: float | None) -> str:
    """Milliseconds, whole and grouped; "-" when there are none."""
    return "-" if value is None else f"{value:,.0f}"


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


LAST_TIME = 253402300799.0  # 9999-12-31T23:59:59Z: past it (or not finite) is no time


def utc(ts: float) -> str:
    """ISO 8601 UTC with milliseconds (records); strftime runs once a second, not twice a row."""
    return f"{_utc_second(int(ts))}.{int(ts % 1 * 1000):03d}Z"


def utc_seconds(ts: float) -> str:
    """ISO 8601 UTC to the second, as OpenRouter writes times (`expires_at`, `created_at`).
    A time read from a file may be anything (a cache's created_at of 9e999 was a traceback in
    `cache stats`: break21 R27): one that is no time says so."""
    if not 0 <= ts <= LAST_TIME:  # NaN and infinities too
        return "(no valid time)"
    return f"{_utc_second(int(ts))}Z"


def utc_compact(ts: float, millis: bool = False) -> str:
    """A UTC time for file and key names: 20261129T003000Z (with `millis`, 20261129T003000.123Z)."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(ts))
    return f"{stamp}.{int(ts % 1 * 1000):03d}Z" if millis else f"{stamp}Z"


def utc_readable(ts: float) -> str:
    """A UTC time for people: 2026-11-29 00:30:00 UTC."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def parse_utc_seconds(text: str) -> float:
    """The inverse of `utc_seconds`; raises ValueError."""
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
