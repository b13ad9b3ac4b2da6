"""The composed YAML graph of a job file, measured before anything is built (`graph_problems`).

Aliases share nodes and `<<` merges splice mappings into others, so what a job file builds can
be far deeper, larger or stranger than its text: the checks here follow both without expanding
anything, and refuse at its line whatever the loader would build that a run cannot use.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from ._exceptions import Problem
from ._formats import short
from ._limits import MAX_DEPTH
from ._scrub import hide_keys

MAX_JOB_BYTES = 4 << 20
MAX_NODES = 200_000  # with aliases expanded; a real job is a few thousand
MAX_EXPANDED_CHARS = 4 * MAX_JOB_BYTES  # text once aliases are expanded
MAX_NUMBER_CHARS = 100  # no number a job uses is longer (a 64-bit integer is 20 digits)
# Each counts: 28,000 inline `vars` rows of three variables (a mapping, 3 keys, 3 values) are too many.
BIG_DATA_HINT = "keys, values, lists and mappings each count; a large table belongs in a dataset file, `dataset:`"
MAX_MERGE_CHAIN = 256  # mappings merging mappings that merge...: the data stays flat


def problem_at(mark: Any, file: str, message: str) -> Problem:
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
    return Problem(file, line, column, "", message)


_STR, MERGE = "tag:yaml.org,2002:str", "tag:yaml.org,2002:merge"
Pairs = list[tuple[yaml.Node, yaml.Node]]
_NUMBERS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
# What YAML builds that JSON cannot carry (orjson refused them mid-run: break17 F2).
# !!omap and !!pairs build lists of tuples, which every check of the values walked past: a
# 24-digit int in one was an orjson traceback in plan and run (verify20 V5).
_NOT_JSON = {
    "tag:yaml.org,2002:binary": "binary data (!!binary)",
    "tag:yaml.org,2002:set": "a set (!!set)",
    "tag:yaml.org,2002:omap": "an ordered map (!!omap)",
    "tag:yaml.org,2002:pairs": "a list of pairs (!!pairs)",
}
_READS_AS = {
    "tag:yaml.org,2002:bool": "true or false",
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:int": "a number",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:timestamp": "a date",
}


class _Refused(Exception):
    def __init__(self, node: yaml.Node, message: str) -> None:
        super().__init__(message)
        self.node = node
        self.message = message


def graph_problems(root: yaml.Node, file: str) -> list[Problem]:
    """The composed nodes, aliases followed: what the loader would build that batchrun cannot
    use, before it is built.

    Aliases share nodes, so a graph is measured once per node, never expanded (a billion-laughs
    file stays cheap); the walk's recursion stops at MAX_DEPTH. Refused: a self-containing alias;
    nesting past MAX_DEPTH through aliases (each anchor 50 deep, aliasing the one before: the
    event stream never went past 64, the data went to thousands, and the loader or orjson died
    of recursion, break17 F1); more than MAX_NODES values or MAX_EXPANDED_CHARS of text once
    expanded (400 aliases of a 1 MB string took 857 MB, F10); a number too long to mean anything
    (PyYAML's int of "1:1:1..." is quadratic: 60 s for 800 KB, F6; long hex ints broke
    jsonschema's messages, F18); keys that are not text (a number, a date, `yes`, `on`: JSON
    keys are text, and they crashed the fingerprint and orjson, F3 F19); binary data and sets."""
    measured: dict[int, tuple[int, int, int]] = {}  # node -> (levels, values, characters), expanded
    in_progress: set[int] = set()
    # Keys that are not text are each said, and the walk goes on: one stopped validate at the
    # first, hiding the others (out-135 F7). What else is refused ends the walk: it may be huge.
    keys: list[yaml.Node] = []

    def measure(node: yaml.Node, depth: int) -> tuple[int, int, int]:
        known = measured.get(id(node))
        if known is not None:
            if depth + known[0] > MAX_DEPTH:
                raise _Refused(node, f"nested deeper than {MAX_DEPTH} levels once aliases are expanded")
            return known
        if id(node) in in_progress:
            raise _Refused(node, "an alias that contains itself")
        if node.tag in _NOT_JSON:
            hint = ": write a mapping" if node.tag.endswith(("omap", "pairs")) else ""
            raise _Refused(node, f"{_NOT_JSON[node.tag]} cannot be sent as JSON{hint}")
        if isinstance(node, yaml.ScalarNode):
            if node.tag in _NUMBERS and len(node.value) > MAX_NUMBER_CHARS:
                raise _Refused(node, f"a number of {len(node.value):,} characters: quote it to use it as text")
            if node.tag in _READS_AS and not _readable(node):
                kind = _READS_AS[node.tag]
                text = hide_keys(node.value)[:40]
                raise _Refused(node, f"{text!r} reads as {kind} in YAML but is not one: quote it to use it as text")
            result = (0, 1, len(node.value))
        else:
            if depth >= MAX_DEPTH:
                raise _Refused(node, f"nested deeper than {MAX_DEPTH} levels once aliases are expanded")
            in_progress.add(id(node))
            children: list[yaml.Node] = []
            if isinstance(node, yaml.MappingNode):
                own, merged = mapping_pairs(node)
                # Token ids and text may share a mapping: the loader makes every key text, so
                # they compare and sort (verify20 V10: `{8: x, checks: [...]}` was refused inline).
                for key, value in own + merged:  # `<<` merges counted where they land
                    if not isinstance(key, yaml.ScalarNode) or not (key.tag == _STR or _numbered(key)):
                        keys.append(key)
                    children += (key, value)
            else:
                children = list(node.value)
            levels, values, characters = 0, 1, 0
            keyed = isinstance(node, yaml.MappingNode)  # children: key, value, key, value...
            for index, child in enumerate(children):
                # A node met again is an alias: what it brings is refused where the alias is
                # written (its key, or its list), not at the anchor, which may be shallow (verify17 V7).
                at: yaml.Node = (
                    child if id(child) not in measured else children[index - 1] if keyed and index % 2 else node
                )
                try:
                    child_levels, child_values, child_characters = measure(child, depth + 1)
                except _Refused as refused:
                    raise _Refused(at, refused.message) if refused.node is child else refused from None
                levels = max(levels, child_levels)
                values += child_values
                characters += child_characters
                if values > MAX_NODES:
                    raise _Refused(at, f"more than {MAX_NODES:,} values once aliases are expanded ({BIG_DATA_HINT})")
                if characters > MAX_EXPANDED_CHARS:
                    raise _Refused(at, f"more than {MAX_EXPANDED_CHARS:,} characters once aliases are expanded")
            in_progress.discard(id(node))
            result = (levels + 1, values, characters)
        measured[id(node)] = result
        return result

    try:
        measure(root, 0)
    except _Refused as refused:
        return [problem_at(refused.node.start_mark, file, refused.message)]
    said = {id(key): key for key in keys}.values()  # a key met again through an alias, once
    return [problem_at(key.start_mark, file, _key_message(key)) for key in said]


# A token id as a key (`logit_bias: {50256: -100}`): sent as the text "50256", as JSON keys are.
# Not with a leading zero: YAML reads 010 as octal 8 (verify17 V4).
_TOKEN_ID = re.compile(r"0|[1-9][0-9]{0,17}")
_CONSTRUCTOR = SafeConstructor()


def _readable(node: yaml.ScalarNode) -> bool:
    """Whether a scalar's tag can build it: an explicit `!!bool maybe`, `!!int ''` or a date like
    2020-13-45 failed inside PyYAML's constructors (KeyError, IndexError, ValueError: a traceback
    or a message with no line, verify17 V5, V6, break17 F4)."""
    try:
        _CONSTRUCTOR.yaml_constructors[node.tag](_CONSTRUCTOR, node)
    except Exception:  # noqa: BLE001 - any failure of a third-party constructor on untrusted text
        return False
    return True


def merge_sources(value: yaml.Node) -> list[yaml.Node]:
    """What a `<<` key's value merges: a mapping, or each of a sequence's."""
    return list(value.value) if isinstance(value, yaml.SequenceNode) else [value]


def mapping_pairs(node: yaml.MappingNode) -> tuple[Pairs, Pairs]:
    """(the pairs written in `node`, the pairs its `<<` merges bring, in the order YAML gives
    them precedence: a merged mapping's own keys before what it merges, earlier merges before
    later ones); merges of merges are followed, a merge that contains itself is refused.

    Bounded: merging the same mapping twice at every level doubled the work per level (24
    levels in 558 bytes took 53 s and 1.6 GB, verify17b W3), so at most MAX_NODES pairs and
    merges are taken, and chains of merges stop at MAX_MERGE_CHAIN."""
    own: Pairs = []
    merged: Pairs = []
    steps = 0

    def take(mapping: yaml.MappingNode, into: Pairs, merging: tuple[int, ...]) -> None:
        nonlocal steps
        if len(merging) > MAX_MERGE_CHAIN:
            raise _Refused(node, f"a chain of more than {MAX_MERGE_CHAIN} merges")
        sources: list[yaml.Node] = []
        for key, value in mapping.value:
            if key.tag == MERGE:
                sources += merge_sources(value)
            else:
                into.append((key, value))
        steps += len(mapping.value)
        for source in sources:
            if id(source) in merging:
                raise _Refused(source, "a merge that contains itself")
            steps += 1
            if steps > MAX_NODES:
                raise _Refused(node, f"more than {MAX_NODES:,} values once merges are expanded")
            if isinstance(source, yaml.MappingNode):  # anything else: the loader refuses it
                take(source, merged, (*merging, id(source)))

    take(node, own, (id(node),))
    return own, merged


def _numbered(key: yaml.Node) -> bool:
    return key.tag == _NUMBERS[0] and _TOKEN_ID.fullmatch(key.value) is not None


def _key_message(key: yaml.Node) -> str:
    if not isinstance(key, yaml.ScalarNode):
        return "a key must be text, not a list or a mapping"
    text = short(hide_keys(key.value), 40)
    reads_as = _READS_AS.get(key.tag, "something other than text")
    return f"the key {text!r} reads as {reads_as} in YAML: quote it (keys are text)"
