"""Reading escapes: what a text says once its JSON, URL and HTML escapes are read.

A key written with escapes survives a scan of the raw text and comes back whole when the text is
decoded. `unescaped` reads every escape of a character a secret can hold, level after level, so
that the scrubber can search what a reader of the text would see.
"""

from __future__ import annotations

import functools
import html.entities
import itertools
import re
import unicodedata

# A key written with escapes survives a scan of the raw text and comes back whole when the text
# is decoded: JSON's ("sk\u002dor...": tool-call arguments, a verdict, a json_schema check), a
# URL's percent-encoding, HTML's character references (out-125 F3: a server echoing the header
# so put it whole into the results). Each escape of a character a key can hold is read as it.
# Browsers read a character reference without its `;` too (out-128 F2). An escape of an escape's
# own characters (`%2573`, `&#37;73`) is read as well, a few levels deep: they are plain text in
# JSON, so reading them changes no JSON text's meaning.
# A legacy URL escape (`%u0073`) too, and text written in full-width or other compatibility forms
# (`ｓｋ－ｏｒ－…`), read by NFKC (out-176 F5: both reached the results). And (out-178 F2, F3): a
# JSON escape escaped again (`\\u0073`), references with leading zeros (`&#x00000073;`), HTML's
# names of ASCII punctuation (`&amp;#115;`, `&sol;`), and an escape of any printable ASCII a
# secret may hold (a password's `/`, `+`, `!`) but a quote or a backslash, which would change
# what a JSON text means. Any printable character beyond ASCII too (a password's `é`), written as
# a reference, a JSON or legacy URL escape, or percent-encoded UTF-8 (`%C3%A9`; out-180 F6), and
# HTML's `&lt;` and `&gt;` (out-180 F4: a secret holding `<` reached a page as `&lt;`). An escaped
# backslash is read as BACKSLASH, a character no text holds that a JSON escape may start with as
# with a backslash: `%5Cu0073`, `&#92;&#117;0073`, `\u005c\u0075...` read as `s` a level later
# (out-182), and a backslash read alone changes no JSON text's meaning.
_NAMED = (
    "bsol|lt|gt|amp|sol|plus|excl|equals|period|colon|semi|num|percnt|dollar|lowbar|commat|quest|comma|ast|apos"
    "|lpar|rpar"
)
# A run of backslashes is tried from its start only (the lookbehind): tried at each of its
# characters, a text of 40,000 took 1.3 s, quadratic in its length.
_ONE = (  # one escape
    r"(?<![\\\ue000])[\\\ue000]++u(?P<u>[0-9a-fA-F]{4})|%[uU](?P<pu>[0-9a-fA-F]{4})"
    r"|(?P<utf8>%[cCdD][0-9a-fA-F]%[89abAB][0-9a-fA-F]|%[eE][0-9a-fA-F](?:%[89abAB][0-9a-fA-F]){2}"
    r"|%[fF][0-4](?:%[89abAB][0-9a-fA-F]){3})|%(?P<p>[0-9a-fA-F]{2})"
    r"|&#(?:[xX]0*(?P<hex>[0-9a-fA-F]{1,6})|0*(?P<dec>[0-9]{1,7}));?|&(?P<named>" + _NAMED + r");"
)
# A run of 16 or more URL or JSON escapes is read at once (_read_run), as its escapes one by one.
# The lookahead names the characters an escape starts with: without it, each alternative was
# tried at every character of a text (a 4 MB text with one `%` in it: 0.29 s, now 0.05 s).
_ESCAPED = re.compile(r"(?=[%&\\\ue000])(?:(?P<run>(?:%[0-9a-fA-F]{2}){16,}|(?:\\u[0-9a-fA-F]{4}){16,})|" + _ONE + ")")
BACKSLASH = "\ue000"  # a backslash read from an escape (a private use character)
_ESCAPE_MARKS = ("\\u", "%", "&", BACKSLASH)
# Characters a reader does not see (controls but the spaces, format characters: zero-width ones, a
# soft hyphen, bidi controls, a BOM): a key with them between its characters shows as the key
# (out-182: a UTF-16 text read as UTF-8, a NUL between each character). Read as nothing.
ASCII_INVISIBLE = "\x00-\x08\x0e-\x1f\x7f"  # a character class's ranges (the spaces \t-\r are words' ends)
INVISIBLE = ASCII_INVISIBLE + "\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff"
_INVISIBLE = re.compile(f"[{INVISIBLE}]+")
_LEVELS = 4  # an escape, escaped again up to three times (out-179 F3: `%25252573` passed)

# What an escape is read as (by its code): printable ASCII but a quote; a backslash as BACKSLASH.
_READABLE = {i: chr(i) for i in range(128) if chr(i).isprintable() and chr(i) != '"'} | {0x5C: BACKSLASH}


def _readable(code: int) -> str | None:
    """The character an escape of `code` is read as: printable ASCII but a quote, a backslash
    as BACKSLASH (_READABLE), or a printable character beyond ASCII; None for any other."""
    if code < 128:
        return _READABLE.get(code)
    return chr(code) if code <= 0x10FFFF and chr(code).isprintable() else None


def _unescape_key_chars(match: re.Match[str]) -> str:
    """An escape of a printable character, as that character (a backslash as BACKSLASH); a
    quote and other escapes are left alone (decoding `\\u0022` would change what a JSON text
    means)."""
    if match.lastgroup == "run":
        return _read_run(match.group(0))
    if named := match.group("named"):
        return BACKSLASH if named == "bsol" else html.entities.html5[named + ";"]
    if utf8 := match.group("utf8"):
        try:
            read = bytes.fromhex(utf8.replace("%", "")).decode("utf-8")
        except UnicodeDecodeError:  # an overlong form, a surrogate: no character
            return utf8
        return read if read.isprintable() else utf8
    if percent := match.group("p"):  # a byte: ASCII alone is a character by itself
        return _READABLE.get(int(percent, 16), match.group(0))
    hex_digits = match.group("u") or match.group("pu") or match.group("hex")
    return _readable(int(hex_digits, 16) if hex_digits else int(match.group("dec"))) or match.group(0)


def _spellings(digits: str) -> set[str]:
    """`digits` (hex) in every mix of cases: `4a`, `4A`."""
    return {"".join(case) for case in itertools.product(*({d.lower(), d.upper()} for d in digits))}


# A run of URL or JSON escapes is read by a lookup an escape (no call a match): a hostile 4 MB
# body of `%41` took ~1 s of the event loop a reading, and a run overshot its deadline by
# seconds (out-178 F5). The characters read are _unescape_key_chars's: printable ASCII but a
# quote, a backslash as BACKSLASH; other escapes stay as they were written.
_PERCENT_READ = {s: c for code, c in _READABLE.items() for s in _spellings(f"{code:02x}")}
_JSON_READ = {s: c for code, c in _READABLE.items() for s in _spellings(f"{code:04x}")}


_ONE_ESCAPE = re.compile(_ONE)
_BEYOND_ASCII = re.compile("%[89a-fA-F]")


def _read_run(run: str) -> str:
    if run[0] == "%":
        if _BEYOND_ASCII.search(run):  # UTF-8 of characters beyond ASCII: read escape by escape
            return _ONE_ESCAPE.sub(_unescape_key_chars, run)
        return "".join(
            _PERCENT_READ.get(code) or "%" + code for code in (run[i + 1 : i + 3] for i in range(0, len(run), 3))
        )
    return "".join(
        _JSON_READ.get(code) or _readable(int(code, 16)) or "\\u" + code
        for code in (run[i + 2 : i + 6] for i in range(0, len(run), 6))
    )


# The same escapes, found by split: the text between them and the escapes themselves, in turn.
_ESCAPES_SPLIT = re.compile("(" + re.sub(r"\(\?P<\w+>", "(?:", _ESCAPED.pattern) + ")")


@functools.lru_cache(maxsize=4096)
def _reading(escape: str) -> str:
    """What `escape` (one that _ESCAPED found) reads as: the alternative that matched it in a
    text is the one that matches it alone."""
    match = _ESCAPED.fullmatch(escape)
    return escape if match is None else _unescape_key_chars(match)


def _read_escapes(text: str) -> str:
    """`text` with its escapes read (_ESCAPED.sub(_unescape_key_chars, text)). An escape read a
    call each: a hostile body of short escapes (`%41x%41x...`, `&amp;amp;#65;`) took ~0.9 s of
    the event loop a reading per 4 MB, twice a row (its reply and its record), and a run overran
    its deadline by seconds (out-178 F5, out-179 F2). Split, each escape is a lookup."""
    parts = _ESCAPES_SPLIT.split(text)
    parts[1::2] = [_reading(escape) if len(escape) <= 64 else _reading.__wrapped__(escape) for escape in parts[1::2]]
    return "".join(parts)


def unescaped(text: str) -> str:
    """`text` with every escape of a key's characters read, and its compatibility forms as NFKC
    reads them: the same text where there are none."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    if not text.isprintable() and _INVISIBLE.search(text):  # isprintable: 5x faster, true of most texts
        text = _INVISIBLE.sub("", text)
    for _ in range(_LEVELS):
        if not any(mark in text for mark in _ESCAPE_MARKS):
            break
        read = _read_escapes(text)
        if read == text:
            break
        # What an escape wrote may be a compatibility form (`\uff53`, `&#65363;`: a full-width
        # `s`; out-182): read by NFKC at each level, as the text was first.
        text = read if read.isascii() else unicodedata.normalize("NFKC", read)
    return text
