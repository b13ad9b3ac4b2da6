"""Expand a job into Requests, lazily, with stable ids and request fingerprints.

The model varies fastest, so consecutive requests spread over models and per-model
concurrency limits do not stall the workers behind one model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from ._check_problems import resolve_files
from ._exceptions import ConfigError
from ._job import Job
from ._judge import GraderSettings
from ._request_body import request_body
from ._template import Template, render_nested

# orjson: compact, UTF-8, sorted keys, a few times faster than json on the per-row path.
_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def _encode(value: Any) -> bytes:
    return orjson.dumps(value, option=_OPTIONS)


def _digest(value: Any) -> str:
    return hashlib.sha256(_encode(value)).hexdigest()[:20]


def encode_body(body: dict[str, Any]) -> bytes:
    """The request body as sent: encoded once, then hashed, posted and written as is."""
    return _encode(body)


def stable_id(job_name: str, model: str, prompt_id: str, row: dict[str, Any], repeat: int) -> str:
    """The resume key: the same job always yields the same ids."""
    return _digest([job_name, model, prompt_id, row, repeat])


def row_group_id(job_name: str, prompt_id: str, row: dict[str, Any]) -> str:
    """One prompt row across models and repeats: where `cache explain` looks for the
    nearest stored request when the row itself (same model and repeat) has none."""
    return _digest([job_name, prompt_id, row])


@dataclass(frozen=True, slots=True)
class Request:
    id: str
    fingerprint: str  # of the exact body sent: an edited prompt keeps its id, changes this
    model: str
    prompt_id: str
    vars: dict[str, Any]
    repeat: int
    body: dict[str, Any]
    payload: bytes  # `body`, encoded once
    checks: list[dict[str, Any]]
    # Of what decides the row's verdict: its checks as resolved (a dataset row's own, a
    # json_schema file's content) and the grader's settings and prompt text. The job file's
    # fingerprint sees none of the files, so `diff` blamed the model for an edited dataset check
    # (verify63 F7). Empty for a grader's own request.
    checks_fingerprint: str = ""


MAX_SHARDS = 1_000_000  # a larger N is a typo: `--shard 1/99999999999999999999` ran nothing, exit 0


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based, as written on the command line
    count: int

    def __post_init__(self) -> None:
        # A library caller counting from 0 ran no row, "complete" (break56 F3); N 0 divided by zero.
        valid = all(isinstance(n, int) and not isinstance(n, bool) for n in (self.index, self.count))
        if not (valid and 1 <= self.index <= self.count <= MAX_SHARDS):
            raise ConfigError(f"a shard is K/N with 1 <= K <= N <= {MAX_SHARDS:,}, got {self.index!r}/{self.count!r}")

    def __contains__(self, item_id: str) -> bool:
        """Whether the item of this id (its first repeat's request id, `stable_id(..., 0)`) is
        this shard's: every repeat of an item goes with it, so that a shard's per-item gate sees
        all of them (out-136 F4: spread by request id, every shard's gate was "could not be
        checked", exit 1). Without repeats an item id is the request id: the split is as it was."""
        return int(item_id[:12], 16) % self.count == self.index - 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"  # as written on the command line, and in the summary

    @property
    def tag(self) -> str:
        """How a file name (its default output, its job lock) says the shard: `-shard2of4`."""
        return f"-shard{self.index}of{self.count}"

    @classmethod
    def parse(cls, text: str) -> Shard:
        k, _, n = text.partition("/")
        # ASCII digits, few: int() reads no '²', nor past 4,300 digits (out-143 4: a traceback).
        if all(p.isascii() and p.isdigit() and len(p) <= 9 for p in (k, n)) and 1 <= int(k) <= int(n) <= MAX_SHARDS:
            return cls(int(k), int(n))
        # ConfigError, as Shard(0, 2) is: a library caller catches one exception tree.
        raise ConfigError(f"--shard takes K/N with 1 <= K <= N <= {MAX_SHARDS:,}, got {text!r}")


def shard_text(shard: Shard | None) -> str | None:
    """A shard as records, summaries and journals write it ("K/N"); None for the whole job."""
    return None if shard is None else str(shard)


def request_params(job: Job, model_params: dict[str, Any], prompt_params: dict[str, Any]) -> dict[str, Any]:
    """Defaults, then the model's, then the prompt's params: the most specific wins."""
    return {**job.params, **model_params, **prompt_params}


def _compile(content: Any) -> Template | list[dict[str, Any]]:
    return Template(content) if isinstance(content, str) else list(content)


def _render(template: Template | list[dict[str, Any]], row: dict[str, Any]) -> Any:
    """Text templates render fast; content parts (rare) render every string inside them."""
    return template.render(row) if isinstance(template, Template) else render_nested(template, row)


def checks_fingerprint(checks: list[dict[str, Any]], grader: GraderSettings) -> str:
    """What decides a row's verdict, hashed (Request.checks_fingerprint); the grader only where
    a check is judged by it."""
    judged = any("judge" in check for check in checks)
    # A weight moves the row's score, never a check's verdict (the score is worked out again from
    # them): an edited weight had `report --job` buy every grader's verdict again (out-152 F6).
    unweighted = [{k: v for k, v in check.items() if k != "weight"} for check in checks]
    return _digest([unweighted, dataclasses.asdict(grader) if judged else None])[:16]


def matrix_requests(job: Job, shard: Shard | None = None) -> Iterator[Request]:
    """Every request of the job, one at a time; nothing is held but the current row."""
    compiled = [(p, [(m["role"], _compile(m["content"])) for m in p.messages]) for p in job.prompts]
    model_params = {m.id: m.params for m in job.models}
    for prompt, templates in compiled:
        templated_checks = any("{{" in json.dumps(c) for c in prompt.checks)
        prompt_checks = checks_fingerprint(list(prompt.checks), job.judge)
        params = {m.id: request_params(job, model_params[m.id], prompt.params) for m in job.models}
        for row in prompt.rows:
            row_checks = row.get("checks")
            if row_checks is not None:  # a row's own checks are not variables
                row = {k: v for k, v in row.items() if k != "checks"}
            messages = [{"role": role, "content": _render(t, row)} for role, t in templates]
            checks = [render_nested(c, row) for c in prompt.checks] if templated_checks else list(prompt.checks)
            if row_checks:
                checks += [render_nested(resolve_files(c, job.path.parent), row) for c in row_checks]
            # Hashed once a prompt when no row can change its checks (~5 us a row otherwise).
            graded_by = checks_fingerprint(checks, job.judge) if templated_checks or row_checks else prompt_checks
            # A row's body is the same for every repeat: encoded and fingerprinted once.
            bodies = []
            for model in job.models:
                body = request_body(model.id, messages, params[model.id])
                payload = encode_body(body)
                bodies.append((model.id, body, payload, hashlib.sha256(payload).hexdigest()[:20]))
            if shard is not None:
                bodies = [b for b in bodies if stable_id(job.name, b[0], prompt.id, row, 0) in shard]
            for repeat in range(job.repeat):
                for model_id, body, payload, fingerprint in bodies:
                    request_id = stable_id(job.name, model_id, prompt.id, row, repeat)
                    yield Request(
                        request_id, fingerprint, model_id, prompt.id, row, repeat, body, payload, checks, graded_by
                    )


# Requests one run (one shard) may send. Pre-flight prices every row before the first goes
# out (~7 us a row), and a stop records every row not answered: a 300,000,000-request job (an
# 8-line file) priced for 11 minutes, deaf to its deadline and to SIGTERM (break24 F4).
MAX_RUN_REQUESTS = 1_000_000


def run_size_problem(job: Job, shard: Shard | None) -> str | None:
    """Why one run of `job` (or one shard of it) is too large to run, or None."""
    total = sum(count_requests(job).values())
    per_run = total if shard is None else -(-total // shard.count)
    if per_run <= MAX_RUN_REQUESTS:
        return None
    shards = -(-total // MAX_RUN_REQUESTS)
    return (
        f"the job's matrix is {total:,} request(s), {'about ' if shard else ''}{per_run:,} for this run: over "
        f"the {MAX_RUN_REQUESTS:,} a run may send; split it with --shard K/N (N of {shards:,} or more) or lower "
        "`repeat` or the dataset"
    )


def count_requests(job: Job) -> dict[tuple[str, str], int]:
    """Rows per (model, prompt); a dataset's rows as loading counted them (they were read
    twice more per run: its size check and its summary's `matrix_rows`, 0.6 s at 100,000)."""
    counts: dict[tuple[str, str], int] = {}
    for prompt in job.prompts:
        rows = len(prompt.rows)
        for model in job.models:
            counts[(model.id, prompt.id)] = rows * job.repeat
    return counts
