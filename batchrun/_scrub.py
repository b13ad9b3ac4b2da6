"""Scrubbing secrets out of whatever a server sends back.

A server (or a proxy in front of it) may echo the request, the Authorization header
included, into any field of a reply or an error text. Every string that crosses the
client's boundary goes through `Scrubber` first, before it is cut to any length: a key
cut in two by a truncation would otherwise survive as a long fragment. Any run of
`FRAGMENT` or more of a key's characters counts as the key.
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import ahocorasick_rs

from ._escapes import ASCII_INVISIBLE, BACKSLASH, QUOTE, SPACES, seen, unescaped
from ._narrowing import MASK, NARROWING_READS, narrowed

FRAGMENT = 16  # a fragment this long of a 64-hex-digit key still narrows a search a lot
MAX_DEPTH = 32
# A "key" shorter than this is a test placeholder, not a credential: masking every "k"
# in an answer would only destroy it (real OpenRouter keys are 73 characters).
MIN_SECRET = 8
_BREAKS = "'<>"  # with spaces and double quotes, what ends a word; but those a secret holds
# The JSON escapes a body's strings may read as a key's characters by (a backslash, a form feed:
# nothing; `\\/`: a base64 form's `/`), and Python's `\\x` (_escapes).
_KEY_ESCAPES = re.compile(rb"\\[ubfx/]")


@functools.lru_cache(maxsize=8)
def _marked_word(breaks: str) -> re.Pattern[str]:
    """A word (between spaces, double quotes and `breaks`) with an escape mark, a control (read
    as nothing: _escapes.INVISIBLE) or a character beyond ASCII in it: from a word's start only,
    its other characters taken possessively, so a word without one is passed over in a single
    step."""
    ends = SPACES + '"' + re.escape(breaks)
    marks = f"%&\\\\{ASCII_INVISIBLE}\\x80-\\U0010ffff"
    return re.compile(f"(?<![^{ends}])[^{ends}{marks}]*+(?![{SPACES}])[{marks}][^{ends}]*")


# Text that looks like an OpenRouter key, in what a job file or a dataset holds: never repeated
# in a message about them (break17 F20), whichever check wrote the message (break20 F7).
# A key's label ("sk-or-v1-0e6...1c96", as OpenRouter shows a key: a few characters of each end)
# is not: hidden on stderr only, the same per-run key read two ways on the two streams (verify64).
# Only where a word begins: "risk-or-reward", "desk-or-tablet" and a folder "task-or-project"
# were refused, or hidden in every message, as keys (break65 F5). A key's own shape (`sk-or-v1-`
# and hex) counts wherever it stands: after `%3D` in an encoded URL it passed (verify67 F5).
KEY_LIKE = re.compile(
    r"(?<![A-Za-z0-9])sk-or-(?!v1-[A-Za-z0-9]{1,8}\.\.\.[A-Za-z0-9]{1,8}(?![A-Za-z0-9_-]))[A-Za-z0-9_-]{6,}"
    r"|sk-or-v1-[0-9a-fA-F]{32,}"
)


def hide_keys(text: str) -> str:
    return KEY_LIKE.sub("sk-or-...(hidden)", text)


class Scrubber:
    """Masks every secret it was given, and every fragment of FRAGMENT+ characters of one."""

    def __init__(self, *secrets: str | None) -> None:
        self._secrets: list[str] = []
        self._grams: frozenset[str] = frozenset()
        self._anchors: frozenset[str] = frozenset()
        self._search = _Search.of(frozenset(), frozenset())
        self._marked_word = _marked_word(_BREAKS)
        self._spaced: tuple[re.Pattern[str], ...] = ()  # secrets with spaces, however spaced (_spaced)
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        if not secret or len(secret) < MIN_SECRET:
            return
        forms, grams, anchors = _prepared(secret)
        self._secrets += [form for form in forms if form not in self._secrets]
        if (spaced := _spaced(secret)) is not None and spaced not in self._spaced:
            self._spaced += (spaced,)
        # A secret that holds `<` (a password) split at it, its escaped half masked, the rest shown
        # (out-182 F5: `Tr0ub4dor<[key]>2024`): what it holds ends no word.
        self._marked_word = _marked_word("".join(c for c in _BREAKS if not any(c in s for s in self._secrets)))
        if not (grams <= self._grams and anchors <= self._anchors):
            self._grams, self._anchors = self._grams | grams, self._anchors | anchors
            self._search = _Search.of(self._grams, self._anchors)  # one assignment: a reader sees old or new

    def for_body(self, body: bytes) -> Scrubber:
        """This scrubber, or one that masks nothing when no string decoded from `body` (a
        JSON reply, read and decompressed) can hold a key: the body holds none of the
        anchors and no \\u, \\/, \\b or \\f escape (nor Python's `\\x`), nor, with escapes read
        (and NFKC), any anchor. A JSON string's other escapes decode to spaces, which a key does
        not hold, so they cannot join two pieces into a key (a base64 form holds `/`, which JSON may write `\\/`; a
        backspace and a form feed are read as nothing, _escapes.INVISIBLE). Walking
        every string of a clean reply was a tenth of the client's own CPU per request
        (bench/throughput.py). A body with a NUL byte is UTF-16 or UTF-32 JSON, which Python's
        json reads (a UTF-8 JSON text holds no raw NUL): its bytes say nothing of its text, so
        it is scrubbed string by string (out-180 F1: a key echoed in UTF-16 reached the cache)."""
        search = self._search
        # A backslash looked for alone first: one byte is found ~8x faster than two, and most
        # bodies hold none; then the escapes by one search (five `in` took 4.7 us a record line).
        if (b"\\" in body and _KEY_ESCAPES.search(body)) or b"\x00" in body or search.anchored_bytes(body):
            return self
        # A DEL, which JSON leaves raw, is read as nothing: between a key's characters, it hides it.
        escaped = b"%" in body or b"&" in body or b"\x7f" in body or not body.isascii()
        if self._spaced:  # decoded once for all of them
            text = body.decode("utf-8", "replace")
            if any(spaced.search(text) for spaced in self._spaced):
                return self
        return self if escaped and search.anchored(unescaped(body.decode("utf-8", "replace"))) else _NOTHING

    def line(self, data: bytes) -> bytes:
        """A UTF-8 JSON line (a record as written) with every secret in it masked: the last
        net under what each reply's fields had scrubbed (out-109 F1: an error message quoted an
        echoed header, cut but not scrubbed, into the results). Masking leaves JSON valid: a key
        holds no quote nor backslash."""
        if self.for_body(data) is not self:
            return data
        text = data.decode("utf-8", "surrogatepass")
        scrubbed = self.text(text)
        return data if scrubbed == text else scrubbed.encode("utf-8", "surrogatepass")

    def holds(self, data: bytes) -> bool:
        """Whether `data` (UTF-8 JSON, as a request is sent) holds a secret or a fragment of one."""
        if self.for_body(data) is not self:
            return False
        text = data.decode("utf-8", "replace")
        return self.text(text) != text

    def text(self, text: str) -> str:
        if not self._secrets:
            return text
        scrubbed = self._plain(text)
        plain = unescaped(scrubbed)
        if plain != scrubbed:
            # The same text with escaped key characters written plainly: when that shows a key,
            # the words that show it are masked, the rest kept as written (out-179 F1: the whole
            # text was kept decoded, `c=%26` became `c=&`); where only the whole text shows it (a
            # key across words: a secret with a space), every word that reads as anything but
            # itself; the plain form, masked, only where that too shows one. The plain form reads
            # a page's own `&lt;` as `<`: kept out of a page while any other way masks the key.
            masked = self._plain(plain)
            if masked != plain:
                # A backslash or a quote read from an escape stays escaped: raw, it would change a JSON text.
                fallback = masked.replace(BACKSLASH, "%5C").replace(QUOTE, "%22")
                return self._mask_words(scrubbed) or self._mask_words(scrubbed, every=True) or fallback
        return scrubbed

    def _mask_words(self, text: str, every: bool = False) -> str | None:
        """`text` with each word (between spaces, quotes and angle brackets, which no escaped
        key holds) whose escapes show a key masked whole, or with `every` each that reads as
        anything but itself; None if the words so masked still show one. Only a word with an
        escape mark in it, or a character beyond ASCII, can read as anything but itself: the
        others are passed over by the pattern, not read one by one (out-180 F2: 800,000 words
        read a call each, 2.6 s of the loop per 4 MB)."""
        out, cursor, budget = [], 0, [NARROWING_READS]
        for found in self._marked_word.finditer(text):
            if (plain := unescaped(word := found[0])) != word and (every or self._plain(plain) != plain):
                # Its trailing backslashes kept: in a JSON line they escape the quote after it.
                whole = MASK + word[len(word.rstrip("\\")) :]
                out += [text[cursor : found.start()], whole if every else narrowed(word, whole, budget, self._plain)]
                cursor = found.end()
        masked = "".join(out) + text[cursor:] if out else text
        plain = unescaped(masked)
        return masked if self._plain(plain) == plain else None

    def _plain(self, text: str) -> str:
        # Every form of a secret holds one of its anchors whole: a text with none holds no form
        # and no fragment, and is passed over without a search for each form (~14 a key).
        for spaced in self._spaced:  # before the anchors: spaced otherwise, it may hold none
            text = spaced.sub(MASK, text)
        search = self._search
        if len(text) < MIN_SECRET or not search.anchored(text):
            return text
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        spans = search.fragments(text) if len(text) >= FRAGMENT else []
        if not spans:
            return text
        # Overlapping grams of one fragment merge into one span, masked once.
        out, cursor, merged_start, merged_end = [], 0, spans[0][0], spans[0][1]
        for start, end in spans[1:]:
            if start <= merged_end:
                merged_end = max(merged_end, end)
                continue
            out += [text[cursor:merged_start], MASK]
            cursor, merged_start, merged_end = merged_end, start, end
        out += [text[cursor:merged_start], MASK, text[merged_end:]]
        return "".join(out)

    def value(self, value: Any, depth: int = 0) -> Any:
        """A JSON value with every string in it (object keys too) scrubbed; what is nested
        deeper than MAX_DEPTH is dropped (None), so no reply can exhaust the stack."""
        if isinstance(value, str):
            return self.text(value)
        if depth >= MAX_DEPTH and isinstance(value, (list, dict)):
            return None
        if isinstance(value, list):
            return [self.value(item, depth + 1) for item in value]
        if isinstance(value, dict):
            return {self.text(str(k)): self.value(v, depth + 1) for k, v in value.items()}
        return value


def _as_sent(word: str) -> bytes:
    """`word` as its UTF-8 bytes, as a body is searched: a value read from the environment keeps
    the bytes that are not UTF-8 as surrogates (a key variable holding one crashed every
    command: the bytes search was built with strict UTF-8)."""
    try:
        return word.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that escapes no byte
        return _utf8(word)


def _utf8(text: str) -> bytes:
    """`text` as the bytes a search reads (a lone surrogate, as a reply's `\\ud800` decodes, kept):
    a word is in a text exactly where its bytes so written are in the text's (UTF-8 marks where
    each character starts)."""
    return text.encode("utf-8", "surrogatepass")


def _automaton(words: Iterable[bytes], fastest: bool = False) -> ahocorasick_rs.BytesAhoCorasick:
    """Aho-Corasick over `words`: every occurrence in one pass, whatever their number.
    `fastest`: as a DFA, ~2 ns a byte, for the anchors every body and record is searched for
    (pyahocorasick took ~7 ns a character, three passes a request: ~10% of a run's CPU). A DFA of
    two keys' grams takes ~7 ms to build, a command's start-up more: those are sought only in a
    text that holds an anchor, by the library's own choice of automaton (~0.3 ms to build)."""
    implementation = ahocorasick_rs.Implementation.DFA if fastest else None
    return ahocorasick_rs.BytesAhoCorasick(list(words), implementation=implementation)


@dataclass(frozen=True)
class _Search:
    """A scrubber's searches: whether a text (or a body's bytes) holds an anchor, and where it
    holds its grams. Built once a process for each set of secrets (~1 ms for two keys)."""

    anchors: ahocorasick_rs.BytesAhoCorasick | None
    anchors_sent: ahocorasick_rs.BytesAhoCorasick | None
    grams: ahocorasick_rs.BytesAhoCorasick | None
    gram_sizes: tuple[int, ...] = ()  # each gram's length in characters, by its index

    @staticmethod
    @functools.lru_cache(maxsize=16)
    def of(grams: frozenset[str], anchors: frozenset[str]) -> _Search:
        if not anchors:
            return _Search(None, None, None)
        ordered = sorted(grams)
        return _Search(
            _automaton(map(_utf8, anchors), fastest=True),
            _automaton(map(_as_sent, anchors), fastest=True),
            _automaton(map(_utf8, ordered)),
            tuple(map(len, ordered)),
        )

    def anchored(self, text: str) -> bool:
        return self.anchors is not None and bool(self.anchors.find_matches_as_indexes(_utf8(_ascii_lower(text))))

    def anchored_bytes(self, body: bytes) -> bool:
        # bytes.lower: A-Z only, as _ascii_lower.
        return self.anchors_sent is not None and bool(self.anchors_sent.find_matches_as_indexes(body.lower()))

    def fragments(self, text: str) -> list[tuple[int, int]]:
        """The spans of `text` that are a gram, in order of their ends (so of their starts)."""
        if self.grams is None:
            return []
        lowered = _ascii_lower(text)
        found = self.grams.find_matches_as_indexes(_utf8(lowered), overlapping=True)
        if lowered.isascii():
            return [(start, end) for _, start, end in found]
        # Byte offsets made character offsets, reading the text once from match to match (in
        # order of their starts: grams of a key that is not ASCII differ in length in bytes).
        encoded, spans, at_byte, at_char = _utf8(lowered), [], 0, 0
        for index, start, _ in sorted(found, key=lambda match: match[1]):
            at_char += len(encoded[at_byte:start].decode("utf-8", "surrogatepass"))
            at_byte = start
            spans.append((at_char, at_char + self.gram_sizes[index]))
        return spans


_NOTHING = Scrubber()  # for texts that cannot hold a key


@functools.lru_cache(maxsize=64)
def _prepared(secret: str) -> tuple[tuple[str, ...], frozenset[str], frozenset[str]]:
    """What masking `secret` takes: its forms, their FRAGMENT-long runs, and their anchors. Worked
    out once a process: a run builds a scrubber of the environment's keys in several places (its
    console, its pre-flight, its job's messages), ~0.3 ms each for two keys."""
    # An echo may change the key's case (a proxy upper-casing a header: break-14b m3); the
    # upper- and lower-case forms are masked too, at no cost to the scan. So are its forms
    # one step from it: reversed, and base64 (standard and URL-safe) at each of the three
    # alignments a text before it may give, less the edges that depend on its neighbours
    # (out-110 F7: a server echoing the key so reached results, pages and JUnit files).
    # Its bytes in hex too, as a server's debugging echo may show them (out-125 F3).
    raw = secret.encode("utf-8", "surrogatepass")
    forms = [secret, secret.upper(), secret.lower(), secret[::-1], raw.hex(), raw.hex().upper()]
    for skip in range(3):
        encoded = base64.b64encode(raw[skip:]).decode().rstrip("=")[:-3]
        forms += [encoded, encoded.replace("+", "-").replace("/", "_")]
    # A secret holding a quote or a backslash (a password) as JSON writes it (`\"`: tool-call
    # arguments, a grader's verdict, a record; out-183 F5), and as its escapes read (QUOTE,
    # BACKSLASH); and as a reader sees it (seen: a ligature, an invisible character).
    # So written again, up to three levels deep (a verdict's JSON in a record's line).
    for ascii in (True, False):
        written = secret
        for _ in range(3):
            written = json.dumps(written, ensure_ascii=ascii)[1:-1]
            forms.append(written)
    forms += [seen(secret), secret.replace("\\", BACKSLASH).replace('"', QUOTE)]
    kept = tuple(form for form in dict.fromkeys(forms) if len(form) >= MIN_SECRET)
    # Grams and anchors are sought in ASCII lower case (_ascii_lower): a form in any mix of
    # cases, reversed and upper-cased too, is found (out-178 F1: `FEDCBA...-1V-RO-KS` and
    # `sK-Or-v1-...AbCdEf` passed whole).
    grams = {_ascii_lower(gram) for form in kept for gram in _grams(form)}
    # Any FRAGMENT-long run of a form holds one of these aligned half-length blocks whole, so a
    # text holding none of them holds no fragment: one cheap test per string.
    half = FRAGMENT // 2
    anchors = {_ascii_lower(form[i : i + half]) for form in kept for i in range(0, len(form) - half + 1, half)}
    return kept, frozenset(grams), frozenset(anchors)


# What an echo may put between a secret's words: any run of spaces, line ends, tabs (raw or as
# JSON writes them, once or again), no-break spaces (raw or escaped), a URL's `%20` or `+`, HTML's `<br>`.
_SPACING = (
    r"(?:\s|\\+[ntr]|&nbsp;|&#0*(?:160|32);|&#[xX]0*[aA2]0;|\\+u00[aA2]0|%[uU]00[aA2]0|%[cC]2%[aA]0|%20|\+|<br\s*/?>)+"
)


@functools.lru_cache(maxsize=64)
def _spaced(secret: str) -> re.Pattern[str] | None:
    """A secret with spaces (a passphrase), its words however spaced: echoed word-wrapped, with
    a tab, a no-break space or `+` between its words, it was shown whole (out-183 F6)."""
    words = secret.split()
    return re.compile(_SPACING.join(map(re.escape, words)), re.IGNORECASE) if len(words) > 1 else None


_JSON_TOKEN = re.compile(r"\\u[0-9a-fA-F]{4}|\\.|.", re.DOTALL)


def _grams(form: str) -> list[str]:
    """`form`'s FRAGMENT-long runs; of a form with a backslash (as JSON writes a quote), those
    that neither start nor end inside an escape: masked, a run cut from its escape's backslash
    would leave a JSON text broken (`\\[key]`)."""
    if "\\" not in form:
        return [form[i : i + FRAGMENT] for i in range(len(form) - FRAGMENT + 1)]
    bounds = set(itertools.accumulate((len(token) for token in _JSON_TOKEN.findall(form)), initial=0))
    return [form[i : i + FRAGMENT] for i in sorted(bounds) if i + FRAGMENT in bounds]


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _ascii_lower(text: str) -> str:
    """`text` with A-Z in lower case, and nothing else changed: its length (so every position
    in it) is the text's, which str.lower does not keep for every character ("İ")."""
    return text.lower() if text.isascii() else text.translate(_ASCII_LOWER)


SECRET_VARIABLES = ("OPENROUTER_API_KEY", "OPENROUTER_MANAGEMENT_KEY")
# Other variables that hold a secret by their name: a job's own `api_key_env` (not known to a
# reader such as `report`, which showed that key whole: verify23 N8), a CI's tokens.
# Plurals, a numbered second one and CI's usual other names too (out-183 F10: API_KEYS, MY_TOKEN_2,
# DB_PASSWD, GH_PAT, SECRET_KEY_BASE passed); not PWD, the working folder.
_SECRET_NAME = re.compile(
    r"(?:^|_)(?:API_?KEYS?|KEYS?|TOKENS?|SECRETS?|PASSWORDS?|PASSWD|PASSPHRASE|PAT|CREDENTIALS?)(?:_\d+)?$"
    r"|^SECRET_",
    re.IGNORECASE,
)


def environment_scrubber(*variables: str) -> Scrubber:
    """The keys the environment holds: whatever the CLI prints, and every page or report file
    it writes, is scrubbed of them last, so a path, a message, a reason or a row that carries
    a key (decoded, joined, from anywhere) reaches neither a terminal, a CI log nor an artifact.
    `variables`: others that hold a key whatever their name (a job's `api_key_env`: LLM_CRED)."""
    return Scrubber(*environment_keys(*variables))


def environment_keys(*variables: str) -> list[str | None]:
    """The values environment_scrubber masks."""
    named = [value for name, value in os.environ.items() if _SECRET_NAME.search(name) and len(value) >= 16]
    return [*(os.environ.get(name) for name in (*SECRET_VARIABLES, *variables)), *named]
