"""Reading a job file without trusting it: bounded size, regular files only, bounded nesting
and alias expansion, and every YAML failure as a Problem with its position.

A job file can come from anyone (a pull request, a shared folder). Before these checks,
`validate` hung on a FIFO, read `/dev/zero` until memory ran out, raised a traceback on a
NUL byte (PyYAML's ReaderError comes from the loader's constructor) and on 5,000-deep
nesting (the composer recurses), and spent half a minute and 4 GB on a "billion laughs"
alias bomb. Nesting and the number of values are measured on the parser's event stream, which
is iterative, before anything recursive runs; then the composed node graph, where aliases are
shared, is measured with them followed (depth, values, characters) without being expanded, and
whatever the loader would build that JSON cannot carry is refused at its line (`graph_problems`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import BaseConstructor, ConstructorError
from yaml.parser import ParserError
from yaml.scanner import ScannerError

from ._exceptions import Problem
from ._files import read_bounded
from ._formats import short
from ._job_graph import (
    BIG_DATA_HINT,
    MAX_JOB_BYTES,
    MAX_NODES,
    MERGE,
    graph_problems,
    mapping_pairs,
    merge_sources,
    problem_at,
)
from ._limits import MAX_DEPTH
from ._scrub import KEY_LIKE, hide_keys

# libyaml's parser when PyYAML has it (the wheels do): the pure-Python scanner is quadratic in
# flow nesting ("[[[[..."), and composes a job about eight times slower (7 ms for
# jobs/eval.yaml against 0.8 ms), which every run, plan and validate pays. Every other reader of
# a job's YAML takes it too.
SAFE_LOADER: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(SAFE_LOADER):  # type: ignore[valid-type,misc]  # the C loader when PyYAML has it
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """`<<` merges as YAML gives them precedence: the mapping's own keys, then each merged
        mapping's own keys before what it merges, earlier merges before later ones. PyYAML 6.0.4
        skipped a merged key by the identity of its Python string, which CPython shares only for
        one-character keys: an override two merges down was lost for `n` and kept for `nn`, and
        in `<<: [*a, *b]` b won (verify17b W2). The pairs as written are put back afterwards, so
        a mapping merged again is read as it was written."""
        if not isinstance(node, yaml.MappingNode):  # `!!map [1]`: PyYAML's own error, with its mark
            return BaseConstructor.construct_mapping(self, node, deep=deep)
        for key, value in node.value:
            if key.tag == "tag:yaml.org,2002:value":  # `=`, as PyYAML reads it
                key.tag = "tag:yaml.org,2002:str"
            if key.tag != MERGE:
                continue
            for source in merge_sources(value):
                if not isinstance(source, yaml.MappingNode):
                    raise ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"expected a mapping or list of mappings for merging, but found {getattr(source, 'id', '?')}",
                        key.start_mark,  # the `<<`: an aliased source's own mark is its anchor (break20 F6)
                    )
        written = node.value
        own, merged = mapping_pairs(node)
        node.value = [*reversed(merged), *own]  # built in order: the last of a key wins
        try:
            built = BaseConstructor.construct_mapping(self, node, deep=deep)
        finally:
            node.value = written
        # A token id key (`logit_bias: {50256: -100}`, the only number key graph_problems lets
        # through) is text from here on, as JSON has it: an int key crashed the summary's item
        # key, the cost estimate, batch mode's rules and `cache explain`, and a check's schema
        # never matched the "8" a reply holds (break20 C2-C5, M7).
        return {str(k) if type(k) is int else k: v for k, v in built.items()}


_LOADER = _Loader


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


# An alias or an anchor as written: `*` or `&` and a name, in the characters libyaml takes for one.
_ALIAS = re.compile(r"[*&]([0-9A-Za-z_-]+)")


def _syntax_message(exc: yaml.MarkedYAMLError, text: str) -> str:
    """The problem, and the construct it was in with where that began: an unclosed quote or
    bracket is found at the end of the file, far from where it opened (break17 F17). Text that
    parses but cannot be built (an undefined alias, a merge of a number) is no syntax error."""
    problem, context, first = str(exc.problem or exc), exc.context, exc.context_mark
    mark = exc.problem_mark
    # libyaml's messages leave out the name PyYAML's own composer gives, and its duplicate
    # anchor reads backwards ("second occurrence (found duplicate anchor; first ...)", break20 F22).
    named = _ALIAS.match(_text_at(text, mark)) if problem in ("found undefined alias", "second occurrence") else None
    name = short(named.group(1), 60) if named else ""  # a 100,000-character name made a 200 KB line (F10)
    if named and problem == "found undefined alias":
        problem = f"found undefined alias {name!r}: no anchor &{name} before it"
    elif named and first is not None:
        problem, context = f"the anchor &{name} is defined twice: give each its own name", "first defined"
    elif context in ("while scanning an alias", "while scanning an anchor"):
        problem += ": an anchor's name is ASCII letters, digits, - and _"  # `*país` (break20 F21)
    elif problem.startswith("found character") and _text_at(text, mark).startswith("\t"):
        problem = "a tab: YAML is indented with spaces, never tabs"  # libyaml names no character (out-102 F11)
    kind = "syntax error" if isinstance(exc, (ScannerError, ParserError)) else "error"
    message = f"YAML {kind}: {problem}"
    if context and first is not None and first is not mark:
        message += f" ({context} at line {first.line + 1}, column {first.column + 1})"
    return hide_keys(message)  # a tag or an alias may be key-like text (verify17b)


def _text_at(text: str, mark: Any) -> str:
    """The file's text from a mark of libyaml's on, to the end of that line."""
    lines = _BREAKS.split(text.removeprefix("\ufeff"))  # libyaml's columns skip a BOM
    return lines[mark.line][mark.column :] if mark is not None and mark.line < len(lines) else ""


def nesting_problem(text: str, file: str) -> Problem | None:
    """Nesting deeper than MAX_DEPTH, or more than MAX_NODES values, found on the event stream
    before anything recurses or builds a node (4 MB of one-character items composed to ~650 MB)."""
    depth = 0
    values = 0
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                return problem_at(event.start_mark, file, f"nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
            continue
        if isinstance(event, yaml.NodeEvent):
            values += 1
            if values > MAX_NODES:
                return problem_at(event.start_mark, file, f"more than {MAX_NODES:,} values ({BIG_DATA_HINT})")
    return None


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
            if problems := graph_problems(node, file):
                return None, None, problems
            # `_Loader.construct_mapping` puts each mapping's pairs back as written: the positions
            # and the duplicate-key check read the file's own pairs (break17 F13).
            data = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        line, column = _mark(exc, text)
        return None, None, [Problem(file, line, column, "", _syntax_message(exc, text))]
    except yaml.YAMLError as exc:
        line, column = _mark(exc, text)
        return None, None, [Problem(file, line, column, "", hide_keys(f"YAML error: {str(exc).splitlines()[0]}"))]
    except (RecursionError, ValueError, OverflowError) as exc:  # e.g. a huge int or a bad timestamp
        return None, None, [Problem(file, None, None, "", f"YAML value error: {str(exc)[:160]}")]
    return node, data, []


# What a JSON body can carry: orjson (which encodes every body and record) refuses integers
# outside these, so one in a param or a variable ended a run with a traceback (break14c N1).
MIN_INT, MAX_INT = -(2**63), 2**64 - 1


def unusable_number(value: Any, variable: bool = True) -> str | None:
    """Why a number cannot be sent or recorded: `.inf` / `.nan` (no timeout, budget or parameter
    means anything at those), or an integer past 64 bits; None for any other value. Quoting is
    the way out for a `variable` (an id column), never for a parameter or a setting (break48:
    a quoted max_tokens then failed the schema)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number (not .inf or .nan)"
    if isinstance(value, int) and not isinstance(value, bool) and not MIN_INT <= value <= MAX_INT:
        return "is an integer too large to send (more than 64 bits)" + (": quote it to send it as text" * variable)
    return None


def unusable_numbers(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(path, why) of every number in `value` that cannot be sent or recorded."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from unusable_numbers(item, (*path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from unusable_numbers(item, (*path, index))
    elif (why := unusable_number(value, variable="vars" in path)) is not None:
        yield path, why


JsonPath = tuple[str | int, ...]


def key_like_strings(value: Any, path: JsonPath, holds: Callable[[str], bool] | None = None) -> list[JsonPath]:
    """Where a string that looks like an API key stands (it belongs in the environment): a
    value, or a mapping's key (sent in the body and written to every row: verify20 V2).
    `holds`: another test of a string (a key of the environment, whatever its shape)."""
    found = holds or (lambda text: KEY_LIKE.search(text) is not None)
    if isinstance(value, str):
        return [path] if found(value) else []
    if isinstance(value, dict):
        keys = [path + (str(k),) for k in value if found(str(k))]
        return keys + [p for k, v in value.items() for p in key_like_strings(v, path + (str(k),), holds)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in key_like_strings(v, path + (i,), holds)]
    return []


def text_keys(path: Iterable[str | int], data: Any) -> JsonPath:
    """A path into `data` with a mapping's keys as text, as `_walk` and the JSON body have them:
    a token id key (`logit_bias: {50256: -100}`) read as a list's index in messages (`[8]`)."""
    parts: list[str | int] = []
    for part in path:
        if isinstance(data, dict):
            data, part = data.get(part), str(part)
        else:
            data = data[part] if isinstance(data, list) and isinstance(part, int) and part < len(data) else None
        parts.append(part)
    return tuple(parts)


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
    if "dataset" in data and all("vars" in p or "dataset" in p for p in data["prompts"]):
        # Never read, so never checked: a dataset that is not there passed validate (out-184 F3).
        problems.append(problem(("dataset",), "is used by no prompt (each gives its own vars or dataset): remove it"))
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


@lru_cache(maxsize=256)
def _ecma(pattern: str) -> re.Pattern[str]:
    # A final `$` is the end of the text, as in the ECMA-262 regexes JSON Schema names, not
    # Python's "or before a final newline": "t\n" passed as a job's name, and the run made the
    # folder `outputs/t\n/` (out-135 F3).
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    """JSON Schema's `pattern` keyword, its `$` read as ECMA-262 reads it (_ecma)."""
    from jsonschema.exceptions import ValidationError

    if validator.is_type(instance, "string") and not _ecma(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")
