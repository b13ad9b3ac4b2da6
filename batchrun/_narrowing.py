"""Masking only the part of a word that shows a secret.

A word (text between spaces) whose escapes read as a key was masked whole: a URL's other
parameters, the tag around a key, a whole answer in a script written without spaces became
`[key]` (out-183 F7). `narrowed` finds the runs of the word that read as a key, by halving, and
masks those alone.
"""

from __future__ import annotations

import itertools
import re
import string
from collections.abc import Callable, Sequence

from ._escapes import BACKSLASH, ESCAPE, unescaped

MASK = "[key]"
NARROWING_READS = 2_000_000  # characters a text may read to narrow its words (then: masked whole)
# What a word is cut into: an escape as the reader reads it, one of JSON's, a character. A mask
# never cuts an escape from its backslash, so a JSON line stays valid.
_TOKEN = re.compile(ESCAPE + r'|\\["\\/bfnrt]|.', re.DOTALL)
# An escape escaped again (`%25C3%25A4`, `&amp;#60;`) is read only whole: a key's run is moved
# out only to where one of these characters has a neighbour that is none of them.
_ESCAPE_CHARS = frozenset(string.ascii_letters + string.digits + "%&#;\\" + BACKSLASH)


def narrowed(word: str, whole: str, budget: list[int], plain: Callable[[str], str]) -> str:
    """`word` (one that shows a secret: `plain`, the scrubber's mask of a text, changes its
    reading) with only the runs of it that show one masked: each the shortest run of tokens
    whose reading shows one, widened over all that reads as the key with it. `whole` (the word
    masked whole) once `budget`, the characters a text may read, would be spent: a hostile text
    of many such words costs no more than a few of them."""

    def shows(start: int, stop: int) -> bool:
        read = unescaped(word[bounds[start] : bounds[stop]])
        return plain(read) != read

    def is_key(start: int, stop: int) -> bool:
        return plain(unescaped(word[bounds[start] : bounds[stop]])) == MASK

    cost = 4 * len(word) * len(word).bit_length()  # a run's four halvings, at most
    if budget[0] < cost:  # before the word is even cut into tokens
        return whole
    bounds = list(itertools.accumulate(map(len, _TOKEN.findall(word)), initial=0))
    clean = [i for i, at in enumerate(bounds) if not 0 < at < len(word) or _clean(word, at)]
    end, tail = len(bounds) - 1, list[str]()  # the part still to narrow is word[: bounds[end]]
    while True:
        budget[0] -= cost
        if budget[0] < 0:
            return whole if not tail else MASK + "".join(reversed(tail))
        # The latest start whose tail of the part shows one, and the earliest end from there.
        start = _latest(range(end), shows, end, starts=True)
        stop = _earliest(range(start + 1, end + 1), shows, start, starts=False)
        # Widened over all that reads as the key with it (a fragment of 16 is what shows it):
        # to clean bounds only, as a cut inside an escape escaped again reads as no key.
        start = _earliest([i for i in clean if i < start] + [start], is_key, stop, starts=True)
        stop = _latest([stop] + [i for i in clean if stop < i <= end], is_key, start, starts=False)
        # A run that ends where the last began is one (a key's grams overlap): masked once.
        kept = word[bounds[stop] : bounds[end]]
        tail.append(kept if tail and stop == end else MASK + kept)
        end = start
        if not end or not shows(0, end):
            # A key masked in the raw text and the rest of it shown by its escapes: one mask.
            return (word[: bounds[end]] + "".join(reversed(tail))).replace(MASK + MASK, MASK)


def _clean(word: str, at: int) -> bool:
    return word[at - 1] not in _ESCAPE_CHARS or word[at] not in _ESCAPE_CHARS


Span = Callable[[int, int], bool]


def _latest(bounds: Sequence[int], holds: Span, fixed: int, starts: bool) -> int:
    """The last of `bounds` (rising; the first assumed to hold) whose span holds, by halving:
    from it to `fixed` if it `starts` the span, else from `fixed` to it."""
    low, high = 0, len(bounds)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if holds(*((bounds[mid], fixed) if starts else (fixed, bounds[mid]))) else (low, mid)
    return bounds[low]


def _earliest(bounds: Sequence[int], holds: Span, fixed: int, starts: bool) -> int:
    """The first of `bounds` (rising; the last assumed to hold) whose span holds, by halving."""
    low, high = -1, len(bounds) - 1
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if holds(*((bounds[mid], fixed) if starts else (fixed, bounds[mid]))) else (mid, high)
    return bounds[high]
