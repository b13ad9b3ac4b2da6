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
# (out-182), and a backslash read alone changes no JSON text's meaning. An escaped double quote
# likewise as QUOTE (out-183 F5: a password holding `"`, URL-encoded, reached the results).
# Characters a reader does not see: controls but the spaces (a vertical tab and a form feed too),
# and Unicode's default-ignorable code points (zero-width ones, a soft hyphen, bidi controls, a
# BOM, variation selectors, Hangul fillers, tags; out-183 F3) and lone surrogates: a key with them
# between its characters shows as the key (out-182: a UTF-16 text read as UTF-8, a NUL between
# each character). Read as nothing, raw or escaped (out-183 F1: `s\u200bk...`, `s&shy;k...`).
ASCII_INVISIBLE = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f"  # a character class's ranges
INVISIBLE = (
    ASCII_INVISIBLE + "\x80-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb\ud800-\udfff\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U00013430-\U0001343f\U000e0000-\U000e0fff"
)
_INVISIBLE = re.compile(f"[{INVISIBLE}]+")
# What ends a word, with the quotes (a character class): the spaces a reader sees as spaces.
SPACES = " \t\n\r\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Tag characters spell ASCII out of sight (U+E0073 is a hidden `s`): read as the ASCII they spell.
_TAGS = re.compile("[\U000e0020-\U000e007e]+")
_NAMED = "|".join(
    ["bsol", "quot", "lt", "gt", "amp", "sol", "plus", "excl", "equals", "period", "colon", "semi", "num", "percnt"]
    + ["dollar", "lowbar", "commat", "quest", "comma", "ast", "apos", "lpar", "rpar"]
    # The names of invisible characters (`&shy;`, `&zwj;`, `&ZeroWidthSpace;`): read as nothing.
    + [name[:-1] for name, read in html.entities.html5.items() if name[-1] == ";" and _INVISIBLE.fullmatch(read)]
)
# A run of backslashes is tried from its start only (the lookbehind): tried at each of its
# characters, a text of 40,000 took 1.3 s, quadratic in its length.
_SLASHES = r"(?<![\\\ue000])[\\\ue000]++"


def _utf8_bytes(first: str, byte: str) -> str:
    """The UTF-8 of one character beyond ASCII, its first byte written `first` and two hex
    digits, each other `byte` and two."""
    more = f"{byte}[89abAB][0-9a-fA-F]"
    return f"{first}[cCdD][0-9a-fA-F]{more}|{first}[eE][0-9a-fA-F](?:{more}){{2}}|{first}[fF][0-4](?:{more}){{3}}"


# Python's escapes of bytes too (`\x73`, `\xe2\x80\x8b`), as an exception's message quotes what a
# server sent (out-183 F4: a bad status line's bytes). A JSON escape's surrogate pair is read as
# the character it makes (a tag, an emoji); a lone surrogate, as nothing.
_ONE = (  # one escape
    _SLASHES + r"u(?P<hi>[dD][89abAB][0-9a-fA-F]{2})[\\\ue000]++u(?P<lo>[dD][c-fC-F][0-9a-fA-F]{2})"
    "|" + _SLASHES + r"u(?P<u>[0-9a-fA-F]{4})|%[uU](?P<pu>[0-9a-fA-F]{4})"
    r"|(?P<utf8>" + _utf8_bytes("%", "%") + "|" + _SLASHES + "(?:" + _utf8_bytes("x", r"[\\\ue000]++x") + "))"
    r"|%(?P<p>[0-9a-fA-F]{2})|" + _SLASHES + r"x(?P<x>[0-9a-fA-F]{2})"
    r"|&#(?:[xX]0*(?P<hex>[0-9a-fA-F]{1,6})|0*(?P<dec>[0-9]{1,7}));?|&(?P<named>" + _NAMED + r");"
)
# A run of 16 or more URL or JSON escapes is read at once (_read_run), as its escapes one by one.
# The lookahead names the characters an escape starts with: without it, each alternative was
# tried at every character of a text (a 4 MB text with one `%` in it: 0.29 s, now 0.05 s).
_ESCAPED = re.compile(r"(?=[%&\\\ue000])(?:(?P<run>(?:%[0-9a-fA-F]{2}){16,}|(?:\\u[0-9a-fA-F]{4}){16,})|" + _ONE + ")")
BACKSLASH = "\ue000"  # a backslash read from an escape (a private use character)
QUOTE = "\ue001"  # a double quote read from an escape (`%22`, `&quot;`), as BACKSLASH is
_ESCAPE_MARK = re.compile(r"[%&\ue000]|\\[ux]")  # what an escape starts with (BACKSLASH too)
_LEVELS = 4  # an escape, escaped again up to three times (out-179 F3: `%25252573` passed)

# What an escape is read as (by its code): printable ASCII, an invisible control (read as nothing
# by seen, once the level is read); a backslash as BACKSLASH, a double quote as QUOTE.
_READABLE = {i: chr(i) for i in range(128) if (chr(i).isprintable() and chr(i) != '"') or _INVISIBLE.match(chr(i))} | {
    0x5C: BACKSLASH,
    0x22: QUOTE,
}


def _readable(code: int) -> str | None:
    """The character an escape of `code` is read as: printable ASCII (a backslash as BACKSLASH,
    a quote as QUOTE: _READABLE), a printable or invisible character beyond ASCII; None for any other."""
    if code < 128:
        return _READABLE.get(code)
    if code > 0x10FFFF:
        return None
    char = chr(code)
    return char if char.isprintable() or _INVISIBLE.match(char) else None


def _unescape_key_chars(match: re.Match[str]) -> str:
    """An escape of a printable or invisible character, as that character (a backslash as
    BACKSLASH, a quote as QUOTE: decoded, `\\u0022` would change what a JSON text means); other
    escapes are left alone."""
    if match.lastgroup == "run":
        return _read_run(match.group(0))
    if named := match.group("named"):
        return {"bsol": BACKSLASH, "quot": QUOTE}.get(named) or html.entities.html5[named + ";"]
    if utf8 := match.group("utf8"):
        try:
            read = bytes.fromhex(_NOT_HEX.sub("", utf8.replace("x", ""))).decode("utf-8")
        except UnicodeDecodeError:  # an overlong form, a surrogate: no character
            return utf8
        return read if read.isprintable() or _INVISIBLE.match(read) else utf8
    if percent := match.group("p"):  # a byte: ASCII alone is a character by itself
        return _READABLE.get(int(percent, 16), match.group(0))
    if high := match.group("hi"):
        pair = 0x10000 + ((int(high, 16) - 0xD800) << 10) + int(match.group("lo"), 16) - 0xDC00
        return _readable(pair) or match.group(0)
    # `\xe9` alone is Python's escape of a character (in a string's repr), not of a byte.
    hex_digits = match.group("u") or match.group("pu") or match.group("hex") or match.group("x")
    return _readable(int(hex_digits, 16) if hex_digits else int(match.group("dec"))) or match.group(0)


def _spellings(digits: str) -> set[str]:
    """`digits` (hex) in every mix of cases: `4a`, `4A`."""
    return {"".join(case) for case in itertools.product(*({d.lower(), d.upper()} for d in digits))}


# A run of URL or JSON escapes is read by a lookup an escape (no call a match): a hostile 4 MB
# body of `%41` took ~1 s of the event loop a reading, and a run overshot its deadline by
# seconds (out-178 F5). The characters read are _unescape_key_chars's (_READABLE); other escapes
# stay as they were written.
_PERCENT_READ = {s: c for code, c in _READABLE.items() for s in _spellings(f"{code:02x}")}
_JSON_READ = {s: c for code, c in _READABLE.items() for s in _spellings(f"{code:04x}")}


_ONE_ESCAPE = re.compile(_ONE)
_BEYOND_ASCII = re.compile("%[89a-fA-F]")
_SURROGATE = re.compile("u[dD][89a-fA-F]")
_NOT_HEX = re.compile("[^0-9a-fA-F]")


def _read_run(run: str) -> str:
    if run[0] == "%":
        if _BEYOND_ASCII.search(run):  # UTF-8 of characters beyond ASCII: read escape by escape
            return _ONE_ESCAPE.sub(_unescape_key_chars, run)
        return "".join(
            _PERCENT_READ.get(code) or "%" + code for code in (run[i + 1 : i + 3] for i in range(0, len(run), 3))
        )
    if _SURROGATE.search(run):  # a pair of them is one character: read escape by escape
        return _ONE_ESCAPE.sub(_unescape_key_chars, run)
    return "".join(
        _JSON_READ.get(code) or _readable(int(code, 16)) or "\\u" + code
        for code in (run[i + 2 : i + 6] for i in range(0, len(run), 6))
    )


# The same escapes, found by split: the text between them and the escapes themselves, in turn.
ESCAPE = re.sub(r"\(\?P<\w+>", "(?:", _ESCAPED.pattern)  # an escape as the reader finds it, no groups
_ESCAPES_SPLIT = re.compile("(" + ESCAPE + ")")


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


def _tag_read(match: re.Match[str]) -> str:
    return "".join(chr(ord(tag) - 0xE0000) for tag in match[0])


def seen(text: str) -> str:
    """`text` as a reader sees it: its compatibility forms as NFKC reads them, its tags as the
    ASCII they spell, its invisible characters as nothing."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
        if _TAGS.search(text):
            text = _TAGS.sub(_tag_read, text)
    elif text.isprintable():  # 5x faster than a search, and true of most texts
        return text
    # Not by isprintable alone beyond ASCII: a variation selector or a Hangul filler is printable.
    return _INVISIBLE.sub("", text) if _INVISIBLE.search(text) else text


def unescaped(text: str) -> str:
    """`text` with every escape of a key's characters read, and seen as a reader sees it (seen):
    the same text where there is nothing to read."""
    if not (text.isascii() and text.isprintable()):  # most texts: no call (a string a reply field)
        text = seen(text)
    for _ in range(_LEVELS):
        if not _ESCAPE_MARK.search(text):  # one search, not one a mark (~5x faster)
            break
        read = _read_escapes(text)
        if read == text:
            break
        # What an escape wrote may be a compatibility form (`\uff53`, `&#65363;`: a full-width
        # `s`; out-182), a tag or an invisible character (`\u200b`): seen at each level too.
        text = seen(read)
    return text
