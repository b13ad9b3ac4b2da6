"""Load a job file: YAML with line numbers (_job_source), JSON-schema validation, semantic checks.

Every problem is collected before anything is raised, so one `batchrun validate` shows
all that is wrong with a file, each at file:line:column with its JSON path.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._check_problems import check_problems, resolve_files
from ._dataset import MAX_ROW_PROBLEMS, MORE_ROWS, DatasetFile, Snapshot
from ._exceptions import ConfigError, JobError, Problem
from ._files import file_identity, read_regular_text
from ._formats import short
from ._job_fingerprint import job_fingerprint
from ._job_source import JobSource, format_path, parse_job_source
from ._jobfile import JsonPath, ecma_pattern, job_schema, key_like_strings, text_keys, value_problems
from ._judge import GraderSettings, check_kinds
from ._judge import template_problems as grader_template_problems
from ._parts import non_text_part
from ._row_checker import row_checker
from ._row_identity import REPEAT_HINT, row_key
from ._schema_messages import null_shapes_hint, schema_message, shown_message, yaml_type_hint
from ._scrub import environment_scrubber, hide_keys
from ._settings import Endpoint, RunSettings, run_settings
from ._template import names_in
from ._thresholds import threshold_problems
from ._tool_names import row_tool_call_problem, tool_problems

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError


@dataclass(frozen=True)
class ModelSpec:
    id: str
    params: dict[str, Any] = field(default_factory=dict)
    concurrency: int | None = None


@dataclass(frozen=True)
class PromptSpec:
    id: str
    messages: tuple[dict[str, str], ...]  # templates, rendered per row
    params: dict[str, Any]
    rows: list[dict[str, Any]] | DatasetFile
    checks: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Job:
    name: str
    path: Path
    endpoint: Endpoint
    params: dict[str, Any]
    models: tuple[ModelSpec, ...]
    prompts: tuple[PromptSpec, ...]
    repeat: int
    run: RunSettings
    fingerprint: str  # of everything that shapes the requests; shards of one job share it
    judge: GraderSettings = field(default_factory=GraderSettings)  # the grader of judge checks

    def close(self) -> None:
        """Let its datasets' private copies go (one open file each); a later run reads them again."""
        for rows in {id(p.rows): p.rows for p in self.prompts if isinstance(p.rows, DatasetFile)}.values():
            rows.snapshot.close()


@functools.cache
def _job_validator() -> Any:
    from jsonschema import Draft202012Validator, validators

    # JSON Schema takes 20.0 as an integer; sent as written, `max_tokens: 20.0` reached the API
    # as a float and, hashed apart from 20, made every answered row stale (verify27 N6).
    whole = Draft202012Validator.TYPE_CHECKER.redefine("integer", lambda _, v: type(v) is int)
    kinds = {"pattern": ecma_pattern}
    return validators.extend(Draft202012Validator, kinds, type_checker=whole)(job_schema())  # type: ignore[no-untyped-call]


def _listed(value: Any) -> list[Any]:
    """A keyword's value as a list: `type: string` and `type: [string, object]` alike."""
    return [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else []


def _not_its_kind(error: ValidationError) -> bool:
    """A branch the value is not even the kind of: another type, or words of another type."""
    words = error.validator == "enum" and not any(
        type(w) is type(error.instance) for w in _listed(error.validator_value)
    )
    return not error.path and (error.validator == "type" or words)


def _shapes(errors: list[ValidationError]) -> str | None:
    """The shapes a value may take, from the root errors of every branch (types, words)."""
    types = [t for e in errors if e.validator == "type" for t in _listed(e.validator_value)]
    words = [w for e in errors if e.validator == "enum" for w in _listed(e.validator_value)]
    said = [f"of type {' or '.join(map(repr, dict.fromkeys(types)))}"] if types else []
    return "not " + " nor ".join(said + ([f"one of {words}"] if words else [])) if said else None


def _in_closest_branch(error: ValidationError) -> list[tuple[ValidationError, str | None]]:
    """`error` in words, or for a oneOf/anyOf, all errors of the closest branch: not one the value
    is not even the type of (a per_item object is not "not of type number"), nor its best one
    only (out-133 F7: two thresholds over 1 were said one a run)."""
    from jsonschema.exceptions import best_match

    kinds = schema_message(error, list(error.absolute_path))
    if not error.context or kinds is not None:
        return [(error, kinds)]
    typed = [e for e in error.context if not _not_its_kind(e)]
    if not typed and (shapes := _shapes(error.context)):  # of none of its shapes: all said (out-135 F9)
        return [(error, f"{short(repr(error.instance), 60)} is {shapes}")]
    typed = typed or error.context
    best = best_match(typed)  # may lie deeper than `typed`: its branch is that of its ancestor there
    top = best
    while not any(top is e for e in typed) and top.parent is not None:
        top = top.parent
    others = [e for e in typed if e is not top and e.relative_schema_path[0] == top.relative_schema_path[0]]
    return _in_closest_branch(best) + [leaf for e in others for leaf in _in_closest_branch(e)]


def _schema_problems(source: JobSource) -> list[Problem]:
    validator = _job_validator()
    problems = []
    errors = list(validator.iter_errors(source.data))
    # A mistyped value (`- `, a bare string prompt) is said so, not "give vars or dataset, not both" (out-176 F2).
    mistyped = {tuple(e.absolute_path) for e in errors if e.validator == "type" and not isinstance(e.instance, dict)}
    said = [e for e in errors if not (e.validator in ("not", "oneOf", "anyOf") and tuple(e.absolute_path) in mistyped)]
    # `{}` as a check was said twice, as empty and as of no kind (out-135 F9): the second says it.
    other = {tuple(e.absolute_path) for e in said if e.validator != "minProperties"}
    said = [e for e in said if not (e.validator == "minProperties" and tuple(e.absolute_path) in other)]
    for error, kinds in (leaf for e in said for leaf in _in_closest_branch(e)):
        path = text_keys(error.absolute_path, source.data)
        message = null_shapes_hint(kinds, error.instance) or kinds or hide_keys(error.message)
        if isinstance(error.instance, date) and error.validator == "type":  # not Python's datetime.date(...)
            message = f"{error.instance.isoformat()!r} reads as a date in YAML: quote it to use it as text"
        elif error.validator == "type" and (hint := yaml_type_hint(error.instance, error.validator_value, path)):
            message = hint
        if error.validator == "pattern" and isinstance(error.instance, str) and "@preset/" in error.instance:
            # presets.mdx's ids: refused, and why (break41 F4: the bare pattern said nothing).
            message = (
                f"{hide_keys(error.instance)!r}: presets are not supported (set on the server, their models "
                "and tools cannot be priced): name the model and its params"
            )
        if (
            error.validator == "additionalProperties"
            and isinstance(error.instance, dict)
            and isinstance(schema := error.schema, dict)
        ):
            allowed = set(schema.get("properties", {}))
            for key in error.instance:
                if key not in allowed and not any(re.search(p, key) for p in schema.get("patternProperties", ())):
                    problems.append(
                        source.problem(path + (str(key),), hide_keys(f"unknown key {short(repr(key))}"), at_key=True)
                    )
            continue
        problems.append(source.problem(path, message if kinds else shown_message(error, message)))  # kinds: all 14
    # In the file's order: sorted as text, checks[10] came before checks[2] (out-130 F6).
    return sorted(problems, key=lambda problem: (problem.line or 0, problem.column or 0))


def _prompt_messages(prompt: dict[str, Any], defaults: dict[str, Any]) -> tuple[dict[str, str], ...]:
    if "messages" in prompt:
        return tuple({"role": m["role"], "content": m["content"]} for m in prompt["messages"])
    system = prompt.get("system", defaults.get("system"))
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt["text"]})
    return tuple(messages)


def _margin_problems(run: dict[str, Any], source: JobSource) -> list[Problem]:
    """A budget its margin leaves nothing of: no money fixes that, and the run sent nothing, exit
    5, "resumable once there is money" (break65 F1)."""
    budget, margin = run.get("budget_usd"), run.get("budget_margin_usd")
    if not isinstance(budget, (int, float)) or not isinstance(margin, (int, float)) or margin < budget:
        return []
    why = f"budget_margin_usd {margin:g} leaves nothing of budget_usd {budget:g}: the run could send nothing"
    return [source.problem(("run", "budget_margin_usd"), why)]


def _batch_problems(source: JobSource) -> list[Problem]:
    """Batch mode is text-only: with `batch_multimodal: refuse`, a non-text part is refused here."""
    run = source.data.get("run", {})
    if run.get("mode") != "batch" or run.get("batch_multimodal") != "refuse":
        return []
    problems = []
    for i, prompt in enumerate(source.data["prompts"]):
        for j, message in enumerate(prompt.get("messages", [])):
            content = message.get("content")
            for k, part in enumerate(content if isinstance(content, list) else []):
                kind = non_text_part({"messages": [{"content": [part]}]})
                if kind is not None:
                    problems.append(
                        source.problem(
                            ("prompts", i, "messages", j, "content", k),
                            f"a {kind} part: the Batch API is text-only (run.batch_multimodal: refuse)",
                        )
                    )
    # Non-text output asked for (`modalities`, `audio`, `image_config`): refused by the Batch API's
    # validation too (batch-quickstart.mdx), and passed here until the run (break32 m2).
    models = [
        (("models", i, "params"), m.get("params")) for i, m in enumerate(source.data["models"]) if isinstance(m, dict)
    ]
    prompts = [(("prompts", i, "params"), p.get("params")) for i, p in enumerate(source.data["prompts"])]
    for where, params in [(("defaults", "params"), source.data.get("defaults", {}).get("params")), *models, *prompts]:
        kind = non_text_part(params) if isinstance(params, dict) else None
        if kind is not None:
            message = f"{kind} asks for non-text output: the Batch API is text-only (run.batch_multimodal: refuse)"
            problems.append(source.problem((*where, kind), message))
    return problems


def _semantic_problems(source: JobSource, base_dir: Path) -> tuple[list[Problem], list[PromptSpec]]:
    data = source.data
    problems = _batch_problems(source) + _margin_problems(data.get("run", {}), source)
    problems += [
        source.problem(
            p,
            "looks like an OpenRouter API key: keys belong in the environment "
            "(see endpoint.api_key_env), never in a job file",
        )
        for p in key_like_strings(data, ())
    ]
    # A key of the environment, whatever its shape, anywhere in the file: the job's name, a
    # header (app_title), a model id went out, or into the results and the output folder's name,
    # before any request was checked (verify68 F2-F4).
    endpoint = data.get("endpoint") if isinstance(data.get("endpoint"), dict) else {}
    secrets = environment_scrubber(str(endpoint.get("api_key_env", "OPENROUTER_API_KEY")))
    problems += [
        source.problem(p, "holds a key of the environment: keys belong in the environment, never in a job file")
        for p in key_like_strings(data, (), lambda text: secrets.text(text) != text)
    ]
    problems += value_problems(data, source.problem)
    defaults = data.get("defaults", {})
    snapshots: dict[tuple[int, int] | Path, Snapshot] = {}  # prompts naming one file read one copy of it
    judge = data.get("judge") or {}
    graded = bool(judge.get("model") or judge.get("models"))
    seen_models: set[str] = set()
    for i, model in enumerate(data["models"]):
        model_id = model if isinstance(model, str) else model["id"]
        if model_id in seen_models:
            problems.append(source.problem(("models", i), f"duplicate model id {model_id!r}"))
        seen_models.add(model_id)
    default_checks = defaults.get("checks", [])
    for i, check in enumerate(default_checks):
        problems += [source.problem(("defaults", "checks", i), m) for m in check_problems(check, base_dir)]

    prompts: list[PromptSpec] = []
    seen_prompts: set[str] = set()
    for i, prompt in enumerate(data["prompts"]):
        where: JsonPath = ("prompts", i)
        if prompt["id"] in seen_prompts:
            problems.append(source.problem(where + ("id",), f"duplicate prompt id {prompt['id']!r}"))
        seen_prompts.add(prompt["id"])
        for j, check in enumerate(prompt.get("checks", [])):
            problems += [source.problem(where + ("checks", j), m) for m in check_problems(check, base_dir)]
        messages = _prompt_messages(prompt, defaults)
        checks = tuple(resolve_files(c, base_dir) for c in [*default_checks, *prompt.get("checks", [])])
        contents = [m["content"] for m in messages]
        needed = names_in(contents) | names_in(list(checks))
        rows: list[dict[str, Any]] | DatasetFile
        if "vars" in prompt:
            rows = prompt["vars"]
            if not rows:
                problems.append(source.problem(where + ("vars",), "vars is empty: the matrix is empty"))
            check_row = row_checker(
                needed, base_dir, checks, graded, contents, None, row_tool_call_problem(data, prompt)
            )
            seen: dict[bytes, int] = {}
            bad = 0  # every bad row named, as a dataset's are, up to as many (break65 F6: the first only)
            for k, row in enumerate(rows):
                problem = check_row(row)
                key = row_key(row) if not problem else None
                if key is not None and seen.setdefault(key, k) != k:
                    first = source.problem(where + ("vars", seen[key]), "").line
                    problem = f"the same variables as vars[{seen[key]}] (line {first}), {REPEAT_HINT}"
                if problem:
                    bad += 1
                    if bad > MAX_ROW_PROBLEMS:
                        problems.append(source.problem(where + ("vars",), MORE_ROWS))
                        break
                    problems.append(source.problem(where + ("vars", k), problem))
        elif "dataset" in prompt or "dataset" in data:
            key_path: JsonPath = where + ("dataset",) if "dataset" in prompt else ("dataset",)
            shown = prompt.get("dataset", data.get("dataset"))
            file = base_dir / shown
            rows = DatasetFile(file, shown, snapshots.setdefault(file_identity(file), Snapshot(file)))
            problems += rows.check(
                row_checker(
                    needed, base_dir, checks, graded, contents, str(prompt["id"]), row_tool_call_problem(data, prompt)
                ),
                source.file,
                format_path(key_path),
            )
            if problems and problems[-1].line is None and problems[-1].file == source.file:
                problems[-1] = source.problem(key_path, problems[-1].message)
        else:
            rows = [{}]
            if needed:
                why = f"uses variable(s) {', '.join(sorted(needed))} but has no vars and the job has no dataset"
                problems.append(source.problem(where, why))
        prompts.append(PromptSpec(prompt["id"], messages, prompt.get("params", {}), rows, checks))
    return problems, prompts


def rows_kinds(prompt: PromptSpec) -> set[str] | None:
    """What the checks of a prompt's rows hold (_judge.check_kinds); None when not known."""
    if isinstance(prompt.rows, DatasetFile):
        return prompt.rows.check_kinds
    return set().union(*(check_kinds(row.get("checks")) for row in prompt.rows))


def may_check(job: Job) -> bool:
    """Whether a row of the job may be checked (a dataset not read yet: it may bring checks)."""
    return any(prompt.checks or rows_kinds(prompt) != set() for prompt in job.prompts)


def _grading_problems(source: JobSource, base_dir: Path, prompts: list[PromptSpec]) -> list[Problem]:
    """A judge check needs a grader; a replacement grader prompt must be readable and
    use the grader's placeholders; a per-item gate must be reachable."""
    data = source.data
    problems = []
    section = data.get("judge") or {}
    if section.get("prompt"):
        try:
            text = read_regular_text(base_dir / section["prompt"])
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(source.problem(("judge", "prompt"), f"cannot read the grader prompt: {exc}"))
        else:
            problems += [source.problem(("judge", "prompt"), m) for m in grader_template_problems(text)]
    # A setting that cannot apply is refused, not taken and ignored (break33 m6): a stricter
    # pass_score than the grader's own verdict did nothing with one grader, or under majority.
    panel = len(section.get("models") or []) > 1
    for key in ("aggregate", "pass_score") if not panel else ():
        if key in section:
            problems.append(source.problem(("judge", key), f"{key} needs two or more graders (judge.models)"))
    if panel and "pass_score" in section and section.get("aggregate", "majority") != "mean":
        problems.append(source.problem(("judge", "pass_score"), "pass_score applies to aggregate: mean only"))
    places: list[tuple[JsonPath, list[Any]]] = [(("defaults", "checks"), data.get("defaults", {}).get("checks", []))]
    places += [(("prompts", i, "checks"), p.get("checks", [])) for i, p in enumerate(data["prompts"])]
    rows = {p.id: rows_kinds(p) for p in prompts}  # by prompt: what its rows' checks hold
    kinds = set().union(*(check_kinds(c) for _, c in places), *({"panel"} if k is None else k for k in rows.values()))
    if panel and "one" in kinds and "panel" not in kinds:
        # Nor by no check: each names one grader of its own (verify32 n8: a strict pass_score
        # the author wrote passed a 0.91 score in silence).
        for key in ("aggregate", "pass_score"):
            if key in section:
                message = f"{key} applies to no check: each judge check names one grader of its own"
                problems.append(source.problem(("judge", key), message))
    if not (section.get("model") or section.get("models")):
        for where, checks in places:
            for j, check in enumerate(checks):
                if "judge" in check and "grader" not in check:
                    problems.append(
                        source.problem(
                            where + (j,), "a judge check needs a grader: set judge.model or the check's grader"
                        )
                    )
    return problems + threshold_problems(source, rows)


def load_job(path: str | Path) -> Job:
    """Parse and validate a job file, raising JobError with every problem found."""
    if not isinstance(path, (str, os.PathLike)) or "\0" in str(path):  # a TypeError, a ValueError (break56 F8)
        raise ConfigError(f"load_job takes the job file's path (a str or a Path without NUL), not {short(repr(path))}")
    path = Path(path)
    source, problems = parse_job_source(path)
    if source is None:
        raise JobError(problems)
    if not isinstance(source.data, dict):
        raise JobError(
            problems + [source.problem((), "a job file must be a mapping of keys (name, models, prompts, ...)")]
        )
    schema_problems = _schema_problems(source)
    problems += schema_problems
    if schema_problems:
        # Semantic checks assume the shapes the schema guarantees; still report key-like strings.
        problems += [
            source.problem(p, "looks like an OpenRouter API key: keys belong in the environment")
            for p in key_like_strings(source.data, ())
        ]
        raise JobError(problems)
    semantic, prompts = _semantic_problems(source, path.parent)
    problems += semantic + _grading_problems(source, path.parent, prompts) + tool_problems(source)
    if problems:
        raise JobError(problems)
    data = source.data
    models = tuple(
        ModelSpec(m) if isinstance(m, str) else ModelSpec(m["id"], m.get("params", {}), m.get("concurrency"))
        for m in data["models"]
    )
    return Job(
        name=data["name"],
        path=path,
        endpoint=replace(Endpoint(), **data.get("endpoint", {})),
        params=data.get("defaults", {}).get("params", {}),
        models=models,
        prompts=tuple(prompts),
        repeat=data.get("repeat", 1),
        run=run_settings(data.get("run", {})),
        fingerprint=job_fingerprint(data),
        judge=GraderSettings.from_section(data.get("judge"), path.parent),
    )
