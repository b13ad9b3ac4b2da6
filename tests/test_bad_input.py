"""Bad input of every kind: exit 2, one line per problem naming the file and the line or field,
no traceback, no hang, nothing written, all in well under a second each.

One table per kind of input: job files, datasets, options and the environment.
(Results files as inputs are in test_results_files.py.)
"""

from __future__ import annotations

import errno
import gc
import json
import os
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchrun import ConfigError, ExitCode, OpenRouterClient, RunOptions, Shard, load_job, matrix_requests, run_job
from batchrun._lock import OutputLock
from batchrun.cli import _shared_parser
from batchrun.simulator import Simulator

from .conftest import FAKE_KEY, SMALL_JOB, call_cli, child_env, read_rows, write_job

# CPU seconds of this process (not wall time, which a busy machine stretches at random): the
# cases used to take 30 s of work or hang forever; a hang is also cut by the 30 s timeout.
MAX_CPU_SECONDS = 5.0


def assert_refused(code: int, err: str, *fragments: str) -> None:
    assert code == ExitCode.USAGE, err
    assert "Traceback" not in err and err.startswith("batchrun: "), err
    for fragment in fragments:
        assert fragment in err, err


def files_unchanged(folder: Path) -> Callable[[], None]:
    """A check that nothing in `folder` was created, changed or removed."""
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    def check() -> None:
        after = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        assert after == before

    return check


def _job_with(**replace: str) -> str:
    text = SMALL_JOB
    for old, new in replace.items():
        assert old.replace("_", " ") in text or old in text
        text = text.replace(old, new)
    return text


BOMB = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *[
            f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]"
            for i in range(8)  # 9^9 strings once expanded
        ],
        "name: x",
    ]
)
CAPITAL = '    text: "Capital of {{country}}?"'

# Each anchor nests 50 levels and aliases the one before: the file never nests past 64, the
# data nests 1,000 deep (break17 F1: a RecursionError, or "ok" and then orjson's traceback).
CHAINED_ALIASES = "name: x\n" + "\n".join(
    f"a{i}: &a{i} " + "[" * 50 + (f"*a{i - 1}" if i else "v") + "]" * 50 for i in range(20)
)
ONE_PROMPT = 'name: x\nmodels: [openai/gpt-4o-mini]\nprompts:\n  - id: p\n    text: "hi"\n'


def _doubling_merges(levels: int) -> str:
    """Each mapping merges the one before twice: 2**levels merges from ~25 bytes a level (verify17b W3)."""
    text = "&m0 {k: 1}"
    for i in range(1, levels + 1):
        text = f"&m{i} {{<<: [{text}, *m{i - 1}]}}"
    return ONE_PROMPT + "    params:\n      extra_body:\n        y: " + text + "\n"


# (id, job text, fragments of the message: file:line, and what is wrong)
JOB_CASES: list[tuple[str, str | bytes, list[str]]] = [
    ("alias bomb", BOMB, ["job.yaml", "more than 200,000 values once aliases are expanded (keys, values, lists"]),
    ("recursive alias", "name: x\nmodels: &m [*m]\n", ["job.yaml:2:", "an alias that contains itself"]),
    ("5000-deep nesting", "name: " + "[" * 5000 + "]" * 5000 + "\n", ["job.yaml:1:", "nest"]),
    ("100-deep nesting", "name: " + "[" * 100 + "]" * 100 + "\n", ["job.yaml:1:70:", "nested deeper than 64 levels"]),
    ("NUL byte", SMALL_JOB.encode().replace(b"small", b"sm\x00all"), ["job.yaml:1:", "a NUL byte"]),
    ("not UTF-8", SMALL_JOB.encode().replace(b"small", b"sm\xffall"), ["job.yaml:1:", "not UTF-8"]),
    (  # break59 F6: the schema's maximum says it now, before the finite check
        "timeout .inf",
        _job_with(**{"timeout_s: 5": "timeout_s: .inf"}),
        ["job.yaml:", "$.run.timeout_s inf is greater than the maximum of 3600"],
    ),
    (  # break45 F1: parameters.mdx gives -100 to 100
        "logit_bias past -100",
        ONE_PROMPT + "    params: {logit_bias: {50256: -500}}\n",
        ["job.yaml:6:", "$.prompts[0].params.logit_bias.50256", "-500 is less than the minimum of -100"],
    ),
    (  # verify47: SearchContextSizeEnum (openapi.yaml)
        "search_context_size huge",
        ONE_PROMPT + "    params: {web_search_options: {search_context_size: huge}}\n",
        ["job.yaml:6:", "search_context_size", "'huge' is not one of"],
    ),
    (  # break45 F1: documented params now, so extra_body may not carry them unchecked
        "structured_outputs in extra_body",
        ONE_PROMPT + "    params: {extra_body: {structured_outputs: true}}\n",
        ["job.yaml:6:", "'structured_outputs' is a param of its own"],
    ),
    (  # break41 F4: the bare pattern said nothing of why
        "a preset",
        SMALL_JOB.replace("openai/gpt-4o-mini,", "openai/gpt-4o-mini@preset/fast,"),
        ["job.yaml:", "'openai/gpt-4o-mini@preset/fast': presets are not supported", "name the model and its params"],
    ),
    (
        "connect timeout .inf",
        _job_with(**{"timeout_s: 5": "timeout_s: 5, connect_timeout_s: .inf"}),
        ["$.run.connect_timeout_s inf is greater than the maximum of 600"],
    ),
    ("budget .nan", _job_with(**{"timeout_s: 5": "timeout_s: 5, budget_usd: .nan"}), ["$.run.budget_usd", "finite"]),
    ("deadline .nan", _job_with(**{"timeout_s: 5": "timeout_s: 5, deadline_s: .nan"}), ["$.run.deadline_s", "finite"]),
    ("temperature .inf", _job_with(**{"max_tokens: 32": "max_tokens: 32, temperature: .inf"}), ["temperature"]),
    # break14c N1: an integer past 64 bits was "ok" to validate, then a traceback in the run.
    ("max_tokens 10**30", _job_with(**{"max_tokens: 32": "max_tokens: " + "1" + "0" * 30}), ["max_tokens", "64 bits"]),
    (
        "unknown output placeholder",
        _job_with(**{"timeout_s: 5": 'timeout_s: 5, output: "out/{job}.jsonl"'}),
        ["$.run.output", "the only placeholders are {name} and {timestamp}"],
    ),
    (
        # break52 F4: a folder per run validated and ran, then --resume and history found no run
        # (exit 2), and a 19700101T000000.000Z/ folder was left behind.
        "timestamp in a folder",
        _job_with(**{"timeout_s: 5": 'timeout_s: 5, output: "outputs/{name}/{timestamp}/results.jsonl"'}),
        ["$.run.output", "{timestamp} may be only in the file's name"],
    ),
    ("lone brace", _job_with(**{"timeout_s: 5": 'timeout_s: 5, output: "out/{name.jsonl"'}), ["$.run.output"]),
    (  # break57 F6: a folder named ~ was made where batchrun ran
        "a tilde output",
        _job_with(**{"timeout_s: 5": 'timeout_s: 5, output: "~/evals/{name}.jsonl"'}),
        ["$.run.output", "a ~ is not the home folder here"],
    ),
    ("positional {0}", _job_with(**{"timeout_s: 5": 'timeout_s: 5, output: "out/{0}.jsonl"'}), ["$.run.output"]),
    (
        "attribute access",
        _job_with(**{"timeout_s: 5": 'timeout_s: 5, output: "{name.__class__}.jsonl"'}),
        ["$.run.output"],
    ),
    (
        "base_url without host",
        "endpoint: {base_url: 'https://'}\n" + SMALL_JOB,
        ["$.endpoint.base_url", "with a host"],
    ),
    (
        "base_url port out of range",
        "endpoint: {base_url: 'http://127.0.0.1:201110/api/v1'}\n" + SMALL_JOB,
        ["$.endpoint.base_url", "out of range"],
    ),
    (
        "hyphenated variable",
        SMALL_JOB.replace(CAPITAL, '    text: "Capital of {{ country-name }}?"'),
        ["job.yaml:7:11:", "$.prompts[0].text", "'{{ country-name }}' is not a valid placeholder"],
    ),
    (
        "variable starting with a digit",
        SMALL_JOB.replace(CAPITAL, '    text: "Capital of {{ 1x }}?"'),
        ["$.prompts[0].text", "'{{ 1x }}' is not a valid placeholder"],
    ),
    (
        "unbalanced braces",
        SMALL_JOB.replace(CAPITAL, '    text: "Capital of {{country}?"'),
        ["$.prompts[0].text", "'{{country}' is not a valid placeholder"],
    ),
    (
        "broken placeholder in a check",
        SMALL_JOB.replace('checks: [{contains: "{{expect}}"}]', 'checks: [{contains: "{{expect}"}]'),
        ["$.prompts[0].checks[0].contains", "is not a valid placeholder"],
    ),
    (
        "empty templated check value",
        SMALL_JOB.replace("{country: Japan, expect: Tokyo}", "{country: Japan, expect: ''}"),
        ["$.prompts[0].vars[1]", "the check value '{{expect}}' is empty for this row"],
    ),
    *[
        (
            f"literal blank check value {value}",
            SMALL_JOB.replace('checks: [{contains: "{{expect}}"}]', f"checks: [{{{value}}}]"),
            ["job.yaml:", where, "is empty or only whitespace, so the check could never fail"],
        )
        for value, where in [
            ('contains: ""', "$.prompts[0].checks[0]"),
            ('contains: "  "', "$.prompts[0].checks[0]"),
            ('icontains: " "', "$.prompts[0].checks[0]"),
            ('starts_with: "  "', "$.prompts[0].checks[0]"),
            ('regex: ""', "$.prompts[0].checks[0]"),
            ('contains: {any: [Paris, "  "]}', "$.prompts[0].checks[0]"),
        ]
    ],
    (
        "literal blank per-row check value",
        SMALL_JOB.replace(
            "{country: Japan, expect: Tokyo}", '{country: Japan, expect: Tokyo, checks: [{contains: " "}]}'
        ),
        ["$.prompts[0].vars[1]", "checks[0]: the check value ' ' is empty or only whitespace"],
    ),
    (
        "literal blank default check value",
        SMALL_JOB.replace("params: {max_tokens: 32}", 'params: {max_tokens: 32}\n  checks: [{regex: ""}]'),
        ["$.defaults.checks[0]", "could never fail"],
    ),
    (
        "triple braces",
        SMALL_JOB.replace(CAPITAL, '    text: "Capital of {{{country}}}?"'),
        ["job.yaml:7:", "$.prompts[0].text", "'{{{country}}}' is not a valid placeholder"],
    ),
    (
        "placeholder in default params",
        SMALL_JOB.replace("params: {max_tokens: 32}", 'params: {max_tokens: 32, stop: ["{{nope}}"]}'),
        ["job.yaml:3:", "$.defaults.params.stop[0]", "params are sent as written, not templated"],
    ),
    (
        "placeholder in prompt params",
        SMALL_JOB.replace("  - id: sum\n", '  - id: sum\n    params: {stop: ["{{a}}"]}\n'),
        ["$.prompts[1].params.stop[0]", "params are sent as written, not templated"],
    ),
    (
        "placeholder in model params",
        SMALL_JOB.replace(
            "models: [openai/gpt-4o-mini,", "models: [{id: openai/gpt-4o-mini, params: {user: '{{country}}'}},"
        ),
        ["$.models[0].params.user", "params are sent as written, not templated"],
    ),
    # break17: what the loader builds that a run cannot use, refused before it is built.
    ("aliases nesting 1,000 deep", CHAINED_ALIASES, ["job.yaml:", "nested deeper than 64 levels once aliases"]),
    (
        "30 aliases of a 1 MB string",  # at the list of aliases that expands, not at the anchor
        'name: x\ns: &s "' + "a" * 1_000_000 + '"\nt: [' + ", ".join(["*s"] * 30) + "]\n",
        ["job.yaml:3:4:", "more than 16,777,216 characters once aliases are expanded"],
    ),
    (
        "200,001 values",
        "name: x\nmodels: [" + "1," * 200_001 + "]\n",
        ["job.yaml:2:", "more than 200,000 values (keys, values, lists and mappings each count; a large table"],
    ),
    # PyYAML's int of a base-60 number is quadratic (800 KB took a minute); a 4,000-digit hex
    # number broke jsonschema's message (a traceback).
    ("base-60 number", ONE_PROMPT + "repeat: " + ":".join(["1"] * 20_000), ["job.yaml:6:9:", "a number of 39,999"]),
    ("4,000-digit hex number", ONE_PROMPT + "repeat: 0x" + "f" * 4000, ["job.yaml:6:9:", "a number of 4,002"]),
    (
        "a 120-bit number as a key",
        ONE_PROMPT + "    params: {extra_body: {0xffffffffffffffffffffffffffffff: 1}}\n",
        ["job.yaml:6:27:", "the key '0xffff", "reads as a number in YAML: quote it"],
    ),
    (
        "a date as a key",
        ONE_PROMPT + "    vars: [{2020-01-01: a}]\n",
        ["job.yaml:6:13:", "the key '2020-01-01' reads as a date"],
    ),
    ("on as a key", "on: push\n" + ONE_PROMPT, ["job.yaml:1:1:", "the key 'on' reads as true or false"]),
    ("a list as a key", ONE_PROMPT + "    params: {? [a]\n: b}\n", ["job.yaml:6:16:", "a key must be text"]),
    (
        "binary data",
        ONE_PROMPT + "    params: {extra_body: {x: !!binary aGk=}}\n",
        ["job.yaml:6:30:", "binary data (!!binary) cannot be sent as JSON"],
    ),
    (
        "an unclosed quote",
        ONE_PROMPT.replace('text: "hi"', 'text: "hi') + "repeat: 2\n",
        ["job.yaml:7:1:", "end of stream (while scanning a quoted scalar at line 5, column 11)"],
    ),
    ("a control character", ONE_PROMPT + "é: \x07\n", ["job.yaml:6:4:", "control characters are not allowed"]),
    ("CR line breaks", "name: x\rmodels: [a]\rb: \x07\r", ["job.yaml:3:4:", "control characters are not allowed"]),
    ("a NUL after NEL breaks", "name: x\x85models: [a]\x85b: \x00", ["job.yaml:3:4:", "a NUL byte"]),
    # verify17: merges, octal keys, tags their text does not fit.
    ("an octal key", ONE_PROMPT + "    params: {logit_bias: {010: 5}}\n", ["job.yaml:6:27:", "the key '010' reads as"]),
    (
        "!!bool maybe",
        ONE_PROMPT + "    params: {extra_body: {a: !!bool maybe}}\n",
        ["job.yaml:6:30:", "'maybe' reads as"],
    ),
    ("!!int ''", ONE_PROMPT + "    params: {extra_body: {a: !!int ''}}\n", ["job.yaml:6:30:", "'' reads as a number"]),
    (
        "!!timestamp foo",
        ONE_PROMPT + "    params: {extra_body: {a: !!timestamp foo}}\n",
        ["6:30:", "'foo' reads as a date"],
    ),
    (
        "a date that is not one",
        ONE_PROMPT + "    vars: [{d: 2020-13-45}]\n",
        ["job.yaml:6:16:", "'2020-13-45' reads as"],
    ),
    ("a merge of itself", ONE_PROMPT + "    params: &a {<<: *a}\n", ["job.yaml:6:", "a merge that contains itself"]),
    (
        "a key-like tagged key",
        ONE_PROMPT + "    params: {extra_body: {!secret sk-or-v1-abcdefabcdef0123: 1}}\n",
        ["job.yaml:6:27:", "the key 'sk-or-...(hidden)'"],
    ),
    ("merges doubling 29 times", _doubling_merges(29), ["job.yaml:8:12:", "more than 200,000 values once merges"]),
    (
        "a key-like tag",
        ONE_PROMPT + "    params: {extra_body: {a: !sk-or-v1-0123456789abcdef0123 x}}\n",
        ["job.yaml:6:30:", "could not determine a constructor for the tag '!sk-or-...(hidden)'"],
    ),
    (
        "a list tagged as a map",
        ONE_PROMPT + "    params: {extra_body: {x: !!map [1]}}\n",
        ["6:30:", "expected a mapping"],
    ),
    (
        "a duplicate in a merged mapping",
        ONE_PROMPT + "    params: {<<: {temperature: 1, temperature: 2}}\n",
        ["job.yaml:6:35:", "$.prompts[0].params.temperature duplicate key 'temperature'"],
    ),
    ("a set", ONE_PROMPT + "    params: {extra_body: !!set {a, b}}\n", ["job.yaml:6:26:", "a set (!!set)"]),
    (
        "pairs",  # verify20 V5: tuples slipped past every value check; a huge int in one was a traceback
        ONE_PROMPT + "    params: {extra_body: {foo: !!pairs [{a: 99999999999999999999999}]}}\n",
        ["job.yaml:6:32:", "a list of pairs (!!pairs) cannot be sent as JSON: write a mapping"],
    ),
    ("an ordered map", ONE_PROMPT + "    params: {metadata: !!omap [{b: c}]}\n", ["job.yaml:6:24:", "(!!omap)"]),
    # Past 64 levels through an alias: at the alias (its list, or its key), not at the shallow anchor (verify17 V7).
    (
        "an alias that goes too deep, in a list",
        ONE_PROMPT
        + "    params:\n      extra_body:\n        x: &a "
        + "[" * 40
        + "1"
        + "]" * 40
        + "\n        w: "
        + "[" * 30
        + "*a"
        + "]" * 30
        + "\n",
        ["job.yaml:9:41: nested deeper than 64 levels once aliases are expanded"],
    ),
    (
        "an alias that goes too deep, as a value",
        ONE_PROMPT
        + "    params:\n      extra_body:\n        x: &a "
        + "{k: " * 40
        + "1"
        + "}" * 40
        + "\n        w:\n          z: "
        + "{k: " * 20
        + "*a"
        + "}" * 20
        + "\n",
        ["job.yaml:10:91: nested deeper than 64 levels once aliases are expanded"],
    ),
    (
        "thresholds for a model and prompts the job lacks",  # break20 F3: a typo turned the gate off, exit 0
        ONE_PROMPT + "run: {pass_threshold: {models: {openai/gpt-4o-minii: 0.9}, prompts: {8: 0.5}}}\n",
        [
            "job.yaml:6:33: at $.run.pass_threshold.models.openai/gpt-4o-minii no model 'openai/gpt-4o-minii'",
            "job.yaml:6:70: at $.run.pass_threshold.prompts.8 no prompt '8' in prompts: this threshold would never",
        ],
    ),
    # break20: a key written twice is built with its last value, and that is where its error is (F1);
    # a number key among text keys is an unknown key like any (F2); an alias's name ends where libyaml ends it (F4), and
    # a BOM does not hide it (F5); a merge of an aliased scalar at the `<<`, not the anchor (F6).
    (
        "a key written twice, the last value wrong",
        ONE_PROMPT + "    params:\n      temperature: 0\n      max_tokens: 5\n      temperature: hot\n",
        ["job.yaml:9:7: at $.prompts[0].params.temperature duplicate key", "job.yaml:9:20: at $.prompts[0].params"],
    ),
    ("a number key among text keys", ONE_PROMPT + "8: 1\n", ["job.yaml:6:1: at $.8 unknown key '8'"]),
    (
        "an undefined alias as a flow key",
        ONE_PROMPT + "    params: {*nope: 1}\n",
        ["6:14: YAML error: found undefined alias 'nope':"],
    ),
    (
        "an undefined alias after a BOM",
        "\ufeffname: *nope\n",
        ["job.yaml:1:7: YAML error: found undefined alias 'nope'"],
    ),
    (
        "a merge of an aliased number",
        "name: x\nrepeat: &n 1\n" + ONE_PROMPT[8:] + "    params:\n      seed: 1\n      <<: *n\n",
        ["job.yaml:9:7: YAML error: expected a mapping or list of mappings for merging"],
    ),
    # break20 F13, F14: a key a dot, a space or nothing would make ambiguous is quoted in the path;
    # a date is named as the date it is, not as Python's datetime.date(2020, 1, 1).
    (
        "keys a path must quote",
        ONE_PROMPT + '    params: {"x y": 1, "a.b": 2, "": 3}\n',
        ['$.prompts[0].params["x y"] unknown', '$.prompts[0].params["a.b"] unknown', '$.prompts[0].params[""] unknown'],
    ),
    (
        "a date as a variable",
        ONE_PROMPT.replace('"hi"', '"{{d}}"') + "    vars: [{d: 2020-01-01}]\n",
        ["job.yaml:6:16: at $.prompts[0].vars[0].d '2020-01-01' reads as a date in YAML: quote it"],
    ),
    # break20 F12: the schema's oneOf of kinds said "'equals' is a required property".
    (
        "a check with no kind",
        ONE_PROMPT + "    checks: [{name: x}]\n",
        ["job.yaml:6:14: at $.prompts[0].checks[0] a check needs one kind: equals, contains,", "tool_call, judge"],
    ),
    (
        "a check with two kinds",
        ONE_PROMPT + "    checks: [{contains: x, regex: y}]\n",
        ["job.yaml:6:14: at $.prompts[0].checks[0] a check has one kind, not 2: contains, regex"],
    ),
    # break57 F3: a prompt was "a check", both was a Python dict "should not be valid under", a
    # content part's mistyped type "'image_url' is a required property".
    (
        "a prompt with text and messages",
        ONE_PROMPT + "    messages: [{role: user, content: hi}]\n",
        ["job.yaml:4:5: at $.prompts[0] a prompt has one kind, not 2: text, messages"],
    ),
    ("a prompt with neither", ONE_PROMPT.replace('    text: "hi"\n', ""), ["at $.prompts[0] a prompt needs one kind"]),
    (
        "a prompt with vars and a dataset",
        ONE_PROMPT + "    vars: [{a: 1}]\n    dataset: d.jsonl\n",
        ["job.yaml:4:5: at $.prompts[0] give vars or dataset, not both"],
    ),
    (  # out-184 F3: never read, so never checked: a dataset that is not there passed validate
        "a job dataset no prompt uses",
        ONE_PROMPT.replace("prompts:", "dataset: nope.jsonl\nprompts:") + "    vars: [{a: 1}]\n",
        ["job.yaml:3:10: at $.dataset is used by no prompt (each gives its own vars or dataset): remove it"],
    ),
    (
        "a judge with model and models",
        ONE_PROMPT + "judge: {model: openai/gpt-4o-mini, models: [openai/gpt-4o-mini]}\n",
        ["job.yaml:6:8: at $.judge give model or models, not both"],
    ),
    (
        "a content part's type mistyped",
        ONE_PROMPT.replace('    text: "hi"\n', "    messages: [{role: user, content: [{type: txt, text: hi}]}]\n"),
        ["at $.prompts[0].messages[0].content[0] a content part's type is one of text, image_url, file, input_audio,"],
    ),
    # break59 F6: a job's grace of 100,000 s kept a run 11 minutes past --deadline and SIGTERM.
    (
        "a grace past ten minutes",
        _job_with(**{"timeout_s: 5": "timeout_s: 5, grace_s: 100000"}),
        ["$.run.grace_s", "600"],
    ),
    ("a timeout past an hour", _job_with(**{"timeout_s: 5": "timeout_s: 100000"}), ["$.run.timeout_s", "3600"]),
    # break59 F3: compiled at load, it took all the machine's memory: a traceback, exit 1, at validate.
    (
        "a regex whose repeats multiply out",
        ONE_PROMPT + "    checks: [{regex: '((a{1000}){1000}){1000}'}]\n",
        ["at $.prompts[0].checks[0] invalid regex", "its nested repeats multiply out past 100,000 items"],
    ),
    # verify60 F2: the x flag, the regex module's \p{L}, atomic and conditional groups got past the count.
    (
        "a regex bomb under the x flag",
        ONE_PROMPT + "    checks: [{regex: '((a {1000}) {1000}) {1000}', flags: x}]\n",
        ["nested repeats"],
    ),
    (
        "a regex bomb after \\p{L}",
        ONE_PROMPT + "    checks: [{regex: '\\p{L}((a{1000}){1000}){1000}'}]\n",
        ["nested repeats"],
    ),
    (
        "a regex bomb with spaced braces",
        ONE_PROMPT + "    checks: [{regex: '(?x)((a{ 1000 }){ 1000 }){ 1000 }'}]\n",
        ["nested repeats"],
    ),
    ("an atomic regex bomb", ONE_PROMPT + "    checks: [{regex: '(?>(?>a{1000}){1000}){1000}'}]\n", ["nested repeats"]),
    # verify60 F6: passed validate, then each paid answer was an `internal` error, dropped.
    (
        "a json_schema pattern bomb",
        ONE_PROMPT + "    checks: [{json_schema: {type: string, pattern: '((a{1000}){1000}){1000}'}}]\n",
        ["json_schema: pattern '((a{1000}){1000}){1000}': its nested repeats multiply out"],
    ),
    # break57 F4: accepted, and dropped from the request without a word.
    (
        "a system beside messages",
        ONE_PROMPT.replace('    text: "hi"\n', '    system: "t"\n    messages: [{role: user, content: hi}]\n'),
        ["at $.prompts[0] give system or messages, not both (a prompt given as messages has its system message"],
    ),
    # break57 F1: passed validate, then every run retried "the endpoint failed" (exit 1), or was told
    # to change a locale that was UTF-8 already (exit 2).
    (
        "a title ending in a newline",
        ONE_PROMPT + "endpoint:\n  app_title: |\n    nightly eval\n",
        ["job.yaml:7:14: at $.endpoint.app_title it is sent as the X-Title header, which carries printable ASCII only"],
    ),
    (
        "an accented title",
        ONE_PROMPT + 'endpoint: {app_title: "Évaluation"}\n',
        ["at $.endpoint.app_title it is sent as the X-Title header", "no accented"],
    ),
    # verify58 F7: 9,000 characters passed validate, then every run was exit 1 (a header too long).
    ("a title too long", ONE_PROMPT + f"endpoint: {{app_title: {'t' * 9000}}}\n", ["9,000 characters", "at most 256"]),
    (
        "a referer with a newline",
        ONE_PROMPT + 'endpoint: {app_url: "https://a.example/\\nX: 1"}\n',
        ["HTTP-Referer header"],
    ),
    # verify27 N6: sent as 20.0, and hashed apart from 20: every answered row stale, bought again.
    (
        "a whole number written as a float",
        ONE_PROMPT + "    params: {max_tokens: 20.0}\n",
        ["job.yaml:6:26: at $.prompts[0].params.max_tokens 20.0 is not of type 'integer'"],
    ),
    # break28 m1: a weight of 1e154 was taken, and its results file then refused by every reader.
    (
        "a weight past a million",
        ONE_PROMPT + "    checks: [{contains: x, weight: 1.0e+154}]\n",
        ["$.prompts[0].checks[0].weight 1e+154 is greater than the maximum of 1000000"],
    ),
    # out-135 F3: "t\n" matched `^...$` as Python reads `$` (before a final newline): validate
    # said ok, and the run made the folder `outputs/t\n/`.
    (
        "names and ids ending in a newline",
        'name: "t\\n"\nmodels: ["openai/gpt-4o-mini\\n"]\nprompts:\n  - id: "p\\n"\n    text: "hi"\n',
        [
            "at $.name 't\\n': ASCII letters",
            "at $.models[0] 'openai/gpt-4o-mini\\n': a model id",
            "at $.prompts[0].id 'p\\n': ASCII letters",
        ],
    ),
    # out-135 F11: a function tool without its function, a forced one without a name, validated ok
    # and every row failed at the API (server tools, `openrouter:*`, have no function: still taken).
    (
        "a function tool without its function",
        ONE_PROMPT + "    params: {tools: [{type: function}, {type: openrouter:web_search}], "
        "tool_choice: {type: function, function: {}}}\n",
        [
            "at $.prompts[0].params.tools[0] 'function' is a required property",
            "at $.prompts[0].params.tool_choice.function 'name' is a required property",
        ],
    ),
    # out-137 7: a tool type misspelt, or a function name ending in a newline, validated ok and
    # every row failed at the API.
    (
        "a tool type or function name the API refuses",
        ONE_PROMPT + '    params: {tools: [{type: Function, function: {name: f}}, {type: ""}, {type: funtion}, '
        '{type: function, function: {name: "get weather"}}, {type: openrouter:web_search}, '
        "{type: web_search_preview}, {type: web_search_2025_08_26}, {type: openrouter:datetime}], "
        'tool_choice: {type: function, function: {name: "f\\n"}}}\n',
        [
            "at $.prompts[0].params.tools[0].type 'Function': not a tool type: function, a server tool",
            "at $.prompts[0].params.tools[1].type '': not a tool type",
            "at $.prompts[0].params.tools[2].type 'funtion': not a tool type",  # out-139 F1
            "at $.prompts[0].params.tools[3].function.name 'get weather': a function's name: ASCII letters",
            "at $.prompts[0].params.tool_choice.function.name 'f\\n': a function's name",
        ],
    ),
    # A server tool's name one typo off validated ok, and every row was a 400 at the API.
    (
        "a server tool's name misspelt",
        "name: x\ndefaults: {params: {tools: [{type: openrouter:websearch}]}}\n"
        "models: [{id: openai/gpt-4o-mini, params: {tools: [{type: web_search_previews}]}}]\n"
        "prompts:\n  - {id: p, text: hi, params: {tools: [{type: openrouter:datetime}, "
        "{type: openrouter:subagents}, {type: openrouter:fusiom}, {type: openrouter:bsah}, {type: openrouter:shel}]}}\n"
        "judge: {model: openai/gpt-4o-mini, params: {tools: [{type: openrouter:websearch}]}}\n",
        [
            "at $.defaults.params.tools[0].type 'openrouter:websearch' is not a server tool OpenRouter documents: "
            "did you mean 'openrouter:web_search'?",
            "at $.models[0].params.tools[0].type 'web_search_previews' is not a server tool OpenRouter documents: "
            "did you mean 'web_search_preview'?",
            "at $.prompts[0].params.tools[1].type 'openrouter:subagents' is not a server tool",
            # out-140 F1, F3: one letter off a short name; a grader's tools.
            "at $.prompts[0].params.tools[2].type 'openrouter:fusiom' is not a server tool OpenRouter documents: "
            "did you mean 'openrouter:fusion'?",
            "at $.prompts[0].params.tools[3].type 'openrouter:bsah' is not a server tool",
            "at $.judge.params.tools[0].type 'openrouter:websearch' is not a server tool",
            # A near miss of a tool the docs name for OpenRouter's other APIs is a typo too.
            "at $.prompts[0].params.tools[4].type 'openrouter:shel' is not a server tool OpenRouter documents: "
            "did you mean 'openrouter:shell'?",
        ],
    ),
    # out-139 F9: a tool_call check naming a function no tool declares validated ok, and failed every row.
    (
        "a tool_call check naming no declared function",
        ONE_PROMPT + "    params: {tools: [{type: function, function: {name: get_weather}}]}\n"
        "    checks: [{tool_call: get weather}, {tool_call: {name: get_weather}}, {tool_call: x, not: true}]\n"
        "  - {id: q, text: hi, checks: [{tool_call: get_weather}]}\n",
        [
            "at $.prompts[0].checks[0].tool_call names function 'get weather', which no tool this prompt sends to "
            "openai/gpt-4o-mini declares (get_weather): it could only fail",
            "at $.prompts[1].checks[0].tool_call names function 'get_weather', which no tool this prompt sends to "
            "openai/gpt-4o-mini declares (none)",
            # out-144 F8c: negated, a name no tool of the job declares could only pass.
            "at $.prompts[0].checks[2].tool_call names function 'x', which no tool of this job declares "
            "(get_weather): under not, it could only pass",
        ],
    ),
    (
        "a vars row's own tool_call check naming no declared function",
        ONE_PROMPT.replace('"hi"', '"hi {{v}}"')
        + "    params: {tools: [{type: function, function: {name: get_weather}}]}\n"
        "    vars: [{v: 1, checks: [{tool_call: get_wether}]}, {v: 2, checks: [{tool_call: get_weather}]}]\n",
        [
            "at $.prompts[0].vars[0] checks[0].tool_call: names function 'get_wether', which no tool prompt 'p' sends "
            "to openai/gpt-4o-mini declares (get_weather): it could only fail"
        ],
    ),
    # out-144 F1: templated, filled in from the row, it validated ok and failed its row.
    (
        "a templated tool_call check naming no declared function",
        ONE_PROMPT.replace('"hi"', '"hi {{fn}}"')
        + "    params: {tools: [{type: function, function: {name: get_weather}}]}\n"
        "    checks: [{tool_call: '{{fn}}'}]\n"
        "    vars: [{fn: get_wether}, {fn: get_weather, checks: [{tool_call: {name: 'x{{fn}}'}}]}]\n",
        [
            "at $.prompts[0].vars[0] a check filled in from this row: tool_call: names function 'get_wether', which "
            "no tool prompt 'p' sends to openai/gpt-4o-mini declares (get_weather): it could only fail",
            "at $.prompts[0].vars[1] checks[0].tool_call: names function 'xget_weather'",
        ],
    ),
    (
        "a default tool_call check naming a function a prompt does not declare",
        "name: x\nmodels: [openai/gpt-4o-mini]\ndefaults: {checks: [{tool_call: get_weather}]}\nprompts:\n"
        "  - {id: a, text: hi, params: {tools: [{type: function, function: {name: get_weather}}]}}\n"
        "  - {id: b, text: hi}\n",
        ["at $.defaults.checks[0].tool_call names function 'get_weather', which no tool prompt 'b' sends to"],
    ),
    # out-140 F4: a prompt's own tools replace the defaults' (as every param): a default check of
    # a function only the defaults declare could only fail on it, and validated ok.
    (
        "a tool_call check of a function a prompt's own tools replace",
        "name: x\nmodels: [openai/gpt-4o-mini, {id: m/y, params: {tools: [{type: function, function: {name: y}}]}}]\n"
        "defaults:\n  checks: [{tool_call: get_weather}]\n"
        "  params: {tools: [{type: function, function: {name: get_weather}}]}\nprompts:\n"
        "  - {id: a, text: hi}\n  - {id: b, text: hi, params: {tools: [{type: function, function: {name: other}}]}}\n",
        [
            "at $.defaults.checks[0].tool_call names function 'get_weather', which no tool prompt 'a' sends to m/y "
            "declares (y): it could only fail",
            "at $.defaults.checks[0].tool_call names function 'get_weather', which no tool prompt 'b' sends to "
            "openai/gpt-4o-mini declares (other)",
        ],
    ),
    # out-139 F4: a null where text or a mapping is wanted was said as Python's None.
    (
        "a null check value",
        ONE_PROMPT + "    checks: [{contains: null}, {tool_call: ~}]\n",
        [
            "at $.prompts[0].checks[0].contains is empty (null in YAML: nothing after the colon or the dash, or ~ "
            "or null): give a mapping or text",
            "at $.prompts[0].checks[1].tool_call is empty (null in YAML",
        ],
    ),
    # out-135 F7: the first key that is not text stopped validate: the others were one run each.
    (
        "every key that is not text",
        ONE_PROMPT + "    params: {logit_bias: {01: 5, 02: 3}}\n    on: 3\n",
        [
            "job.yaml:6:27: the key '01' reads as a number in YAML",
            "job.yaml:6:34: the key '02' reads as a number in YAML",
            "job.yaml:7:5: the key 'on' reads as true or false in YAML",
        ],
    ),
    # out-135 F8: over a job with no check anywhere, validate said ok and every run was exit 1.
    (
        "a threshold over a job without checks",
        ONE_PROMPT + "run: {pass_threshold: {overall: 0.8, models: {openai/gpt-4o-mini: 0.5}}}\n",
        [
            "at $.run.pass_threshold.overall no prompt of the job has a check: this threshold could never be checked",
            "at $.run.pass_threshold.models.openai/gpt-4o-mini no prompt of the job has a check",
        ],
    ),
    (
        "a number threshold over a job without checks",
        ONE_PROMPT + "run: {pass_threshold: 0.5}\n",
        ["at $.run.pass_threshold no prompt of the job has a check"],
    ),
    # out-137 2: a per-item gate over a job without checks validated ok; every run exited 1.
    (
        "a per-item threshold over a job without checks",
        ONE_PROMPT.replace("models:", "repeat: 3\nmodels:") + "run: {pass_threshold: {per_item: {min: 2, of: 3}}}\n",
        ["at $.run.pass_threshold.per_item no prompt of the job has a check: this threshold could never be checked"],
    ),
    # out-133 F7: of a threshold's object form, only the best of its errors was said, one a run.
    (
        "every error of a threshold object",
        ONE_PROMPT + "run: {pass_threshold: {overall: 1.5, models: {openai/gpt-4o-mini: 2}, per_item: {min: 0}}}\n",
        [
            "at $.run.pass_threshold.overall 1.5 is greater than the maximum of 1",
            "at $.run.pass_threshold.models.openai/gpt-4o-mini 2 is greater than the maximum of 1",
            "at $.run.pass_threshold.per_item 'of' is a required property",
            "at $.run.pass_threshold.per_item.min 0 is less than the minimum of 1",
        ],
    ),
    # break27 m8: a panel naming one grader twice paid it twice and counted its vote twice.
    (
        "a grader named twice",
        ONE_PROMPT + "    checks: [{judge: ok, grader: [a/b, a/b]}]\n",
        ["at $.prompts[0].checks[0].grader ['a/b', 'a/b'] has non-unique elements"],
    ),
    # A number key is a mapping's key, not a list's index (`params[8]`, verify17), and its line is the key's.
    ("a number key", ONE_PROMPT + "    params: {8: 1}\n", ["job.yaml:6:14: at $.prompts[0].params.8 unknown key '8'"]),
    (
        "two merge keys",  # PyYAML took both; YAML has one key per mapping
        ONE_PROMPT + "    params: {extra_body: {<<: {a: 1}, <<: {b: 2}}}\n",
        ["job.yaml:6:39:", "duplicate key '<<': merge them in one list, <<: [*a, *b]"],
    ),
    (
        "two merge keys, one spelt with its tag",  # break20 F20
        ONE_PROMPT + "    params: {extra_body: {<<: {a: 1}, !!merge b: {b: 2}}}\n",
        ["job.yaml:6:39:", "duplicate key '<<'"],
    ),
    (
        "an undefined alias of 100,000 characters",
        ONE_PROMPT + "    text2: *" + "n" * 100_000 + "\n",
        ["6:12: YAML error: found undefined alias '" + "n" * 57 + "...'"],
    ),
    (
        "an anchor defined twice",  # break20 F22: libyaml's message read backwards, without the name
        "name: x\nmodels: [&x openai/gpt-4o-mini]\nprompts:\n  - id: p\n    text: &x hi\n",
        ["job.yaml:5:11: YAML error: the anchor &x is defined twice: give each its own name (first defined at line 2"],
    ),
    (
        "an alias not in ASCII",  # break20 F21
        ONE_PROMPT.replace('"hi"', "*país"),
        ["job.yaml:5:14: YAML syntax error: did not find expected alphabetic or numeric character: an anchor's name"],
    ),
    (
        "indented with a tab",  # out-102 F11: "found character that cannot start any token"
        "name: x\nmodels:\n\t- id: openai/gpt-4o-mini\n",
        ["job.yaml:3:1: YAML syntax error: a tab: YAML is indented with spaces, never tabs"],
    ),
    # libyaml leaves the alias's name out of its message (PyYAML's own composer gives it).
    (
        "an undefined alias",
        ONE_PROMPT + "    params: {extra_body: *nope}\n",
        ["6:26: YAML error: found undefined alias 'nope'"],
    ),
    (
        "a merge of a number",
        ONE_PROMPT + "    params: {<<: 1}\n",
        ["6:14: YAML error: expected a mapping"],
    ),  # at the <<
    (
        "nested value inline",
        SMALL_JOB.replace("{country: Japan, expect: Tokyo}", "{country: {nested: 1}, expect: Tokyo}"),
        ["$.prompts[0].vars[1].country"],
    ),
    (  # break31 m5: "YAML syntax error" for a results file given in the job's place
        "a results file",
        '{"id":"0123456789abcdef0123","fingerprint":"x","status":"ok"}\n{"id":"1123456789abcdef0123"}\n',
        ["job.yaml:1:1: a batchrun results file (JSONL records), not a job file"],
    ),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("name", "text", "fragments"), JOB_CASES, ids=[c[0] for c in JOB_CASES])
def test_bad_job_files(tmp_path: Path, name: str, text: str | bytes, fragments: list[str]) -> None:
    job = tmp_path / "job.yaml"
    job.write_bytes((text if isinstance(text, bytes) else text.encode()).lstrip(b"\n"))
    unchanged = files_unchanged(tmp_path)
    started = time.process_time()
    runs: list[list[str | Path]] = [["validate", job], [job, "--simulate", "-q"], ["plan", job]]
    for args in runs:
        code, out, err = call_cli(*args)
        assert_refused(code, err, *fragments)
        assert out == ""
    assert time.process_time() - started < MAX_CPU_SECONDS
    unchanged()


def _fifo(folder: Path) -> Path:
    os.mkfifo(folder / "job.yaml")
    return folder / "job.yaml"


SPECIAL_FILES: list[tuple[str, Callable[[Path], Path], str]] = [
    ("/dev/zero", lambda _: Path("/dev/zero"), "not a regular file (a device or socket)"),
    ("fifo", _fifo, "not a regular file (a FIFO)"),
    ("folder", lambda d: d, "not a regular file (a folder)"),
    ("missing", lambda d: d / "nope.yaml", "no such job file"),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("name", "make", "fragment"), SPECIAL_FILES, ids=[c[0] for c in SPECIAL_FILES])
def test_job_files_that_are_not_regular_files(
    tmp_path: Path, name: str, make: Callable[[Path], Path], fragment: str
) -> None:
    path = make(tmp_path)
    code, _, err = call_cli("validate", path)
    assert_refused(code, err, str(path), fragment)
    assert len(err.splitlines()) == 1


# -- datasets ----------------------------------------------------------------------------------
DATASET_JOB = """
name: data
models: [openai/gpt-4o-mini]
prompts:
  - id: capital
    text: "Capital of {{country}}?"
    checks: [{icontains: "{{expect}}"}]
dataset: DATA
"""

DATASET_CASES: list[tuple[str, str, bytes, list[str]]] = [
    (
        "csv short row",
        "d.csv",
        b"country,expect\nFrance,Paris\nJapan\n",
        ["d.csv:3", "fewer fields than the header's 2"],
    ),
    # break48: "the matrix is empty", though prompts with rows of their own still have them.
    ("empty dataset", "d.jsonl", b"\n", ["dataset 'd.jsonl' has no rows: the prompts that read it would send nothing"]),
    # out-130 F9: a tab-separated file, one "not valid JSON" a line, nothing said of why.
    ("tsv", "d.tsv", b"country\texpect\n", ["d.tsv:1", "a file not named .csv is read as JSON lines"]),
    # out-152 F8: a JSON array of rows on one line: "a row must be a JSON object", nothing of why.
    (
        "json array",
        "d.jsonl",
        b'[{"country": "France", "expect": "Paris"}]\n',
        ["d.jsonl:1", "a row must be a JSON object of variables: a file not named .csv is read as JSON lines"],
    ),
    ("csv long row", "d.csv", b"country,expect\nFrance,Paris,x\n", ["d.csv:2", "more fields than the header names"]),
    # out-130 F5: only the first was named, where a JSONL file's are each (one validate a row).
    (
        "csv rows short and long",
        "d.csv",
        b'country,expect\nJapan\nFrance,Paris,x\nPeru,Lima\n"Chi\nle"\n',
        ["d.csv:2: fewer fields", "d.csv:3: more fields", "d.csv:5: fewer fields"],  # where its row began
    ),
    # break48 F1: a quote never closed read every later line into one field (4 rows became 2, exit 0).
    (
        "csv unclosed quote",
        "d.csv",
        b'country,expect\nFrance,Paris\n"Japan,Tokyo\nPeru,Lima\nChile,Santiago\n',
        ["d.csv:3", "a quoted field begun on this line is never closed"],
    ),
    ("csv quote then text", "d.csv", b'country,expect\n"Fra"nce,Paris\n', ["d.csv:2", "',' expected after '\"'"]),
    # break48 F4: lines ended by a lone CR were "do you need universal-newline mode?", no line.
    ("csv CR lines", "d.csv", b"country,expect\rFrance,Paris\r", ["d.csv:1", "a carriage return (CR) alone"]),
    ("csv spaced name", "d.csv", b"country, expect\nFrance,Paris\n", ["d.csv:1", "' expect' of the header begin"]),
    ("csv duplicate column", "d.csv", b"country,expect,country\nFrance,Paris,Japan\n", ["d.csv:1", "'country'"]),
    # break34 m3: a variable named '' was taken into `vars` and the row's id.
    ("csv unnamed column", "d.csv", b"country,,expect\nFrance,x,Paris\n", ["d.csv:1", "column(s) 2 of the header"]),
    (
        "jsonl unnamed key",
        "d.jsonl",
        b'{"country": "F", "expect": "P", " ": 1}\n',
        ["d.jsonl:1", "a variable with no name"],
    ),
    (
        "jsonl invisible key",
        "d.jsonl",
        b'{"country": "F", "expect": "P", "\\u200b\\u0000": 1}\n',
        ["d.jsonl:1", "a variable with no name"],
    ),
    ("csv invisible column", "d.csv", "country,\u200b,expect\nF,x,P\n".encode(), ["d.csv:1", "column(s) 2"]),
    ("csv empty expect", "d.csv", b"country,expect\nFrance,\n", ["d.csv:2", "'{{expect}}' is empty for this row"]),
    (
        "jsonl duplicate key",
        "d.jsonl",
        b'{"country": "France", "country": "Japan", "expect": "x"}\n',
        ["d.jsonl:1", "duplicate key 'country'"],
    ),
    (
        "jsonl nested value",
        "d.jsonl",
        b'{"country": {"nested": 1}, "expect": "x"}\n',
        ["d.jsonl:1", "variable 'country' is an object"],
    ),
    (
        "jsonl list value",
        "d.jsonl",
        b'{"country": [1], "expect": "x"}\n',
        ["d.jsonl:1", "variable 'country' is a list"],
    ),
    ("jsonl missing variable", "d.jsonl", b'{"country": "France"}\n', ["d.jsonl:1", "lacks variable(s) expect"]),
    (
        "jsonl not utf-8",
        "d.jsonl",
        b'{"country": "France", "expect": "Paris"}\n{"country": "\xff"}\n',
        ["d.jsonl:2", "not UTF-8"],
    ),
    ("csv not utf-8", "d.csv", b"country,expect\nFran\xe7e,Paris\n", ["d.csv:2", "not UTF-8"]),
    (
        "jsonl integer past 64 bits",
        "d.jsonl",
        b'{"country": "F", "expect": "P"}\n{"country": 123456789012345678901234567890, "expect": "P"}\n',
        ["d.jsonl:2", "more than 64 bits"],
    ),
    ("jsonl NaN", "d.jsonl", b'{"country": NaN, "expect": "P"}\n', ["d.jsonl:1", "NaN is not a JSON number"]),
    # break24 F3, F2: read as inf, sent as "inf" with `vars` null; valid JSON that is no text,
    # a traceback at the first request body (in a key no prompt uses too)
    ("jsonl 1e400", "d.jsonl", b'{"country": -1e400, "expect": "P"}\n', ["d.jsonl:1", "past what a number can hold"]),
    ("jsonl lone surrogate", "d.jsonl", b'{"country": "\\ud800", "expect": "P"}\n', ["d.jsonl:1", "surrogate"]),
    (
        "jsonl lone surrogate key",
        "d.jsonl",
        b'{"country": "F", "expect": "P", "\\udfff": 1}\n',
        ["d.jsonl:1", "surrogate"],
    ),
    ("jsonl deep nesting", "d.jsonl", b"[" * 100_000 + b"]" * 100_000 + b"\n", ["d.jsonl:1", "not valid JSON"]),
    (
        "jsonl bad check in row",
        "d.jsonl",
        b'{"country": "F", "expect": "P", "checks": [{"contains": "{{ x-y }}"}]}\n',
        ["d.jsonl:1", "not a valid placeholder"],
    ),
    # break34 M1: a row's checks of another shape were a traceback (exit 1) in every command.
    (
        "jsonl checks of text",
        "d.jsonl",
        b'{"country": "F", "expect": "P", "checks": ["x"]}\n',
        ["d.jsonl:1", "checks[0]"],
    ),
    (
        "jsonl checks of null",
        "d.jsonl",
        b'{"country": "F", "expect": "P", "checks": [null]}\n',
        ["d.jsonl:1", "checks[0]"],
    ),
    ("jsonl checks a number", "d.jsonl", b'{"country": "F", "expect": "P", "checks": 5}\n', ["d.jsonl:1", "checks: 5"]),
    # A row's own tool_call check naming a function no tool declares validated ok, and failed its row.
    (
        "jsonl tool_call check of an undeclared function",
        "d.jsonl",
        b'{"country": "F", "expect": "P", "checks": [{"tool_call": {"name": "lookup"}}]}\n',
        ["d.jsonl:1", "checks[0].tool_call: names function 'lookup', which no tool prompt 'capital' sends to"],
    ),
    (
        "csv checks column",
        "d.csv",
        b"country,expect,checks\nF,P,x\n",
        ["d.csv:2", "checks is 'x': a row's `checks` is its own list of checks"],
    ),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("name", "filename", "content", "fragments"), DATASET_CASES, ids=[c[0] for c in DATASET_CASES])
def test_bad_datasets(tmp_path: Path, name: str, filename: str, content: bytes, fragments: list[str]) -> None:
    (tmp_path / filename).write_bytes(content)
    job = write_job(tmp_path, DATASET_JOB.replace("DATA", filename))
    unchanged = files_unchanged(tmp_path)
    runs: list[list[str | Path]] = [["validate", job], [job, "--simulate", "-q"]]
    for args in runs:
        code, out, err = call_cli(*args)
        assert_refused(code, err, *fragments)
        # One line, or one a row named with its line ("d.csv:2: ...") where several are.
        assert len(err.splitlines()) == max(1, sum(fragment.count(":") == 2 for fragment in fragments))
    unchanged()


def test_a_row_whose_messages_render_past_the_bound_is_refused_at_validate(tmp_path: Path) -> None:
    # break59 F4: 20,000 placeholders of a 1 MB value validated, then built a 20 GB body: MemoryError,
    # a traceback, exit 1, in plan and run.
    (tmp_path / "d.jsonl").write_text(json.dumps({"country": "y" * 1_000_000, "expect": "x"}) + "\n")
    job = write_job(
        tmp_path, DATASET_JOB.replace("DATA", "d.jsonl").replace("Capital of {{country}}?", "{{country}}" * 40)
    )
    commands: list[list[str | Path]] = [["validate", job], ["plan", job], [job, "--simulate", "-q"]]
    for command in commands:
        code, out, err = call_cli(*command)
        assert code == ExitCode.USAGE and out == "" and err.count("\n") == 1, err
        assert "d.jsonl:1: the prompt's messages and checks render to about 40,000,451 characters" in err
    (tmp_path / "d.jsonl").write_text(json.dumps({"country": "y" * 100_000, "expect": "x"}) + "\n")
    assert call_cli("validate", job)[0] == ExitCode.OK  # 4 MB: a long context, not a bomb
    # verify60 F4: a check's template (a judge's rubric goes to the grader) counts too.
    rubric = DATASET_JOB.replace("DATA", "d.jsonl").replace(
        '{icontains: "{{expect}}"}', "{contains: '" + "{{country}}" * 400 + "'}"
    )
    code, _, err = call_cli("validate", write_job(tmp_path, rubric, "rubric.yaml"))
    assert code == ExitCode.USAGE and "render to about 40,104,423 characters" in err
    # verify61 F3: and so do a dataset row's own checks.
    own = {"country": "y" * 100_000, "expect": "x", "checks": [{"contains": "{{country}}" * 400}]}
    (tmp_path / "d.jsonl").write_text(json.dumps(own) + "\n")
    code, _, err = call_cli("validate", job)
    assert code == ExitCode.USAGE and "d.jsonl:1: the prompt's messages and checks render to about 44,004,851" in err


def test_validate_names_every_bad_row_of_a_dataset_up_to_a_screenful(tmp_path: Path) -> None:
    # break56 F9: only the first was named, though the README says validate reports all at once.
    ok = b'"country": "Peru", "expect": "Lima"'
    rows = b'{%s, "x": [1]}\n{%s, "y": "\\ud800"}\n{%s, "c": 1, "c": 2}\n\xff\n{%s, "z": NaN}\n' % ((ok,) * 4)
    (tmp_path / "d.jsonl").write_bytes(rows + b'{"country": "Chile", "expect": "Santiago"}\n')
    job = write_job(tmp_path, DATASET_JOB.replace("DATA", "d.jsonl"))
    code, out, err = call_cli("validate", job)
    assert code == ExitCode.USAGE and out == ""
    assert [line.split(": ")[1] for line in err.splitlines()] == [f"{tmp_path / 'd.jsonl'}:{n}" for n in range(1, 6)]
    assert "is a list" in err and "lone surrogate" in err and "duplicate key 'c'" in err and "not UTF-8" in err
    (tmp_path / "d.jsonl").write_bytes(b"{bad\n" * 100_000)
    code, _, err = call_cli("validate", job)
    assert (
        code == ExitCode.USAGE
        and len(err.splitlines()) == 21
        and err.endswith("and more rows like these: mend those first\n")
    )


@pytest.mark.timeout(30)
def test_a_dataset_rows_check_with_no_kind_says_so(tmp_path: Path) -> None:
    # break20 F12: a row's check read "{'name': 'x'} is not valid under any of the given schemas".
    (tmp_path / "d.jsonl").write_text('{"country": "France", "expect": "Paris", "checks": [{"name": "x"}]}\n')
    code, _, err = call_cli("validate", write_job(tmp_path, DATASET_JOB.replace("DATA", "d.jsonl")))
    assert_refused(code, err, "d.jsonl:1: checks[0]: a check needs one kind: equals, contains,")


def test_a_dataset_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "d.jsonl")
    (tmp_path / "folder.jsonl").mkdir()
    for name, kind in (("d.jsonl", "a FIFO"), ("folder.jsonl", "a folder")):
        job = write_job(tmp_path, DATASET_JOB.replace("DATA", name))
        code, _, err = call_cli("validate", job)
        # At the job's line, as a missing dataset is (verify20 V14: only the dataset was named).
        assert_refused(code, err, f"job.yaml:7:10: at $.dataset dataset file '{name}': cannot read dataset: not a")
        assert f"not a regular file ({kind})" in err


def test_symlink_loops_as_outputs_or_datasets_are_one_line_and_exit_2(tmp_path: Path) -> None:
    # break44 F5: Path.resolve raises RuntimeError on a loop (Python 3.11): a traceback, exit 1.
    for a, b in (("l1.jsonl", "l2.jsonl"), ("d1.jsonl", "d2.jsonl")):
        (tmp_path / a).symlink_to(b)
        (tmp_path / b).symlink_to(a)
    job = write_job(tmp_path, SMALL_JOB)
    for extra in ((), ("--resume",)):
        code, _, err = call_cli(job, "--simulate", "-q", "-o", tmp_path / "l1.jsonl", *extra)
        assert_refused(code, err, "l1.jsonl: Too many levels of symbolic links")
    looping = write_job(tmp_path, DATASET_JOB.replace("DATA", "d1.jsonl"), "looping.yaml")
    for args in (("validate", looping), (looping, "--simulate", "-q")):
        code, _, err = call_cli(*args)
        assert_refused(code, err, "at $.dataset dataset file 'd1.jsonl': cannot read dataset: Too many levels")


def test_a_csv_with_a_bom_and_unicode_variable_names_works(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_bytes(b"\xef\xbb\xbfpa\xc3\xads,expect\nFrance,Paris\n")
    job = write_job(tmp_path, DATASET_JOB.replace("DATA", "d.csv").replace("{{country}}", "{{país}}"))
    [request] = list(matrix_requests(load_job(job)))
    assert request.body["messages"][-1]["content"] == "Capital of France?"
    assert request.checks == [{"icontains": "Paris"}]


def test_validate_prints_one_line_per_good_file_unless_quiet(tmp_path: Path) -> None:
    a = write_job(tmp_path, SMALL_JOB, "a.yaml")
    b = write_job(tmp_path, SMALL_JOB, "b.yaml")
    assert call_cli("validate", a, b) == (0, f"{a}: ok (job small)\n{b}: ok (job small)\n", "")
    assert call_cli("validate", a, b, "--quiet") == (0, "", "")


# -- options and the environment ----------------------------------------------------------------
OPTION_CASES: list[tuple[str, list[str], list[str]]] = [
    ("timeout inf", ["--timeout", "inf"], ["--timeout: expected a finite number, got 'inf'"]),
    ("budget nan", ["--budget", "nan"], ["--budget: expected a finite number, got 'nan'"]),
    # break14c m8: Python's float() takes these; a budget is not written so.
    ("budget 1_000", ["--budget", "1_000"], ["--budget: expected a number, got '1_000'"]),
    ("budget full-width", ["--budget", "\uff11"], ["--budget: expected a number, got '\uff11'"]),
    ("concurrency too high", ["--concurrency", "1000000"], ["--concurrency: must be between 1 and 4096"]),
    ("concurrency not a number", ["--concurrency", "abc"], ["--concurrency: expected a whole number, got 'abc'"]),
    ("max attempts zero", ["--max-attempts", "0"], ["--max-attempts: must be between 1 and 100"]),
    ("grace negative", ["--grace", "-1"], ["--grace: must be 0 or more"]),
    ("base url not a url", ["--base-url", "notaurl"], ["--base-url: expected an http:// or https:// URL"]),
    ("base url with a query", ["--base-url", "http://127.0.0.1:9/api/v1?x=1"], ["--base-url: a base URL has no query"]),
    ("base url port out of range", ["--base-url", "http://127.0.0.1:201110/api/v1"], ["--base-url", "out of range"]),
    ("sim rate above 1", ["--simulate", "--sim", "fault.503=2"], ["--sim fault.503=2: a rate must be between 0 and 1"]),
    ("sim latency inf", ["--simulate", "--sim", "latency_ms=inf"], ["--sim latency_ms=inf: expected a finite number"]),
    (
        "sim latency negative",
        ["--simulate", "--sim", "latency_ms=-5"],
        ["--sim latency_ms=-5: expected a finite number of 0"],
    ),
    ("sim latency nan", ["--simulate", "--sim", "jitter_ms=nan"], ["--sim jitter_ms=nan: expected a finite number"]),
    (
        "sim latency a year",
        ["--simulate", "--sim", "latency_ms=3e10"],
        ["--sim latency_ms=3e10: must be at most 3,600,000"],
    ),
    (
        "sim negative price",
        ["--simulate", "--sim", "price.x/y=-1,1"],
        ["--sim price.x/y=-1,1: expected a finite number"],
    ),
    ("sim seed not whole", ["--simulate", "--sim", "seed=1.5"], ["--sim seed=1.5: expected a whole number"]),
    (
        "sim not a number",
        ["--simulate", "--sim", "latency_ms=abc"],
        ["--sim latency_ms=abc: expected a number, got 'abc'"],
    ),
    # out-144 F8: float() takes other scripts' digits, as every other number option does not.
    ("concurrency with an underscore", ["--concurrency", "1_6"], ["--concurrency: expected a whole number, got '1_6'"]),
    ("sim value with an underscore", ["--simulate", "--sim", "latency_ms=1_0"], ["expected a number, got '1_0'"]),
    ("sim fault of full-width digits", ["--simulate", "--sim", "fault.\uff15\uff10\uff13=1"], ["unknown fault"]),
    (
        "sim arabic digit",
        ["--simulate", "--sim", "fault.503=\u0660.\u0665"],
        ["expected a number, got '\u0660.\u0665'"],
    ),
    ("retry errors without resume", ["--retry-errors"], ["--retry-errors continues a run: use it with --resume"]),
    # break27 m5: a 1xx "fault" left each attempt hanging; a grader's shares above 1 were taken.
    (
        "sim fault not an error status",
        ["--simulate", "--sim", "fault.100=0.3"],
        ["--sim fault.100=0.3: unknown fault '100': use an HTTP error status (400-599)"],
    ),
    ("sim fault 200", ["--simulate", "--sim", "fault.200=1"], ["unknown fault '200'"]),
    ("sim judge bias above 1", ["--simulate", "--sim", "judge_bias=1.5"], ["a rate must be between 0 and 1"]),
    (
        "sim alias to no model",
        ["--simulate", "--sim", "alias.x=y"],
        ["--sim: 'y', an alias's target, is not a model of the simulator"],
    ),
    ("sim accuracy of no model", ["--simulate", "--sim", "accuracy.no/pe=0.5"], ["'no/pe', an accuracy's model"]),
    (
        "sim outcome misspelt",  # break20 F23: a typo simulated nothing, exit 0
        ["--simulate", "--sim", "batch_outcome=weird"],
        ["--sim batch_outcome=weird: expected one of completed | failed | expired | cancelled, got 'weird'"],
    ),
    # out-102 F5: one price was an IndexError traceback, exit 1; `byok=ture` simulated no BYOK.
    (
        "sim one price",
        ["--simulate", "--sim", "price.openai/gpt-4o-mini=0.5"],
        ["--sim price.openai/gpt-4o-mini=0.5: give prompt,completion[,request] (two or three numbers), got '0.5'"],
    ),
    ("sim private one price", ["--simulate", "--sim", "private.acme/x=1"], ["(two or three numbers), got '1'"]),
    ("sim four prices", ["--simulate", "--sim", "price.x/y=1,2,3,4"], ["(two or three numbers), got '1,2,3,4'"]),
    ("sim boolean misspelt", ["--simulate", "--sim", "byok=ture"], ["--sim byok=ture: use true or false, got 'ture'"]),
]


@pytest.mark.parametrize(("name", "extra", "fragments"), OPTION_CASES, ids=[c[0] for c in OPTION_CASES])
def test_bad_options(
    tmp_path: Path, name: str, extra: list[str], fragments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, SMALL_JOB)
    unchanged = files_unchanged(tmp_path)
    code, out, err = call_cli(job, "-o", tmp_path / "o.jsonl", *extra)
    assert_refused(code, err, *fragments)
    assert "_positive_int" not in err and len(err.splitlines()) == 1
    unchanged()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["report", "x.jsonl", "--json", "--markdown"], "argument --markdown: not allowed with argument --json"),
        (["diff", "a.jsonl", "b.jsonl", "--json", "--markdown"], "not allowed with argument --json"),
        (["history", "a.jsonl", "--json", "--markdown"], "not allowed with argument --json"),  # break35 F1
        (["simulate", "--port", "99999"], "argument --port: must be between 0 and 65535, got 99999"),
        (["run", "job.yaml", "--concurrency", "abc"], "argument --concurrency: expected a whole number, got 'abc'"),
    ],
)
def test_usage_errors_name_the_option(args: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = call_cli(*args)
    assert_refused(code, err, fragment)
    assert out == "" and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "key", ["sk-or-v1-abc\ndef", "sk-or-v1-abcé", "sk-or v1"], ids=["newline", "non-ascii", "space"]
)
def test_an_api_key_a_header_cannot_carry_is_one_line_without_the_key(
    tmp_path: Path, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = write_job(tmp_path, SMALL_JOB)
    monkeypatch.setenv("OPENROUTER_API_KEY", key)
    runs: list[list[str | Path]] = [
        [job, "--base-url", "http://127.0.0.1:9/api/v1", "-o", tmp_path / "k.jsonl"],
        ["plan", job],
    ]
    for args in runs:
        code, out, err = call_cli(*args)
        assert_refused(code, err, "$OPENROUTER_API_KEY holds a space, a newline or a non-ASCII character")
        assert "abc" not in err + out and len(err.splitlines()) == 1
    assert not (tmp_path / "k.jsonl").exists()
    # break50 F1: a library caller's key (RunOptions) was a bare UnicodeEncodeError holding the
    # whole key in its args, or a "network error" retried for seconds.
    for api_key, management_key in ((key, None), ("k", key)):
        with pytest.raises(ConfigError) as refused:
            RunOptions(api_key=api_key, management_key=management_key, output=tmp_path / "k.jsonl")
        assert "holds a space, a newline or a non-ASCII character" in str(refused.value)
        assert "abc" not in repr(refused.value) + repr(refused.value.args) and refused.value.__context__ is None
    with pytest.raises(ConfigError):
        OpenRouterClient("http://127.0.0.1:9/api/v1", key)
    assert not (tmp_path / "k.jsonl").exists()


def test_simulate_on_a_busy_port_fails_before_saying_it_listens(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = call_cli("simulate", "--port", str(port))
    assert_refused(code, err, f"simulator cannot listen on 127.0.0.1:{port}")
    assert "simulator on" not in err  # (a host that does not resolve takes the same path; not tested: no DNS)


def test_a_reply_cap_past_what_a_record_can_hold_is_refused(tmp_path: Path) -> None:
    # Verification of the break14h fixes (V7): with run.max_response_bytes at 64 MiB an answer
    # past the readers' 32 MiB line was paid, then stopped the run (exit 11), and every resume
    # paid for it again.
    job = write_job(tmp_path, SMALL_JOB.replace("run: {", "run: {max_response_bytes: 67108864, "))
    code, _, err = call_cli("validate", job)
    assert code == ExitCode.USAGE and "max_response_bytes" in err and "16777216" in err
    code, _, err = call_cli(write_job(tmp_path, SMALL_JOB), "--simulate", "--max-response-bytes", "67108864")
    assert code == ExitCode.USAGE and "--max-response-bytes" in err and "16777216" in err


def test_keys_in_messages_are_escaped_and_key_like_text_is_hidden(tmp_path: Path) -> None:
    # break17 F12, F20: a newline in a key started a second, forged error line; an escape sequence
    # reached the terminal; an API key pasted into the file was echoed into the CI log.
    secret = "sk-or-v1-" + "ab12" * 16
    job = write_job(
        tmp_path,
        'name: x\nmodels: [openai/gpt-4o-mini]\nprompts:\n  - id: p\n    text: "hi"\n'
        f'    "a\\nfake.yaml:1:1: forged\\u001b[31m": 1\n    {secret}: 2\nrepeat: "{secret}"\n',
    )
    code, _, err = call_cli("validate", job)
    assert_refused(code, err, "job.yaml:6:5:", "job.yaml:7:5:", "job.yaml:8:9:", "sk-or-...(hidden)")
    assert secret not in err and "\x1b" not in err
    lines = err.splitlines()
    # Five: the two unknown keys, the repeat's type, and the key-like key and value (verify20 V2).
    assert len(lines) == 5 and all(line.startswith("batchrun: ") for line in lines), err
    assert 'job.yaml:7:80: at $.prompts[0]["sk-or-...(hidden)"] looks like an OpenRouter API key' in err


KEY_LIKE_TEXT = "sk-or-v1-" + "cd34" * 16


@pytest.mark.parametrize(
    "field",
    [
        f'checks: [{{regex: "({KEY_LIKE_TEXT}"}}]',  # the regex's own error quoted it
        f"checks: [{{json_schema: {KEY_LIKE_TEXT}.json}}]",  # the missing file's name, twice
        f'checks: [{{json_schema: {{type: string, pattern: "({KEY_LIKE_TEXT}"}}}}]',  # jsonschema's message
        f"dataset: {KEY_LIKE_TEXT}.jsonl",
        "dataset: rows.jsonl",  # a row's checks, read from the dataset
    ],
    ids=["regex", "json_schema file", "json_schema pattern", "dataset file", "dataset rows"],
)
def test_no_message_about_a_job_or_its_rows_repeats_key_like_text(tmp_path: Path, field: str) -> None:
    # break20 F7: the YAML and schema messages hid key-like text; the other checks (regexes,
    # schemas in checks, files, dataset rows) echoed it whole into the CI log.
    rows = [{"a": 1, "checks": [{"regex": f"({KEY_LIKE_TEXT}"}]}, {"a": 2, "checks": [{KEY_LIKE_TEXT: 1}]}]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    job = write_job(
        tmp_path,
        ONE_PROMPT.replace('text: "hi"', 'text: "{{a}}"' if "rows" in field else 'text: "hi"') + f"    {field}\n",
    )
    runs: list[list[str | Path]] = [["validate", job], ["plan", job], [job, "--simulate", "-q"]]
    # A row's own checks holding key-like text are refused as such, quoting none (break44 F7).
    said = "variable 'checks' holds text that looks like an OpenRouter API key" if "rows" in field else "(hidden)"
    for args in runs:
        code, _, err = call_cli(*args)
        assert_refused(code, err, said)
        assert "cd34cd34" not in err


@pytest.mark.parametrize("where", ["dataset", "prompt", "row check"])
def test_a_request_that_would_carry_the_environments_key_is_refused_whatever_its_shape(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    # break63 F8: a key not shaped like OpenRouter's (`sk-proj-...`, for an OpenAI-compatible
    # endpoint) passed every key-like test in a dataset value: sent, written to the results
    # (vars and request) and stored in the cache. Refused before anything is sent.
    secret = "sk-proj-" + "Zq7" * 20
    monkeypatch.setenv("OPENROUTER_API_KEY", secret)
    value = {"dataset": secret, "prompt": "x", "row check": "x"}[where]
    row: dict[str, Any] = {"a": value}
    if where == "row check":
        row["checks"] = [{"contains": secret[3:30]}]
    (tmp_path / "rows.jsonl").write_text(json.dumps(row) + "\n")
    text = f"Tell me about {secret[:20]} {{{{a}}}}" if where == "prompt" else "{{a}}"
    job = write_job(tmp_path, ONE_PROMPT.replace('text: "hi"', f'text: "{text}"') + "    dataset: rows.jsonl\n")
    runs: list[list[str | Path]] = [
        ["plan", job, "--base-url", sim.base_url],
        [job, "--base-url", sim.base_url, "-o", tmp_path / "o.jsonl"],
    ]
    for args in runs:
        code, out, err = call_cli(*args)
        assert_refused(code, err, "holds a key of the environment", "keys belong in the environment")
        assert secret[:16] not in out + err and secret[-16:] not in out + err
    assert sim.stats.chat_requests == 0 and not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize("where", ["custom api_key_env", "grader prompt file", "judge params"])
def test_the_runs_own_key_and_the_graders_settings_are_checked_for_it_too(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    # verify66 6, 7: a key read through `endpoint.api_key_env: LLM_CRED` (a name no scrubber
    # knows) was sent in a dataset value, written to the results and cached; a key in the grader
    # prompt file or in judge.params went out in every grader request and into the cache.
    secret = "sk-proj-" + "Yw4" * 20
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    variable = "LLM_CRED" if where == "custom api_key_env" else "OPENROUTER_API_KEY"
    monkeypatch.setenv(variable, secret)
    value = secret if where == "custom api_key_env" else "x"
    (tmp_path / "rows.jsonl").write_text(json.dumps({"a": value}) + "\n")
    (tmp_path / "grader.txt").write_text(
        ("Key " + secret + "\n" if where == "grader prompt file" else "")
        + "<q-{{nonce}}>{{question}}</q-{{nonce}}> <r-{{nonce}}>{{rubric}}</r-{{nonce}}> "
        + "<answer-{{nonce}}>{{answer}}</answer-{{nonce}}>\n"
    )
    params = f"params: {{extra_body: {{note: {secret}}}}}, " if where == "judge params" else ""
    job = write_job(
        tmp_path,
        f"""
        name: x
        endpoint: {{api_key_env: {variable}}}
        judge: {{model: openai/gpt-4o-mini, {params}prompt: grader.txt}}
        models: [openai/gpt-4o-mini]
        prompts: [{{id: p, text: "{{{{a}}}}", dataset: rows.jsonl, checks: [{{judge: "brief"}}]}}]
        """,
    )
    code, out, err = call_cli(job, "--base-url", sim.base_url, "-o", tmp_path / "o.jsonl")
    assert_refused(code, err, "a key of the environment", "keys belong in the environment")
    assert secret[:16] not in out + err and sim.stats.chat_requests == 0 and not (tmp_path / "o.jsonl").exists()


def test_the_shared_parser_carries_nothing_from_one_call_to_the_next() -> None:
    # The parser is built once per process (break17 F11): a default list handed to one call and
    # added to by its caller became every later call's --sim settings.
    given = _shared_parser().parse_args(["run", "job.yaml"]).sim
    if given is not None:
        given.append("fault.503=1")
    assert not _shared_parser().parse_args(["run", "job.yaml"]).sim
    assert _shared_parser().parse_args(["run", "job.yaml", "--sim", "seed=1"]).sim == ["seed=1"]


@pytest.mark.parametrize(
    ("job_lines", "rows", "said"),
    [
        # verify20 V2: a key-like mapping key went into the body and every results row.
        (f"    params: {{metadata: {{{KEY_LIKE_TEXT}: x}}}}\n", None, "at $.prompts[0].params.metadata["),
        (f"    vars: [{{{KEY_LIKE_TEXT}: 1}}]\n", None, "at $.prompts[0].vars[0]["),
        # verify20 V4: a dataset value reached the terminal through a check's reason.
        (
            "    dataset: rows.jsonl\n",
            {"a": KEY_LIKE_TEXT},
            "rows.jsonl:1: variable 'a' looks like an OpenRouter API key",
        ),
        (
            "    dataset: rows.jsonl\n",
            {"a": 1, KEY_LIKE_TEXT: 2},
            "rows.jsonl:1: variable 'sk-or-...(hidden)' looks like",
        ),
        # break44 F7: a dataset row's own checks carried a key into the results.
        (
            "    dataset: rows.jsonl\n",
            {"a": 1, "checks": [{"not_contains": KEY_LIKE_TEXT}]},
            "rows.jsonl:1: variable 'checks' holds text that looks like an OpenRouter API key",
        ),
        ("    dataset: rows.jsonl\n", {"a": 1, "checks": [{"contains": "x", "name": KEY_LIKE_TEXT}]}, "'checks' holds"),
        # verify47 N5: a key split across a row's check and a variable, whole once filled in.
        (
            "    dataset: rows.jsonl\n",
            {"a": 1, "h": KEY_LIKE_TEXT[9:], "checks": [{"contains": "sk-or-v1-{{h}}"}]},
            "rows.jsonl:1: a check, filled in from this row, holds text that looks like an OpenRouter API key",
        ),
    ],
    ids=["mapping key", "variable name", "dataset value", "dataset column", "row check", "row check name", "split key"],
)
def test_key_like_text_anywhere_in_a_job_or_its_rows_is_refused(
    tmp_path: Path, job_lines: str, rows: dict[str, object] | None, said: str
) -> None:
    if rows is not None:
        (tmp_path / "rows.jsonl").write_text(json.dumps(rows) + "\n")
    job = write_job(tmp_path, ONE_PROMPT + job_lines)
    code, _, err = call_cli("validate", job)
    assert_refused(code, err, said, "looks like an OpenRouter API key")
    assert "cd34cd34" not in err


def test_a_row_that_makes_a_templated_regex_invalid_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    # verify20 V3: `x{{a}}` with a = "(" was sent, paid, and recorded as an internal error (retried
    # and paid again by --retry-errors); validate said ok.
    (tmp_path / "rows.jsonl").write_text('{"a": "fine"}\n{"a": "("}\n')
    job = write_job(
        tmp_path,
        ONE_PROMPT.replace('"hi"', '"Say {{a}}"') + '    dataset: rows.jsonl\n    checks: [{regex: "x{{a}}"}]\n',
    )
    unchanged = files_unchanged(tmp_path)
    runs: list[list[str | Path]] = [["validate", job], [job, "--simulate", "-q"]]
    for args in runs:
        code, _, err = call_cli(*args)
        assert_refused(code, err, "rows.jsonl:2: the check's regex 'x(' is invalid for this row: missing )")
    unchanged()


def test_key_like_text_typed_on_the_command_line_is_not_repeated(tmp_path: Path) -> None:
    # verify20 V6: an option's value or a file name that looks like a key was echoed whole.
    job = write_job(tmp_path, SMALL_JOB)
    runs: list[list[str | Path]] = [
        [job, "--simulate", "--budget", KEY_LIKE_TEXT],
        [job, "--simulate", "--sim", f"seed={KEY_LIKE_TEXT}"],
        ["report", tmp_path / f"{KEY_LIKE_TEXT}.jsonl"],
    ]
    for args in runs:
        code, _, err = call_cli(*args)
        assert code == ExitCode.USAGE and "sk-or-...(hidden)" in err and "cd34cd34" not in err, err


def test_a_dataset_name_the_locale_cannot_spell_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    # break36 F2: under LC_ALL=C with Python's UTF-8 mode off (file names ascii), a dataset named
    # `données.jsonl` was a traceback, exit 1, from Path.resolve().
    (tmp_path / "données.jsonl").write_text('{"country": "France", "expect": "Paris"}\n')
    job = write_job(tmp_path, DATASET_JOB.replace("DATA", "données.jsonl"))
    env = child_env(LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0")
    result = subprocess.run(
        [sys.executable, "-m", "batchrun", "validate", job.name],  # a relative job path: the name is the dataset's
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    err = result.stderr.decode("ascii", "replace")
    assert result.returncode == ExitCode.USAGE and "Traceback" not in err, err
    assert "cannot be spelled in this system's file-name encoding (ascii)" in err and err.count("\n") == 1, err


def test_a_dataset_that_cannot_be_copied_to_read_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The dataset is read through a private temporary copy: no temporary space is exit 2, one line.
    import tempfile

    def full() -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "TemporaryFile", full)
    (tmp_path / "d.jsonl").write_text('{"country": "France", "expect": "Paris"}\n')
    code, _, err = call_cli("validate", write_job(tmp_path, DATASET_JOB.replace("DATA", "d.jsonl")))
    assert_refused(code, err, "cannot make a private copy to read: No space left on device")
    assert len(err.splitlines()) == 1


def test_only_a_variable_is_told_to_quote_a_number_too_large_to_send(tmp_path: Path) -> None:
    # break48: a max_tokens of 10**30 was told "quote it to send it as text", which then failed the schema.
    huge = "1" + "0" * 30
    code, _, err = call_cli("validate", write_job(tmp_path, _job_with(**{"max_tokens: 32": f"max_tokens: {huge}"})))
    assert code == ExitCode.USAGE and "64 bits" in err and "quote" not in err
    code, _, err = call_cli("validate", write_job(tmp_path, SMALL_JOB.replace("country: Japan", f"country: {huge}")))
    assert code == ExitCode.USAGE and "country is an integer too large to send" in err and "quote it" in err
    # out-143 3: past Python's 4,300 digits (int() raises ValueError), a dataset's was a traceback, exit 1.
    for digits in (4300, 4301, 100_000):
        (tmp_path / "d.jsonl").write_text('{"country": ' + "9" * digits + ', "expect": "x"}\n')
        code, _, err = call_cli("validate", write_job(tmp_path, DATASET_JOB.replace("DATA", "d.jsonl")))
        assert_refused(code, err, "d.jsonl:1: the number 999999999999999999999999... is an integer too large to send")


def test_run_options_take_an_output_as_text_and_refuse_a_nul_in_it() -> None:
    # break50 F2: a str output was an AttributeError mid-run, a NUL byte a bare ValueError.
    assert RunOptions(api_key=None, output="out.jsonl").output == Path("out.jsonl")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="NUL byte"):
        RunOptions(api_key=None, output=Path("out\0.jsonl"))


@pytest.mark.parametrize("shard", [(0, 2), (3, 2), (1, 0), (-1, 2), (True, 2), (1.0, 2)])
def test_a_shard_the_cli_would_refuse_is_a_config_error_for_a_library_caller(shard: tuple[Any, Any]) -> None:
    # break56 F3: Shard(0, 2), as a loop counting from 0 makes it, ran no row and said "complete";
    # Shard(1, 0) was a ZeroDivisionError.
    with pytest.raises(ConfigError, match=r"a shard is K/N with 1 <= K <= N"):
        Shard(*shard)


@pytest.mark.parametrize("text", ["x", "0/2", "3/2", "1/0", "1/2/3", "", "1/²", "1/" + "9" * 5000])
def test_a_shard_text_the_cli_would_refuse_is_a_config_error_for_a_library_caller(text: str) -> None:
    # Shard.parse raised a ValueError, outside batchrun's one exception tree, where Shard(0, 2) is a ConfigError.
    with pytest.raises(ConfigError, match=r"--shard takes K/N with 1 <= K <= N"):
        Shard.parse(text)


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"shard": "1/2"}, "RunOptions.shard is a batchrun.Shard"),  # was a TypeError mid-run
        ({"base_url": "ftp://x/"}, "RunOptions.base_url: expected an http:// or https:// URL"),  # a "server" failure
        ({"base_url": "notaurl"}, "RunOptions.base_url: expected an http:// or https:// URL"),
    ],
)
def test_run_options_the_cli_would_refuse_are_a_config_error(options: dict[str, Any], said: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(said)):
        RunOptions(api_key=None, **options)


@pytest.mark.parametrize("given", [b"job.yaml", {"name": "x"}, None, Path("job\0.yaml")])
def test_load_job_takes_a_path_and_says_so_for_anything_else(given: Any) -> None:
    # break56 F8: a TypeError or a ValueError, outside batchrun's one exception tree.
    with pytest.raises(ConfigError, match=r"load_job takes the job file's path"):
        load_job(given)


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"output": 5}, "RunOptions.output is a path (or None), not a int"),  # an AttributeError once begun
        ({"api_key": 12345}, "RunOptions.api_key is a str (or None), not a int"),  # a TypeError
        ({"management_key": b"sk"}, "RunOptions.management_key is a str (or None), not a bytes"),
    ],
)
def test_run_options_of_the_wrong_type_are_a_config_error(options: dict[str, Any], said: str) -> None:
    # break68 F3: Python's own errors, outside the one exception tree the README promises.
    with pytest.raises(ConfigError, match=re.escape(said)):
        RunOptions(**{"api_key": None, **options})


def test_run_options_take_any_path_like_output(tmp_path: Path) -> None:
    class Where:
        def __fspath__(self) -> str:
            return str(tmp_path / "o.jsonl")

    assert RunOptions(api_key=None, output=Where()).output == tmp_path / "o.jsonl"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        ({"job": "job.yaml"}, "run_job takes a Job, as load_job(path) returns it, not a str"),
        ({"job": {"name": "x"}}, "run_job takes a Job, as load_job(path) returns it, not a dict"),
        ({"options": {"api_key": None}}, "run_job takes its options as a RunOptions, not a dict"),
        ({"control": object()}, "run_job's control is a RunControl (or None), not a object"),
        ({"on_record": 5}, "run_job's on_record is called with each record: a int cannot be"),
        ({"on_start": "x"}, "run_job's on_start is called with each run's row count: a str cannot be"),
        ({"notice": 1.5}, "run_job's notice is called with each notice: a float cannot be"),
    ],
)
async def test_run_job_arguments_of_the_wrong_type_are_refused_before_anything_is_sent(
    tmp_path: Path, sim: Simulator, arguments: dict[str, Any], said: str
) -> None:
    # break68 F3, F4: on_record=5 sent and paid every row, then raised a TypeError and the run's
    # report was lost; a path in the job's place was "'str' object has no attribute 'run'".
    out = tmp_path / "o.jsonl"
    given: dict[str, Any] = {
        "job": load_job(write_job(tmp_path, SMALL_JOB)),
        "options": RunOptions(api_key="sk-or-v1-" + "ab" * 32, base_url=sim.base_url, output=out),
        **arguments,
    }
    with pytest.raises(ConfigError, match=re.escape(said)) as raised:
        await run_job(**given)
    assert sim.stats.chat_requests == 0 and not out.exists()
    assert "ab" * 32 not in str(raised.value)


async def test_run_options_changed_after_they_were_made_are_checked_by_run_job(tmp_path: Path, sim: Simulator) -> None:
    # verify69 F7: `options.output = "x.jsonl"` (the type the constructor takes) was an AttributeError.
    options = RunOptions(api_key="sk-or-v1-" + "ab" * 32, base_url=sim.base_url)
    options.output = str(tmp_path / "x.jsonl")  # type: ignore[assignment]
    report = await run_job(load_job(write_job(tmp_path, SMALL_JOB)), options)
    assert report.output == tmp_path / "x.jsonl" and report.verdict()[0] == ExitCode.OK
    for name, value in (("output", 5), ("api_key", 12345), ("shard", "1/2")):
        options = RunOptions(api_key="sk-or-v1-" + "ab" * 32, base_url=sim.base_url, output=tmp_path / "y.jsonl")
        setattr(options, name, value)
        with pytest.raises(ConfigError, match=f"RunOptions.{name}"):
            await run_job(load_job(write_job(tmp_path, SMALL_JOB)), options)
    assert not (tmp_path / "y.jsonl").exists()


@pytest.mark.parametrize("threshold", [80, 1.5, -0.1, "0.9", float("nan"), True])
async def test_a_verdicts_pass_threshold_is_a_rate_as_the_cli_takes_it(
    tmp_path: Path, sim: Simulator, threshold: Any
) -> None:
    # break68 F4: 80 (a percentage) read as 8000% and failed the run; "0.9" was a TypeError.
    options = RunOptions(api_key="sk-or-v1-" + "ab" * 32, base_url=sim.base_url, output=tmp_path / "o.jsonl")
    report = await run_job(load_job(write_job(tmp_path, SMALL_JOB)), options)
    assert report.verdict(pass_threshold=0.5)[0] == ExitCode.OK
    with pytest.raises(ConfigError, match="pass_threshold"):
        report.verdict(pass_threshold=threshold)


def test_a_job_closes_its_datasets_copies_and_one_dropped_warns_of_nothing(tmp_path: Path) -> None:
    # break56 F8: each loaded job kept its dataset's private copy open with no way to close it,
    # and one dropped was a ResourceWarning (a suite under -W error failed).
    (tmp_path / "d.jsonl").write_text('{"country": "France", "expect": "Paris"}\n')
    path = write_job(tmp_path, DATASET_JOB.replace("DATA", "d.jsonl"))

    def open_files() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_files()
    jobs = [load_job(path) for _ in range(5)]
    assert open_files() == before + 5
    for job in jobs:
        job.close()
        job.close()  # twice is harmless
    assert open_files() == before
    assert len(list(matrix_requests(jobs[0]))) == 1  # read again after close
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        job = load_job(path)
        del job, jobs
        gc.collect()
    assert open_files() == before


@pytest.mark.parametrize("where", ["under a file", "a name too long", "in /proc"])
async def test_an_output_the_file_system_refuses_is_a_config_error_for_a_library_caller(
    tmp_path: Path, sim: Simulator, where: str
) -> None:
    # break50 F2: it reached run_job's caller as the bare OSError, outside the one exception tree.
    (tmp_path / "afile").write_text("")
    output = {
        "under a file": tmp_path / "afile" / "out.jsonl",
        "a name too long": tmp_path / ("x" * 300 + ".jsonl"),
        "in /proc": Path("/proc/out.jsonl"),
    }[where]
    options = RunOptions(api_key=None, base_url=sim.base_url, output=output)
    with pytest.raises(ConfigError) as caught:
        await run_job(load_job(write_job(tmp_path, SMALL_JOB)), options)
    assert isinstance(caught.value.__cause__, OSError) and str(output.parent) in str(caught.value)
    assert sim.stats.chat_requests == 0 and sim.stats.first_request is None


@pytest.mark.parametrize(
    ("error", "code"),
    # EFBIG: a file-size limit (ulimit -f) at the lock was exit 2 too (out-108 F4)
    [(errno.ENOSPC, ExitCode.IO), (errno.EIO, ExitCode.IO), (errno.EFBIG, ExitCode.IO), (errno.EACCES, ExitCode.USAGE)],
)
def test_a_disk_with_no_room_before_the_run_is_exit_11_not_a_bad_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: int, code: ExitCode
) -> None:
    # break51 F6: a full disk at the start was exit 2 ("fix the job"), the same disk with 4 KiB
    # left exit 11 ("fix the machine"): a cron wrapper routing by the code misrouted it.
    def refused(lock: OutputLock) -> None:
        raise OSError(error, os.strerror(error), str(lock.path))

    monkeypatch.setattr(OutputLock, "acquire", refused)
    out = tmp_path / "out.jsonl"
    got, _, err = call_cli(write_job(tmp_path, SMALL_JOB), "--simulate", "-o", out)
    assert (got, err) == (code, f"batchrun: {out}.lock: {os.strerror(error)}\n")


@pytest.mark.parametrize(
    "args",
    [
        ["report", "."],
        ["report", "/"],
        ["report", ""],
        ["merge", "o.jsonl", "."],
        ["batches", "list", "."],
        ["diff", "a.jsonl", "."],
    ],
)
def test_a_results_path_that_names_a_folder_is_one_line_exit_2(args: list[str]) -> None:
    # break65 F4: `report .` (or an unset "$OUT") was a ValueError traceback and exit 1, which
    # cron reads as rows in error.
    code, _, err = call_cli(*args)
    assert_refused(code, err, "names a folder, not a results file")
    assert err.count("\n") == 1


def test_a_wide_csv_header_is_read_in_one_pass(tmp_path: Path) -> None:
    # break65 F3: each column name was counted over the whole header: 100,000 columns held
    # start-up 339 s (validate alone 691 s at 300,000), deaf to the deadline and to SIGTERM.
    # Linear now: the suite's timeout (120 s) is far beyond what this takes (~0.3 s).
    names = [f"c{i}" for i in range(100_000)] + ["c7"]
    (tmp_path / "w.csv").write_text(",".join(names) + "\n" + ",".join("x" * len(names)) + "\n")
    job = write_job(
        tmp_path, 'name: w\nmodels: [openai/gpt-4o-mini]\nprompts: [{id: p, text: "hi {{c1}}", dataset: w.csv}]\n'
    )
    code, _, err = call_cli("validate", job)
    assert_refused(code, err, "w.csv:1", "duplicate column(s) 'c7' in the header")
    # verify67 F6: 50,000 duplicates made one line of 489 KB: ten are named, the rest counted.
    (tmp_path / "w.csv").write_text(",".join(names + names[:50_000]) + "\n" + ",".join("x" * 150_001) + "\n")
    code, _, err = call_cli("validate", job)
    assert_refused(code, err, "w.csv:1", "'c10004' and 49,990 more in the header")
    assert len(err) < 500


def test_words_that_only_contain_sk_or_are_not_keys(tmp_path: Path) -> None:
    # break65 F5: "risk-or-reward" in a prompt, "desk-or-tablet" in a variable and a folder named
    # task-or-project were refused, or hidden in every message, as OpenRouter keys.
    folder = tmp_path / "task-or-project"
    folder.mkdir()
    job = write_job(
        folder,
        "name: x\nmodels: [openai/gpt-4o-mini]\nprompts:\n  - id: p\n"
        '    text: "Is this a risk-or-reward case for {{who}}?"\n    vars: [{who: "a desk-or-tablet buyer"}]\n',
    )
    code, out, err = call_cli("validate", job)
    assert (code, err) == (0, "") and "task-or-project" in out
    code, _, err = call_cli(
        "validate", write_job(folder, ONE_PROMPT.replace("hi", "sk-or-v1-0123456789abcdef"), "k.yaml")
    )
    assert_refused(code, err, "looks like an OpenRouter API key")  # a key where a word begins still is one


def test_a_variable_yaml_would_read_as_something_else_is_refused_and_booleans_render_as_json(tmp_path: Path) -> None:
    # break65 F2: `country: NO` asked "What is the capital of False?", a zip code 02134 was sent
    # as 1116 and 12:30:00 as 45000, validate ok; a JSONL dataset's `true` was sent "True".
    job = write_job(
        tmp_path,
        """
        name: norway
        models: [openai/gpt-4o-mini]
        prompts:
          - id: p
            text: "Capital of {{country}}? Zip {{zip}} at {{time}}"
            vars:
              - {country: NO, zip: 02134, time: "1"}
              - {country: Norway, zip: "0777", time: 12:30:00}
              - {country: true, zip: 0, time: 10}
        """,
    )
    code, _, err = call_cli("validate", job)
    assert_refused(
        code,
        err,
        "job.yaml:7:19: at $.prompts[0].vars[0].country 'NO' reads as the boolean false in YAML 1.1: quote it",
        "job.yaml:7:28: at $.prompts[0].vars[0].zip '02134' reads as an octal number (its leading 0)",
        "job.yaml:8:46: at $.prompts[0].vars[1].time '12:30:00' reads as a number in base 60 (its colons)",
    )
    assert err.count("\n") == 3  # `true`, 0 and 10 are what they look like
    (tmp_path / "d.jsonl").write_text('{"q": "Is water wet?", "flag": true}\n')
    flagged = write_job(
        tmp_path,
        'name: f\nmodels: [openai/gpt-4o-mini]\nprompts: [{id: p, text: "{{q}} {{flag}}", dataset: d.jsonl}]\n',
        "f.yaml",
    )
    assert call_cli(flagged, "--simulate", "-q", "-o", tmp_path / "f.jsonl")[0] == 0
    assert read_rows(tmp_path / "f.jsonl")[0]["request"]["messages"][-1]["content"] == "Is water wet? true"


def test_a_runs_summary_given_for_its_results_or_for_the_job_is_named_as_such(tmp_path: Path) -> None:
    # break65 F7: `report r.summary.json` said "not JSON" of a JSON file; in the job's place it
    # gave 33 lines of unknown keys.
    job = write_job(tmp_path, SMALL_JOB)
    assert call_cli(job, "--simulate", "-q", "-o", tmp_path / "r.jsonl")[0] == 0
    summary = tmp_path / "r.summary.json"
    for command in (["report"], ["history"], ["merge", "-o", tmp_path / "m.jsonl"], ["diff", tmp_path / "r.jsonl"]):
        # history and merge had said "not JSON" too (verify67)
        code, _, err = call_cli(*command, summary)
        assert_refused(code, err, "the summary a run writes beside its results: give", "r.jsonl")
    given: list[list[str | Path]] = [["validate", summary], [summary, "--simulate"]]
    for args in given:
        code, _, err = call_cli(*args)
        assert_refused(code, err, "r.summary.json:1:1: the summary a run writes beside its results (r.jsonl)")
        assert err.count("\n") == 1


def test_validate_names_every_bad_inline_row_as_it_does_a_datasets(tmp_path: Path) -> None:
    # break65 F6: inline `vars` stopped at the first bad row; the same rows in a dataset were each named.
    text = 'name: inl\nmodels: [openai/gpt-4o-mini]\nprompts:\n  - id: p\n    text: "{{a}} {{e}}"\n    vars:\n'
    text += "".join(f"      - {row}\n" for row in ("{a: 1}", "{a: 2}", "{a: 3, e: 1}", "{a: 4}", "{a: 3, e: 1}"))
    code, _, err = call_cli("validate", write_job(tmp_path, text))
    assert_refused(code, err, "job.yaml:7:9: at $.prompts[0].vars[0] row lacks", "job.yaml:8:9:", "job.yaml:10:9:")
    assert "job.yaml:11:9: at $.prompts[0].vars[4] the same variables as vars[2] (line 9)" in err
    assert err.count("\n") == 4


def test_a_number_that_reads_otherwise_than_written_and_a_key_after_a_letter(tmp_path: Path) -> None:
    # verify67 F2: `python: 3.10` was sent as "Python 3.1"; F5: a real key right after a letter or
    # a digit (`key%3Dsk-or-v1-...`, an encoded URL) passed once keys were matched at word starts.
    text = 'name: f\nmodels: [openai/gpt-4o-mini]\nprompts:\n  - id: p\n    text: "{{v}}"\n'
    text += "    vars: [{v: 3.10}, {v: 1.5}, {v: 2.0}, {v: +44}, {v: -7}]\n"
    code, _, err = call_cli("validate", write_job(tmp_path, text))
    assert_refused(code, err, "vars[0].v '3.10' reads as the number 3.1 in YAML 1.1: quote it")
    assert "vars[3].v '+44' reads as the number 44" in err  # verify68 F5: a dialling code
    assert err.count("\n") == 2  # 1.5, 2.0 and -7 read as written
    url = "https://x.test/?key%3Dsk-or-v1-" + "0123456789abcdef" * 4
    code, _, err = call_cli("validate", write_job(tmp_path, ONE_PROMPT.replace("hi", url), "k.yaml"))
    assert_refused(code, err, "looks like an OpenRouter API key")


def test_a_param_yaml_reads_as_an_octal_or_base_60_number_is_refused(tmp_path: Path) -> None:
    # verify67 F4: `seed: 0777` was sent as 511 and `12:30:00` in extra_body as 45000; `no`,
    # 0.70 and 1_000 there mean what YAML reads (false, 0.7, 1000), and pass.
    text = "name: f\nmodels: [openai/gpt-4o-mini]\ndefaults:\n  params:\n    seed: 0777\n    temperature: 0.70\n"
    text += "    max_tokens: 1_000\n    extra_body: {region: no, at: 12:30:00}\nprompts: [{id: p, text: hi}]\n"
    code, _, err = call_cli("validate", write_job(tmp_path, text))
    assert_refused(code, err, "job.yaml:5:11: at $.defaults.params.seed '0777' reads as an octal number")
    assert "$.defaults.params.extra_body.at '12:30:00' reads as a number in base 60" in err and err.count("\n") == 2


def test_a_key_of_the_environment_anywhere_in_the_job_file_is_refused_before_any_call(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # verify68 F2-F4: the key (not shaped like OpenRouter's) in endpoint.app_title went out in
    # the X-Title and HTTP-Referer headers; in a model id, in a GET of its endpoints before the
    # refusal; in the job's name, into the results, the summary and the output folder's name.
    secret = "sk-proj-" + "Qx5" * 20
    monkeypatch.setenv("OPENROUTER_API_KEY", secret)
    job = write_job(
        tmp_path,
        f'name: "run-{secret}"\nendpoint: {{app_title: "t {secret}"}}\n'
        f"models: [openai/gpt-4o-mini, 'openai/gpt-4o-mini:{secret}']\nprompts: [{{id: p, text: hi}}]\n",
    )
    code, out, err = call_cli(job, "--base-url", sim.base_url, "-o", tmp_path / "o.jsonl")
    assert_refused(
        code, err, "job.yaml:1:7: at $.name holds a key of the environment", "$.endpoint.app_title", "$.models[1]"
    )
    assert secret[:16] not in out + err and sim.stats.chat_requests == 0 and not (tmp_path / "o.jsonl").exists()


def test_a_prompts_typo_is_said_once_and_names_the_prompt(tmp_path: Path) -> None:
    # break65 F6: `{{contry}}` in the third of three prompts sharing the dataset was a line per
    # row, "used by the prompt", naming none.
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"country": c}) + "\n" for c in "ABCDE"))
    text = "name: t\nmodels: [openai/gpt-4o-mini]\ndataset: d.jsonl\nprompts:\n"
    text += "".join(
        f'  - {{id: p{n}, text: "{{{{{name}}}}}"}}\n' for n, name in ((1, "country"), (2, "country"), (3, "contry"))
    )
    code, _, err = call_cli("validate", write_job(tmp_path, text))
    assert_refused(code, err, "d.jsonl:1: row lacks variable(s) contry used by prompt 'p3' (and 4 more row(s) alike)")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("header", "dataset", "fragment"),
    [
        (
            "country\texpect",
            "d.csv",
            "d.csv:2: row lacks variable(s) country, expect used by prompt 'p': the file's header "
            "is one column, 'country\\texpect': is the file comma-separated?",
        ),
        (
            "pai\u0301s,expect",
            "d.csv",
            "row lacks variable(s) país used by prompt 'p': the file's 'pai\u0301s' is "
            "written in other Unicode code points (save it in NFC)",
        ),
        ("country,expect", "sub/d.csv", "dataset file 'sub/d.csv' does not exist ("),
    ],
    ids=["tab-separated", "decomposed-unicode", "relative-to-the-job"],
)
def test_a_dataset_that_does_not_read_as_written_says_why(
    tmp_path: Path, header: str, dataset: str, fragment: str
) -> None:
    # out-102 F10: "row lacks variable(s) país" beside a column that looks the same; a tab-separated
    # .csv; a path written from the working folder, "does not exist" beside the file.
    (tmp_path / "d.csv").write_text(f"{header}\nFrance{header[-7]}Paris\n", encoding="utf-8")  # its separator
    name = "país" if "\u0301" in header else "country"
    text = "name: t\nmodels: [openai/gpt-4o-mini]\nprompts:\n"
    text += f'  - {{id: p, text: "{{{{{name}}}}} {{{{expect}}}}", dataset: {dataset}}}\n'
    code, _, err = call_cli("validate", write_job(tmp_path, text))
    assert_refused(code, err, fragment)
    if dataset.startswith("sub/"):
        assert f"({tmp_path / 'sub' / 'd.csv'}: relative to the job file)" in err


def test_a_type_error_yaml_made_says_so(tmp_path: Path) -> None:
    # verify68 F7: `equals: NO` read "False is not of type 'string'", `budget_usd: 1e-9`
    # "'1e-9' is not of type 'number'" (YAML 1.1 reads an exponent without a dot as text).
    text = "name: t\nmodels: [openai/gpt-4o-mini]\nprompts: [{id: p, text: hi, checks: [{equals: NO}]}]\n"
    text += "run: {budget_usd: 1e-9, deadline_s: 1.0e3, timeout_s: 2.5e3, max_wait_s: 1e3}\n"
    code, _, err = call_cli("validate", write_job(tmp_path, text))
    # The spelling it advises is one YAML 1.1 reads as a number: "write 1.0e3" was refused too (out-130 F3).
    why = "reads as text in YAML 1.1 (an exponent needs a dot and a sign): write"
    assert_refused(
        code,
        err,
        "$.prompts[0].checks[0].equals reads as the boolean false in YAML (yes, no, on and off too): quote it",
        f"$.run.budget_usd '1e-9' {why} 1.0e-9",
        f"$.run.deadline_s '1.0e3' {why} 1.0e+3",
        f"$.run.timeout_s '2.5e3' {why} 2.5e+3",
        f"$.run.max_wait_s '1e3' {why} 1.0e+3",
    )
    advised = text.replace("NO", "'NO'").replace("1e-9", "1.0e-9").replace("1.0e3", "1.0e+3")
    advised = advised.replace("2.5e3", "2.5e+3").replace("1e3", "1.0e+3")
    assert call_cli("validate", write_job(tmp_path, advised))[0] == ExitCode.OK


def test_a_long_value_leaves_the_reason_said_and_problems_come_in_the_files_order(tmp_path: Path) -> None:
    # out-130 F2: cut at 160 characters, "'openai/gpt-4o-mini, anthropic/claude-3.5-haiku, ...' is ..."
    # lost what was wrong (`models:` on one line), and a 300-character name never said "too long".
    # F6: sorted as text, checks[10] came before checks[2].
    models = ", ".join(["openai/gpt-4o-mini", "anthropic/claude-3.5-haiku", "google/gemini-2.0-flash-001"] * 2)
    checks = ", ".join("{contains: x, weight: -1}" for _ in range(12))
    text = f"name: {'n' * 300}\nmodels: {models}\nprompts:\n  - id: p\n    text: hi\n    checks: [{checks}]\n"
    code, _, err = call_cli("validate", write_job(tmp_path, text))
    lines = err.splitlines()
    assert code == ExitCode.USAGE and all(len(line) < 300 for line in lines), err
    assert lines[0].endswith(" is too long") and lines[1].endswith(" is not of type 'array'"), err
    weights = [line for line in lines if ".weight" in line]
    assert [line.split("checks[")[1].split("]")[0] for line in weights] == [str(n) for n in range(12)], err


def test_a_finish_reason_check_takes_only_the_reasons_openrouter_gives(tmp_path: Path) -> None:
    # out-130 F7: `finish_reason: Stop` or `[stopped, lenght]` passed validate, then failed every
    # row ("expected finish_reason Stop, got stop"), exit 0 without a threshold.
    checks = "[{finish_reason: Stop}, {finish_reason: [stop, lenght]}, {finish_reason: [length, tool_calls]}]"
    text = f"name: t\nmodels: [openai/gpt-4o-mini]\nprompts: [{{id: p, text: hi, checks: {checks}}}]\n"
    code, _, err = call_cli("validate", write_job(tmp_path, text))
    one_of = "is not one of ['stop', 'length', 'tool_calls', 'content_filter', 'error']"
    assert_refused(
        code, err, f"checks[0].finish_reason 'Stop' {one_of}", f"checks[1].finish_reason[1] 'lenght' {one_of}"
    )
    assert err.count("\n") == 2
    # A template a row fills is no typo (out-132 F6: refused, where it was graded before).
    templated = "name: t\nmodels: [openai/gpt-4o-mini]\nprompts: [{id: p, text: hi, vars: [{fr: stop}], "
    templated += 'checks: [{finish_reason: "{{fr}}"}, {finish_reason: ["{{fr}}", length]}]}]\n'
    assert call_cli("validate", write_job(tmp_path, templated))[0] == ExitCode.OK


def test_a_newcomers_slips_are_said_in_words_not_regexes_or_python(tmp_path: Path) -> None:
    # out-130 F8: "'my eval' does not match '^[A-Za-z0-9][A-Za-z0-9._-]*$'", `api_key_env:
    # $OPENROUTER_API_KEY` likewise, "None is not of type 'object'" for an empty `-` item, which
    # also got "give vars or dataset, not both" and "give system or messages, not both".
    text = "name: my eval\nmodels: [openai/gpt-4o-mini]\nendpoint: {api_key_env: $OPENROUTER_API_KEY}\n"
    text += "prompts:\n  - id: p\n    text: hi\n  -\nrun:\n  mode:\n"
    code, _, err = call_cli("validate", write_job(tmp_path, text))
    assert_refused(
        code,
        err,
        "$.name 'my eval': ASCII letters, digits, '.', '_' and '-' only, starting with a letter or digit (no spaces)",
        "$.endpoint.api_key_env '$OPENROUTER_API_KEY': an environment variable's name: ASCII letters, digits and '_', "
        "not starting with a digit (the variable's name, without the $)",
        "$.prompts[1] is empty (null in YAML: nothing after the colon or the dash, or ~ or null): give a mapping",
        "$.run.mode is empty (null in YAML): give one of 'sync', 'batch'",  # not skipped with the others
    )
    assert err.count("\n") == 4 and "None" not in err and "^[" not in err


def test_an_empty_dataset_name_is_said_as_empty_not_as_a_folder(tmp_path: Path) -> None:
    # out-130 F9: `dataset: ""` was "cannot read dataset: not a regular file (a folder)".
    code, _, err = call_cli("validate", write_job(tmp_path, DATASET_JOB.replace("DATA", '""')))
    assert_refused(code, err, "at $.dataset '' should be non-empty")
    assert "folder" not in err


def test_line_numbers_are_an_editors_after_a_pasted_line_separator(tmp_path: Path) -> None:
    # out-130 F4: YAML breaks lines at U+2028, U+2029 and U+0085 too, grep and editors do not:
    # each one in a pasted prompt moved every error below it a line down.
    text = 'name: e\nmodels: [openai/gpt-4o-mini]\nprompts:\n  - id: p\n    text: "a\u2028b\u2029c\x85d"\n'
    code, _, err = call_cli("validate", write_job(tmp_path, text + "  - id: q\n    text: hi\n    bogus: 1\n"))
    assert_refused(code, err, "job.yaml:8:5: at $.prompts[1].bogus unknown key 'bogus'")
    code, _, err = call_cli("validate", write_job(tmp_path, text + "  - id: q\n    text: [unclosed\n"))
    assert_refused(code, err, "job.yaml:8:")  # a syntax error's line too, and its message's (out-133 F3)
    assert "at line 7, column 11" in err and "at line 10" not in err, err


def test_the_exponent_hint_for_a_whole_number_or_no_number_advises_what_validates(tmp_path: Path) -> None:
    # out-132 F3: `seed: 1e3` was told "write 1.0e+3", then refused as "1000.0 is not of type
    # 'integer'"; `.5e3` got no hint, and `1e400` one no spelling of which is a number.
    text = "name: t\nmodels: [openai/gpt-4o-mini]\nprompts: [{id: p, text: hi}]\n"
    code, _, err = call_cli(
        "validate",
        write_job(tmp_path, text + "defaults: {params: {seed: 1e3}}\nrun: {deadline_s: .5e3, timeout_s: 1e400}\n"),
    )
    assert_refused(
        code,
        err,
        "$.defaults.params.seed '1e3' reads as text in YAML 1.1: write 1000",
        "$.run.deadline_s '.5e3' reads as text in YAML 1.1 (an exponent needs a dot and a sign): write 0.5e+3",
        "$.run.timeout_s '1e400' is not of type 'number'",
    )
    code, _, err = call_cli("validate", write_job(tmp_path, text + "defaults: {params: {seed: 9007199254740993e0}}\n"))
    assert_refused(code, err, "write 9007199254740993")  # not through a float: ...992 (out-133 F4)
    code, _, err = call_cli("validate", write_job(tmp_path, text + "defaults: {params: {seed: 1e20}}\n"))
    assert_refused(code, err, "'1e20' is not of type 'integer'")  # no advice of a number too large to send
    advised = text + "defaults: {params: {seed: 1000}}\nrun: {deadline_s: 0.5e+3}\n"
    assert call_cli("validate", write_job(tmp_path, advised))[0] == ExitCode.OK


def test_a_long_bad_pattern_is_cut_with_its_reason_kept(tmp_path: Path) -> None:
    # out-132 F5: a 20,000-character regex, or json_schema pattern, that does not compile was
    # quoted whole: a 20,096-character error line.
    long = "a" * 20_000 + "("
    checks = f'[{{regex: "{long}"}}, {{json_schema: {{type: string, pattern: "{long}"}}}}]'
    text = f"name: t\nmodels: [openai/gpt-4o-mini]\nprompts: [{{id: p, text: hi, checks: {checks}}}]\n"
    code, _, err = call_cli("validate", write_job(tmp_path, text))
    assert_refused(code, err, "invalid regex 'aaa", "missing ) at position 20001", "is not a 'regex'")
    assert all(len(line) < 400 for line in err.splitlines()), err[:500]


def test_a_templated_finish_reason_a_row_fills_wrongly_is_said_at_validate(tmp_path: Path) -> None:
    # out-133 F2: `finish_reason: "{{fr}}"` with a row's `Stop` validated, then failed every such row.
    text = "name: t\nmodels: [openai/gpt-4o-mini]\nprompts: [{id: p, text: hi, vars: [{fr: stop}, {fr: Stop}], "
    text += 'checks: [{finish_reason: "{{fr}}"}]}]\n'
    code, _, err = call_cli("validate", write_job(tmp_path, text))
    assert_refused(code, err, "finish_reason 'Stop' for this row is none of stop, length, tool_calls")
    assert err.count("\n") == 1
    # Emptied, it fails every row: not "the check could never fail" (out-134 F2).
    code, _, err = call_cli("validate", write_job(tmp_path, text.replace("{fr: Stop}", "{fr: ''}")))
    assert_refused(code, err, "finish_reason '' for this row is none of stop")
    # A model id is said in words too (out-134 F3).
    code, _, err = call_cli("validate", write_job(tmp_path, text.replace("openai/gpt-4o-mini", "openai/gpt 4o")))
    assert_refused(code, err, "'openai/gpt 4o': a model id, author/slug: ASCII letters, digits")


def test_a_duplicate_prompt_id_is_said_once_not_as_a_prompt_without_checks(tmp_path: Path) -> None:
    # out-135 F8: the second `p` has no checks, the first has: "prompt 'p' has no checks" was
    # said of the wrong one, beside the duplicate.
    text = (
        ONE_PROMPT
        + '    checks: [{contains: x}]\n  - id: p\n    text: "again"\nrun: {pass_threshold: {prompts: {p: 0.5}}}\n'
    )
    code, _, err = call_cli("validate", write_job(tmp_path, text))
    assert code == ExitCode.USAGE and "duplicate prompt id 'p'" in err and "has no checks" not in err, err


def test_a_value_of_none_of_its_shapes_names_them_all(tmp_path: Path) -> None:
    # out-135 F9: `pass_threshold: [0.5]` was "not of type 'number'", an object being as good;
    # `{}` as a check was said twice.
    text = (
        ONE_PROMPT.replace("models: [openai/gpt-4o-mini]", "models: [openai/gpt-4o-mini, 5]")
        + "    params: {stop: 5, tool_choice: 5}\n    checks: [{}, {tool_call: 5}]\nrun: {pass_threshold: [0.5]}\n"
    )
    code, _, err = call_cli("validate", write_job(tmp_path, text))
    assert code == ExitCode.USAGE, err
    for said in (
        "at $.models[1] 5 is not of type 'string' or 'object'",
        "at $.prompts[0].params.stop 5 is not of type 'string' or 'array'",
        "at $.prompts[0].params.tool_choice 5 is not of type 'object' nor one of ['none', 'auto', 'required']",
        "at $.prompts[0].checks[1].tool_call 5 is not of type 'string' or 'object'",
        "at $.run.pass_threshold [0.5] is not of type 'number' or 'object'",
        "at $.prompts[0].checks[0] a check needs one kind",
    ):
        assert said in err, err
    assert "should be non-empty" not in err and len(err.splitlines()) == 6, err


def test_an_output_name_too_long_for_the_files_beside_it_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    # out-143 F5: a stem of 232-236 characters is a legal name, but its summary's temporary copy
    # is not: every row was paid for, then exit 11, and so was every resume.
    job = write_job(tmp_path, SMALL_JOB)
    out = tmp_path / ("a" * 231 + ".jsonl")
    commands: list[list[str | Path]] = [[job, "--simulate", "-o", out], ["merge", out, tmp_path / "s.jsonl"]]
    for args in commands:
        code, _, err = call_cli(*args)
        assert_refused(code, err, "its name is too long: the files written beside it", "past the 255 a file name")
        assert len(err.splitlines()) == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml"]
    assert call_cli(job, "--simulate", "-q", "-o", tmp_path / ("a" * 228 + ".jsonl"))[0] == ExitCode.OK
    # out-144 F6: a page's or a JUnit file's temporary copy too (exit 11 once the re-grading was paid).
    done = tmp_path / ("a" * 228 + ".jsonl")
    code, _, err = call_cli("report", done, "--job", job, "--html", tmp_path / ("p" * 240 + ".html"))
    assert_refused(code, err, "its name is too long")
    # F5: the whole path's limit, through a folder deep enough (4,096 bytes).
    deep = tmp_path.joinpath(*["d" * 200] * ((4000 - len(str(tmp_path))) // 201))
    deep.mkdir(parents=True)
    stem = 4096 - len(str(deep)) - 21  # its lock (stem + 11 bytes) fits; its summary's temporary copy does not
    code, _, err = call_cli(job, "--simulate", "-o", deep / ("b" * stem + ".jsonl"))
    assert_refused(code, err, "its path is too long", "past the 4096 a path may have")
    assert list(deep.iterdir()) == []


def test_a_key_variable_holding_bytes_that_are_not_utf8_is_masked_and_every_command_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A variable whose name says it holds a secret (MY_TOKEN) with bytes that are not UTF-8 (as
    # os.environ keeps them: surrogates) made every command a traceback, exit 1, before it read
    # its arguments.
    secret = b"abcdefgh\xffijklmnopqrstuvwxyz".decode("utf-8", "surrogateescape")
    monkeypatch.setenv("MY_TOKEN", secret)
    job = write_job(tmp_path, SMALL_JOB)
    assert call_cli("validate", job, "-q") == (0, "", "")
    code, out, err = call_cli(job, "--simulate", "-o", tmp_path / "o.jsonl", "-q")
    assert (code, out, err) == (0, "", "") and len(read_rows(tmp_path / "o.jsonl")) == 20
    code, out, err = call_cli("validate", tmp_path / ("x" + secret[8:]))  # a message quoting it
    assert code == 2 and "ijklmnopqrstuvwx" not in out + err, err


def test_a_path_holding_sixteen_characters_of_a_key_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # out-176 F1: `-o night-<16 characters of the key>.jsonl` ran; its summary named its results
    # with the key masked (`night-[key].jsonl`), so the resume refused it as another file's summary,
    # and `ls` in a CI log showed the key. A report's outputs likewise; and a usage error quoting
    # such a name showed it whole.
    monkeypatch.setenv("OPENROUTER_API_KEY", FAKE_KEY)
    job = write_job(tmp_path, SMALL_JOB)
    piece = FAKE_KEY[20:36]
    lines: list[list[str | Path]] = [
        [job, "--simulate", "-o", tmp_path / f"night-{piece}.jsonl"],
        [job, "--simulate", "-o", tmp_path / f"{FAKE_KEY}.jsonl"],
        ["merge", tmp_path / f"m{piece}.jsonl", tmp_path / "a.jsonl", tmp_path / "b.jsonl"],
    ]
    for argv in lines:
        code, out, err = call_cli(*argv)
        assert code == ExitCode.USAGE and "holds a key of the environment" in err, err
        assert piece not in out + err and ("[key]" in err or "sk-or-...(hidden)" in err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml"]
    assert call_cli(job, "--simulate", "-o", tmp_path / "r.jsonl", "-q")[0] == ExitCode.OK
    for option in ("--junit", "--html"):
        code, out, err = call_cli("report", tmp_path / "r.jsonl", option, tmp_path / f"x{piece}.out")
        assert code == ExitCode.USAGE and "holds a key of the environment" in err and piece not in out + err, err
    # out-178 F9: through a folder linked to one whose name holds it.
    (tmp_path / f"t{piece}").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / f"t{piece}")
    code, out, err = call_cli(job, "--simulate", "-o", tmp_path / "link" / "r.jsonl", "-q")
    assert code == ExitCode.USAGE and "holds a key of the environment" in err and piece not in out + err, err
    assert not list((tmp_path / f"t{piece}").iterdir())
    code, out, err = call_cli(job, "--simulate", "--bogus", tmp_path / f"x{piece}.jsonl")
    assert code == ExitCode.USAGE and "unrecognized arguments: --bogus" in err and piece not in err, err
    assert not list(tmp_path.glob("x*"))


@pytest.mark.parametrize(
    ("output", "said"),
    [
        (".jsonl", "a results file needs a name before .jsonl"),
        ("sub/.jsonl", "a results file needs a name before .jsonl"),
        ("sub/x.jsonl/", "ends in /, as a folder does: name the results file"),
    ],
)
def test_an_output_with_no_name_or_ending_in_a_slash_is_refused(tmp_path: Path, output: str, said: str) -> None:
    # out-176 F4: `-o .jsonl` was told its name "ends in .jsonl" (it does), and `-o x.jsonl/`
    # was written as the file x.jsonl.
    (tmp_path / "sub").mkdir()
    job = write_job(tmp_path, SMALL_JOB)
    code, _, err = call_cli(job, "--simulate", "-o", f"{tmp_path}/{output}", "-q")
    assert code == ExitCode.USAGE and said in err, err
    assert not list((tmp_path / "sub").iterdir())


def test_a_prompt_written_as_its_text_alone_is_one_line_that_shows_a_prompts_shape(tmp_path: Path) -> None:
    # out-176 F2: promptfoo's `prompts: ["What is 2+2?"]` gave four lines a prompt, two of them
    # false ("give vars or dataset, not both", "give system or messages, not both").
    job = write_job(tmp_path, 'name: s\nmodels: [openai/gpt-4o-mini]\nprompts: ["What is 2+2?", 42]\n')
    code, out, err = call_cli("validate", job)
    assert code == ExitCode.USAGE and out == ""
    assert err.splitlines() == [
        f"batchrun: {job}:3:11: at $.prompts[0] 'What is 2+2?' is a prompt's text alone: a prompt is a mapping, "
        "{id: p1, text: ...}",
        f"batchrun: {job}:3:27: at $.prompts[1] 42 is not of type 'object'",
    ]


def test_a_summary_given_as_the_output_is_named_as_such_whether_new_or_there(tmp_path: Path) -> None:
    # out-176 F4: a run's own summary as `-o` with --resume read "not a batchrun results file
    # (not JSON)"; a new file of such a name was told what the name is. Both are now.
    job = write_job(tmp_path, SMALL_JOB)
    assert call_cli(job, "--simulate", "-o", tmp_path / "r.jsonl", "-q")[0] == ExitCode.OK
    before = (tmp_path / "r.summary.json").read_bytes()
    for name, extra in (("r.summary.json", ["--resume"]), ("r.summary.json", []), ("new.summary.json", [])):
        code, _, err = call_cli(job, "--simulate", "-o", tmp_path / name, "-q", *extra)
        assert code == ExitCode.USAGE and "that is the name of the summary batchrun writes beside" in err, err
    assert (tmp_path / "r.summary.json").read_bytes() == before and not (tmp_path / "new.summary.json").exists()


def test_a_simulator_option_given_twice_with_two_values_is_refused(small_job: Path) -> None:
    # The last was taken in silence: `--sim latency_ms=5 ... --sim latency_ms=500`.
    code, _, err = call_cli(small_job, "--simulate", "--sim", "latency_ms=5", "--sim", "latency-ms=500", "-q")
    assert code == ExitCode.USAGE and "latency_ms is given twice (also --sim latency_ms=5)" in err, err
    assert call_cli(small_job, "--simulate", "--sim", "seed=3", "--sim", "seed=3", "-q")[0] == ExitCode.OK
