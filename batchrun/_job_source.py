"""A job file read with where each value stands in it: its YAML composed (_jobfile), every
value's and every mapping key's line and column, and the keys a mapping writes twice. Problems
found later, by the schema or the semantic checks, are placed by `JobSource.problem`."""

from __future__ import annotations

import bisect
import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ._exceptions import Problem
from ._formats import short
from ._job_graph import MERGE, mapping_pairs, merge_sources
from ._jobfile import JsonPath, compose, read_job_text
from ._record_head import RECORD_START
from ._scrub import hide_keys

Position = tuple[int, int]

_PLAIN_KEY = re.compile(r"[\w/:@+-]+")  # names, model ids (openai/gpt-4o-mini:free), token ids


def format_path(path: JsonPath) -> str:
    out = "$"
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            # A key is the file's text: a newline in it would start a forged error line, an
            # escape sequence would reach the terminal (break17 F12), a key its secret.
            # A key a dot, bracket, space or nothing would make ambiguous is quoted (break20 F13).
            text = short(hide_keys(str(part)))
            out += f".{text}" if _PLAIN_KEY.fullmatch(text) else f"[{json.dumps(text)}]"
    return out


class JobSource:
    """The parsed file and where each value stood in it."""

    def __init__(
        self, file: str, data: Any, positions: dict[JsonPath, Position], key_positions: dict[JsonPath, Position]
    ) -> None:
        self.file = file
        self.data = data
        self.positions = positions
        self.key_positions = key_positions  # where the key of a mapping entry stands

    def problem(self, path: JsonPath, message: str, at_key: bool = False) -> Problem:
        if at_key and path in self.key_positions:
            line, column = self.key_positions[path]
            return Problem(self.file, line, column, format_path(path), message)
        for cut in range(len(path), -1, -1):
            position = self.positions.get(tuple(path[:cut]))
            if position is not None:
                return Problem(self.file, position[0], position[1], format_path(path), message)
        return Problem(self.file, None, None, format_path(path), message)


def _walk(
    node: yaml.Node,
    path: JsonPath,
    positions: dict[JsonPath, Position],
    key_positions: dict[JsonPath, Position],
    problems: list[Problem],
    file: str,
    checked: set[int],
) -> None:
    positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        # Duplicates among the keys each mapping writes, once per mapping (an alias is the same
        # node), merged ones included: a mapping written only as a `<<` value (verify17b W5).
        for mapping in [node] + [m for k, v in node.value if k.tag == MERGE for m in merge_sources(v)]:
            if isinstance(mapping, yaml.MappingNode) and id(mapping) not in checked:
                checked.add(id(mapping))
                problems += _duplicates(mapping, path, file)
        own, merged = mapping_pairs(node)
        # The pair the loader builds: of a key written twice the last (break20 F1); a merged key
        # where its mapping wrote it, unless this mapping or an earlier merge set it (break17 F13).
        chosen = {str(k.value): (k, v) for k, v in own}
        for key_node, value_node in merged:
            chosen.setdefault(str(key_node.value), (key_node, value_node))
        for key, (key_node, value_node) in chosen.items():
            key_positions[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            _walk(value_node, path + (key,), positions, key_positions, problems, file, checked)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, path + (index,), positions, key_positions, problems, file, checked)
    elif (
        read_as := _read_otherwise(node, in_vars=len(path) >= 3 and path[-3] == "vars", sent="params" in path)
    ) is not None:
        mark = node.start_mark
        why = f"{node.value!r} reads as {read_as} in YAML 1.1: quote it to use it as text"
        problems.append(Problem(file, mark.line + 1, mark.column + 1, format_path(path), why))


# YAML 1.1's plain scalars that are not what they look like (break65 F2: `country: NO` asked
# "What is the capital of False?", a zip code 02134 was sent as 1116, 12:30:00 as 45000).
_NUMBER_FORMS = (
    (re.compile(r"[-+]?0[0-7_]+"), "an octal number (its leading 0)"),
    (re.compile(r"[-+]?0[xob][0-9a-fA-F_]+"), "a hexadecimal, octal or binary number"),
    (re.compile(r"[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?"), "a number in base 60 (its colons)"),
    (re.compile(r"[-+]?[0-9.]*_[0-9_.]*"), "a number (its underscores are separators)"),
)


def _read_otherwise(node: yaml.Node, *, in_vars: bool, sent: bool) -> str | None:
    """How a variable's plain scalar reads when that is not what it looks like, or None. In a
    request's params (`sent`), only a number no one writes meaning it: octal, base 60 (verify67
    F4: `seed: 0777` was sent as 511); a `no` there is the false it usually means."""
    if not (in_vars or sent) or not isinstance(node, yaml.ScalarNode) or node.style:  # plain: None, or "" (libyaml)
        return None
    text = str(node.value)
    if in_vars and node.tag == "tag:yaml.org,2002:bool" and text.lower() not in ("true", "false"):
        return f"the boolean {str(text.lower() in ('yes', 'y', 'on')).lower()}"
    if node.tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float"):
        forms = _NUMBER_FORMS if in_vars else (_NUMBER_FORMS[0], _NUMBER_FORMS[2])
        if what := next((what for form, what in forms if form.fullmatch(text)), None):
            return what
    if (
        in_vars
        and node.tag == "tag:yaml.org,2002:int"
        and re.fullmatch(r"[-+]?[0-9]+", text)
        and str(int(text)) != text
    ):
        return f"the number {int(text)}"  # `+44` (a dialling code) was sent as 44 (verify68 F5)
    if in_vars and node.tag == "tag:yaml.org,2002:float" and _FLOAT.fullmatch(text):
        # `python: 3.10` was sent as 3.1, `1.` as 1.0 (verify67 F2): a number fills a template as
        # it reads, not as it was written.
        value = repr(float(text))
        return None if value == text else f"the number {value}"
    return None


_FLOAT = re.compile(r"[-+]?[0-9]*\.?[0-9]*([eE][-+]?[0-9]+)?")


def _duplicates(mapping: yaml.MappingNode, path: JsonPath, file: str) -> list[Problem]:
    """Keys a mapping writes twice: PyYAML keeps one silently, and it is almost always a mistake."""
    seen: set[tuple[bool, str]] = set()
    problems = []
    for key_node, _ in mapping.value:
        merge = key_node.tag == MERGE  # two `<<` too, however spelt (`!!merge a:`): PyYAML took both
        key = "<<" if merge else str(key_node.value)
        if (merge, key) in seen:
            mark, hint = key_node.start_mark, ": merge them in one list, <<: [*a, *b]" if merge else ""
            where = format_path(path + (key,))
            problems.append(Problem(file, mark.line + 1, mark.column + 1, where, f"duplicate key {key!r}{hint}"))
        seen.add((merge, key))
    return problems


def parse_job_source(path: Path) -> tuple[JobSource | None, list[Problem]]:
    file = str(path)
    text, problems = read_job_text(path)
    if text is None:
        return None, problems
    if path.name.endswith(".summary.json"):
        # A run's summary where the job goes: 33 lines of unknown keys (break65 F7).
        results = path.name.removesuffix(".summary.json") + ".jsonl"
        why = (
            f"the summary a run writes beside its results ({results}), not a job file: is it given in the job's place?"
        )
        return None, [Problem(file, 1, 1, "", why)]
    if text.startswith(RECORD_START.decode()):
        # A results file where the job goes (`report JOB --job RESULTS`): read as YAML, its
        # lines were "a YAML syntax error" (break31 m5).
        why = "a batchrun results file (JSONL records), not a job file: is it given in the job's place?"
        return None, [Problem(file, 1, 1, "", why)]
    node, data, problems = compose(text, file)
    moved = _as_editors_count(text)
    if moved is not None:
        problems = [_moved(problem, moved) for problem in problems]
    if node is None:
        return None, problems
    positions: dict[JsonPath, Position] = {}
    key_positions: dict[JsonPath, Position] = {}
    found: list[Problem] = []
    _walk(node, (), positions, key_positions, found, file, set())
    if moved is not None:
        positions = {path: moved(*at) for path, at in positions.items()}
        key_positions = {path: moved(*at) for path, at in key_positions.items()}
        found = [_moved(problem, moved) for problem in found]
    return JobSource(file, data, positions, key_positions), problems + found


_YAML_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
_EDITOR_BREAK = re.compile("\r\n|[\r\n]")


def _as_editors_count(text: str) -> Callable[[int, int], Position] | None:
    """YAML's (line, column) as an editor or grep counts them, where they differ: YAML breaks
    lines at U+0085, U+2028 and U+2029 too, so each one in a pasted prompt moved every error
    below it a line down (out-130 F4). None when the text has none of them."""
    if not any(mark in text for mark in "\x85\u2028\u2029"):
        return None
    yaml_starts = [0] + [m.end() for m in _YAML_BREAK.finditer(text)]
    starts = [0] + [m.end() for m in _EDITOR_BREAK.finditer(text)]

    def moved(line: int, column: int) -> Position:
        index = yaml_starts[min(max(line, 1), len(yaml_starts)) - 1] + column - 1
        real = bisect.bisect_right(starts, index) - 1
        return real + 1, index - starts[real] + 1

    return moved


def _moved(problem: Problem, moved: Callable[[int, int], Position]) -> Problem:
    # A syntax error's message names its context's place too: "(while parsing ... at line 14)" (out-133 F3).
    message = _AT_LINE.sub(lambda m: "at line {}, column {}".format(*moved(int(m[1]), int(m[2]))), problem.message)
    if problem.line is None:
        return dataclasses.replace(problem, message=message)
    line, column = moved(problem.line, problem.column or 1)
    return dataclasses.replace(
        problem, line=line, column=column if problem.column is not None else None, message=message
    )


_AT_LINE = re.compile(r"at line (\d+), column (\d+)")
