"""Reading a job file without trusting it: bounded size, regular files only, bounded nesting
and alias expansion, and every YAML failure as a Problem with its position.

A job file can come from anyone (a pull request, a shared folder). Before these checks,
`validate` hung on a FIFO, read `/dev/zero` until memory ran out, raised a traceback on a
NUL byte (PyYAML's ReaderError comes from the loader's constructor) and on 5,000-deep
nesting (the composer recurses), and spent half a minute and 4 GB on a "billion laughs"
alias bomb. Nesting and the number of values are measured on the parser's event stream, which
is iterative, before anything recursive runs; then the composed node graph, where aliases are
shared, is measured with them followed (depth, values, characters) without being expanded, and
whatever the loader would build that JSON cannot carry is refused at its line (`graph_problem`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from ._exceptions import Problem
from ._files import read_bounded

MAX_JOB_BYTES = 4 << 20
MAX_DEPTH = 64
MAX_NODES = 200_000  # with aliases expanded; a real job is a few thousand
MAX_EXPANDED_CHARS = 4 * MAX_JOB_BYTES  # text once aliases are expanded
MAX_NUMBER_CHARS = 100  # no number a job uses is longer (a 64-bit integer is 20 digits)


# libyaml's parser when PyYAML has it (the wheels do): the pure-Python scanner is quadratic in
# flow nesting ("[[[[..."), and composes a job about eight times slower (7 ms for
# jobs/eval.yaml against 0.8 ms), which every run, plan and validate pays.
_LOADER: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_job_text(path: Path) -> tuple[str | None, list[Problem]]:
    file = str(path)
    try:
        data = read_bounded(path, MAX_JOB_BYTES)
    except FileNotFoundError:
        return None, [Problem(file, None, None, "", "no such job file")]
    except OSError as exc:
        return None, [Problem(file, None, None, "", f"cannot read job file: {exc.strerror or exc}")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _line_and_column(data[: exc.start].decode("utf-8", "replace"))
        return None, [Problem(file, line, column, "", f"not UTF-8 text ({exc.reason})")]
    if "\x00" in text:
        line, column = _line_and_column(text[: text.index("\x00")])
        return None, [Problem(file, line, column, "", "a NUL byte: not a YAML text file")]
    return text, []


def _mark(exc: yaml.YAMLError, text: str) -> tuple[int | None, int | None]:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return mark.line + 1, mark.column + 1
    # A ReaderError (a control character) has no mark; libyaml gives its offset in UTF-8 bytes.
    position = getattr(exc, "position", None)
    if not isinstance(position, int):
        return None, None
    return _line_and_column(text.encode("utf-8", "surrogatepass")[:position].decode("utf-8", "replace"))


# YAML's line breaks: a file written with CR alone or NEL counted as one line (verify17 V10).
_BREAKS = re.compile("\r\n|[\n\r\x85\u2028\u2029]")


def _line_and_column(before: str) -> tuple[int, int]:
    """Where the text that follows `before` starts."""
    lines = _BREAKS.split(before)
    return len(lines), len(lines[-1]) + 1


def _syntax_message(exc: yaml.MarkedYAMLError) -> str:
    """The problem, and the construct it was in with where that began: an unclosed quote or
    bracket is found at the end of the file, far from where it opened (break17 F17)."""
    message = f"YAML syntax error: {exc.problem or exc}"
    context, mark = exc.context, exc.context_mark
    if context and mark is not None and mark is not exc.problem_mark:
        message += f" ({context} at line {mark.line + 1}, column {mark.column + 1})"
    return message


def nesting_problem(text: str, file: str) -> Problem | None:
    """Nesting deeper than MAX_DEPTH, or more than MAX_NODES values, found on the event stream
    before anything recurses or builds a node (4 MB of one-character items composed to ~650 MB)."""
    depth = 0
    values = 0
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                return _problem_at(event.start_mark, file, f"nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
            continue
        if isinstance(event, yaml.NodeEvent):
            values += 1
            if values > MAX_NODES:
                return _problem_at(event.start_mark, file, f"more than {MAX_NODES:,} values")
    return None


def _problem_at(mark: Any, file: str, message: str) -> Problem:
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
    return Problem(file, line, column, "", message)


_STR, MERGE = "tag:yaml.org,2002:str", "tag:yaml.org,2002:merge"
Pairs = list[tuple[yaml.Node, yaml.Node]]
_NUMBERS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
# What YAML builds that JSON cannot carry (orjson refused them mid-run: break17 F2).
_NOT_JSON = {"tag:yaml.org,2002:binary": "binary data (!!binary)", "tag:yaml.org,2002:set": "a set (!!set)"}
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


def graph_problem(root: yaml.Node, file: str) -> Problem | None:
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

    def measure(node: yaml.Node, depth: int) -> tuple[int, int, int]:
        known = measured.get(id(node))
        if known is not None:
            if depth + known[0] > MAX_DEPTH:
                raise _Refused(node, f"nested deeper than {MAX_DEPTH} levels once aliases are expanded")
            return known
        if id(node) in in_progress:
            raise _Refused(node, "an alias that contains itself")
        if node.tag in _NOT_JSON:
            raise _Refused(node, f"{_NOT_JSON[node.tag]} cannot be sent as JSON")
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
                numbered = set()
                for key, value in own + merged:  # `<<` merges counted where they land
                    if not isinstance(key, yaml.ScalarNode) or not (key.tag == _STR or _numbered(key)):
                        raise _Refused(key, _key_message(key))
                    numbered.add(_numbered(key))
                    children += (key, value)
                if len(numbered) > 1:  # the fingerprint sorts a mapping's keys: 1 and "a" do not compare
                    raise _Refused(node, "a mapping mixes number keys and text keys: quote the numbers")
            else:
                children = list(node.value)
            levels, values, characters = 0, 1, 0
            for child in children:
                child_levels, child_values, child_characters = measure(child, depth + 1)
                levels = max(levels, child_levels)
                values += child_values
                characters += child_characters
                if values > MAX_NODES:
                    raise _Refused(child, f"more than {MAX_NODES:,} values once aliases are expanded")
                if characters > MAX_EXPANDED_CHARS:
                    raise _Refused(child, f"more than {MAX_EXPANDED_CHARS:,} characters once aliases are expanded")
            in_progress.discard(id(node))
            result = (levels + 1, values, characters)
        measured[id(node)] = result
        return result

    try:
        measure(root, 0)
    except _Refused as refused:
        return _problem_at(refused.node.start_mark, file, refused.message)
    return None


# A token id as a key (`logit_bias: {50256: -100}`): sent as the text "50256", as JSON keys are.
# Not with a leading zero: YAML reads 010 as octal 8 (verify17 V4).
_TOKEN_ID = re.compile(r"0|[1-9][0-9]{0,17}")
_CONSTRUCTOR = SafeConstructor()

# Text that looks like an OpenRouter key is never repeated in a message (break17 F20).
KEY_LIKE = re.compile(r"sk-or-[A-Za-z0-9_-]{6,}")


def hide_keys(text: str) -> str:
    return KEY_LIKE.sub("sk-or-...(hidden)", text)


def _readable(node: yaml.ScalarNode) -> bool:
    """Whether a scalar's tag can build it: an explicit `!!bool maybe`, `!!int ''` or a date like
    2020-13-45 failed inside PyYAML's constructors (KeyError, IndexError, ValueError: a traceback
    or a message with no line, verify17 V5, V6, break17 F4)."""
    try:
        _CONSTRUCTOR.yaml_constructors[node.tag](_CONSTRUCTOR, node)
    except Exception:  # noqa: BLE001 - any failure of a third-party constructor on untrusted text
        return False
    return True


def mapping_pairs(node: yaml.MappingNode) -> tuple[Pairs, Pairs]:
    """(the pairs written in `node`, the pairs its `<<` merges bring, in the order YAML gives
    them precedence); merges of merges are followed, a merge that contains itself is refused."""
    own: Pairs = []
    merged: Pairs = []

    def take(mapping: yaml.MappingNode, into: Pairs, merging: tuple[int, ...]) -> None:
        if len(merging) > MAX_DEPTH:
            raise _Refused(mapping, f"merges nested deeper than {MAX_DEPTH} levels")
        for key, value in mapping.value:
            if key.tag != MERGE:
                into.append((key, value))
                continue
            for source in value.value if isinstance(value, yaml.SequenceNode) else [value]:
                if id(source) in merging:
                    raise _Refused(source, "a merge that contains itself")
                if isinstance(source, yaml.MappingNode):  # anything else: the loader refuses it
                    take(source, merged, (*merging, id(source)))

    take(node, own, (id(node),))
    return own, merged


def _numbered(key: yaml.Node) -> bool:
    return key.tag == _NUMBERS[0] and _TOKEN_ID.fullmatch(key.value) is not None


def _mappings(root: yaml.Node) -> Iterator[yaml.MappingNode]:
    """Every mapping node once (aliases share nodes; nesting is bounded by then)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            yield node
            stack += [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value


def _key_message(key: yaml.Node) -> str:
    if not isinstance(key, yaml.ScalarNode):
        return "a key must be text, not a list or a mapping"
    text = hide_keys(key.value)
    text = text if len(text) <= 40 else text[:37] + "..."
    reads_as = _READS_AS.get(key.tag, "something other than text")
    return f"the key {text!r} reads as {reads_as} in YAML: quote it (keys are text)"


def compose(text: str, file: str) -> tuple[yaml.Node | None, Any, list[Problem]]:
    """(node, data, problems): the YAML composed and constructed, or the problems found."""
    try:
        problem = nesting_problem(text, file)
        if problem is not None:
            return None, None, [problem]
        loader = _LOADER(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None, None, [Problem(file, 1, 1, "$", "the job file is empty")]
            problem = graph_problem(node, file)
            if problem is not None:
                return None, None, [problem]
            # Building merges `<<` keys into each mapping's pairs in place; the positions and the
            # duplicate-key check want the file's own pairs, where a key set beside a merge
            # overrides the merged one (break17 F13: refused as a "duplicate key").
            written = [(mapping, list(mapping.value)) for mapping in _mappings(node)]
            data = loader.construct_document(node)
            for mapping, pairs in written:
                mapping.value = pairs
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        line, column = _mark(exc, text)
        return None, None, [Problem(file, line, column, "", _syntax_message(exc))]
    except yaml.YAMLError as exc:
        line, column = _mark(exc, text)
        return None, None, [Problem(file, line, column, "", f"YAML error: {str(exc).splitlines()[0]}")]
    except (RecursionError, ValueError, OverflowError) as exc:  # e.g. a huge int or a bad timestamp
        return None, None, [Problem(file, None, None, "", f"YAML value error: {str(exc)[:160]}")]
    return node, data, []


# What a JSON body can carry: orjson (which encodes every body and record) refuses integers
# outside these, so one in a param or a variable ended a run with a traceback (break14c N1).
MIN_INT, MAX_INT = -(2**63), 2**64 - 1


def unusable_number(value: Any) -> str | None:
    """Why a number cannot be sent or recorded: `.inf` / `.nan` (no timeout, budget or parameter
    means anything at those), or an integer past 64 bits; None for any other value."""
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number (not .inf or .nan)"
    if isinstance(value, int) and not isinstance(value, bool) and not MIN_INT <= value <= MAX_INT:
        return "is an integer too large to send (more than 64 bits): quote it to send it as text"
    return None


def unusable_numbers(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(path, why) of every number in `value` that cannot be sent or recorded."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from unusable_numbers(item, (*path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from unusable_numbers(item, (*path, index))
    elif (why := unusable_number(value)) is not None:
        yield path, why


JsonPath = tuple[str | int, ...]


@lru_cache(maxsize=1)
def job_schema() -> dict[str, Any]:
    """The packaged schema; in a source checkout, the top-level schemas/ folder."""
    packaged = resources.files("batchrun") / "schemas" / "job.schema.json"
    if packaged.is_file():
        text = packaged.read_text(encoding="utf-8")
    else:
        text = (Path(__file__).resolve().parent.parent / "schemas" / "job.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def value_problems(data: dict[str, Any], problem: Callable[[JsonPath, str], Problem]) -> list[Problem]:
    """Numbers, URLs, output patterns and templates of a schema-valid job that the schema cannot judge."""
    from ._argtypes import url_problem
    from ._output_paths import output_pattern_problem
    from ._template import template_problems

    problems = [problem(p, why) for p, why in unusable_numbers(data)]
    base_url = data.get("endpoint", {}).get("base_url")
    if base_url is not None and (message := url_problem(base_url)):
        problems.append(problem(("endpoint", "base_url"), message))
    output = data.get("run", {}).get("output")
    if output is not None and (message := output_pattern_problem(output)):
        problems.append(problem(("run", "output"), message))
    defaults = data.get("defaults", {})
    templated: list[tuple[JsonPath, Any]] = [(("defaults", k), defaults.get(k)) for k in ("system", "checks")]
    for i, prompt in enumerate(data["prompts"]):
        templated += [(("prompts", i, k), prompt.get(k)) for k in ("text", "system", "messages", "checks")]
    for where, value in templated:
        problems += [problem(path, message) for path, message in template_problems(value, where)]
    # Params are sent as written, never templated: a placeholder there would reach the
    # model literally (`stop: ["{{nope}}"]`), so any `{{` or `}}` in them is refused.
    params: list[tuple[JsonPath, Any]] = [(("defaults", "params"), defaults.get("params"))]
    params += [(("prompts", i, "params"), prompt.get("params")) for i, prompt in enumerate(data["prompts"])]
    models = data.get("models", [])
    params += [(("models", i, "params"), m.get("params")) for i, m in enumerate(models) if isinstance(m, dict)]
    judge = data.get("judge")
    if isinstance(judge, dict):
        params.append((("judge", "params"), judge.get("params")))
    for where, value in params:
        problems += [
            problem(path, "params are sent as written, not templated: '{{' and '}}' cannot appear in them")
            for path in braced_strings(value, where)
        ]
        extra = value.get("extra_body") if isinstance(value, dict) else None
        for key in extra if isinstance(extra, dict) else {}:
            if (why := _extra_body_problem(key)) is not None:
                problems.append(problem((*where, "extra_body", key), why))
    return problems


# Keys batchrun writes itself: through extra_body they would replace what was validated and
# priced (break-14b C1: `extra_body: {model: ...}` sent one model and priced another).
_OWN_KEYS = {"model", "messages", "n", "stream", "stream_options", "preset"}


def _extra_body_problem(key: str) -> str | None:
    """Why extra_body may not carry `key`: it is a param of its own, or batchrun's."""
    if key in _OWN_KEYS:
        return (
            f"batchrun sets {key!r} itself; extra_body cannot replace it (the worst case would price "
            "one request and another would be sent)"
        )
    if key in job_schema()["$defs"]["params"]["properties"]:
        return f"{key!r} is a param of its own: set it there, where it is checked and priced, not in extra_body"
    return None


def braced_strings(value: Any, path: JsonPath) -> Iterator[JsonPath]:
    """Paths of the strings inside `value` that hold `{{` or `}}`."""
    if isinstance(value, str):
        if "{{" in value or "}}" in value:
            yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from braced_strings(item, (*path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from braced_strings(item, (*path, index))
