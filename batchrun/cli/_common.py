"""What several commands share: the key from the environment, settings from options, the
simulator for --simulate, and printing in the form asked."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from .._api_key import sendable_key
from .._console import Console, append_step_summary, is_step_summary
from .._exceptions import BatchrunError, ConfigError
from .._simulated import SIMULATOR_ENDPOINT


def simulator_endpoint(args: argparse.Namespace) -> str:
    """The simulator's name in cache keys: with its --sim settings, which change its answers
    (accuracy, faults, a grader's bias): a run of `accuracy...=0` was replayed into the next plain
    --simulate run, 28.6% for 100% (break40 F7)."""
    # The settings in effect, not the options' text: a key given twice is its last value
    # (break43 F3), and `price.X` and `private.X` set one price (verify46 N6).
    changes = sim_config(getattr(args, "sim", None)).changes()
    if not changes:
        return SIMULATOR_ENDPOINT
    return f"{SIMULATOR_ENDPOINT}[{json.dumps(changes, sort_keys=True, separators=(',', ':'))}]"


_SHARES = ("fault.", "accuracy.", "judge_bias", "judge_unparseable", "cost_noise")


def sim_config(options: list[str] | None) -> Any:
    from ..simulator import SimConfig
    from ..simulator._config import option_key

    config, given = SimConfig(), dict[str, str]()
    for option in options or ():
        # The last of two was taken in silence: `--sim latency_ms=5 ... --sim latency_ms=500`.
        name = option_key(option.partition("=")[0])
        if name in given and given[name] != option:
            raise ConfigError(f"--sim {option}: {name} is given twice (also --sim {given[name]})")
        given[name] = option
        try:
            config.set_option(option)
        except ValueError as exc:
            raise ConfigError(f"--sim {option}: {exc}") from None
        key, _, value = option.partition("=")
        # Rates, accuracies and the grader's shares are probabilities; the simulator would take 2
        # as "always" (break27 m5: judge_bias=1.5 was taken).
        if key.strip().startswith(_SHARES) and not 0 <= float(value) <= 1:
            raise ConfigError(f"--sim {option}: a rate must be between 0 and 1")
    # A model the simulator does not price simulates nothing: a typo was taken in silence
    # (verify27 m5). Checked once all options are in (a `private.` model may come later).
    for kind, names in (("an alias's target", config.aliases.values()), ("an accuracy's model", config.accuracy)):
        unknown = sorted(name for name in names if name not in config.prices)
        if unknown:
            raise ConfigError(f"--sim: {unknown[0]!r}, {kind}, is not a model of the simulator (see its GET /models)")
    return config


def step_summary(console: Console, markdown: str, args: argparse.Namespace | None = None, loaded: bool = True) -> None:
    """A step summary that cannot be written is a warning: the command's own code stands.
    `loaded`: the command's job loaded (bounded), so the files it names may be read off it."""
    # Only with a step summary to write: the job's files are found by parsing it again.
    failure = append_step_summary(
        markdown, _not_summaries(args, loaded) if os.environ.get("GITHUB_STEP_SUMMARY") else ()
    )
    if failure:
        console.warn(failure)


def _not_summaries(args: argparse.Namespace | None, loaded: bool) -> list[Path]:
    """What the command reads or writes, that no step summary is appended to: its job, the files
    the job names (a json_schema file, the grader prompt: out-110 F2, the next run broke or graded
    with the Markdown in its prompt), its page and JUnit file (F5: the summary lost unsaid)."""
    given = [getattr(args, name, None) for name in ("job", "html", "junit")]
    found = [Path(value) for value in given if isinstance(value, (str, Path)) and str(value)]
    # Only a job that loaded is read again: one refused may be a YAML bomb (it crashed the tests).
    if loaded and isinstance(given[0], (str, Path)):
        import yaml

        from ._report_outputs import files_named_by

        # Changed since it loaded (gone, no longer YAML): it names nothing to keep.
        with contextlib.suppress(OSError, ValueError, yaml.YAMLError, BatchrunError):
            found += files_named_by(Path(given[0]))
    return found


async def with_simulator(args: argparse.Namespace, body: Any) -> Any:
    """Run `body(base_url, api_key, management_key)`, inside a loopback simulator when --simulate."""
    if not args.simulate:
        return await body(args.base_url, None, None)
    from ..simulator import Simulator

    simulator = Simulator(sim_config(args.sim))
    await simulator.start()
    try:
        return await body(simulator.base_url, "sim-key", simulator.config.management_key)
    finally:
        await simulator.stop()


def checked_key(variable: str) -> str | None:
    """A key from the environment, refused (without showing it) if a header cannot carry it."""
    return sendable_key(os.environ.get(variable) or None, f"${variable}")


def key_for_job(job: Any, simulated_key: str | None) -> str:
    if simulated_key is not None:
        return simulated_key
    key = checked_key(job.endpoint.api_key_env)
    if not key:
        raise ConfigError(f"no API key: set ${job.endpoint.api_key_env} (or use --simulate)")
    return key


def budget_not_taken(settings: Any, budget: float | None) -> str | None:
    """Why `--budget` does not bind, for a warning: above run.budget_usd, the job's own stands. A
    resume given a larger one to get on stopped again, without a word (out-116 F4)."""
    if budget is None or settings.budget_usd is None or budget <= settings.budget_usd:
        return None
    return (
        f"--budget {budget:g} is above the job's run.budget_usd {settings.budget_usd:g}: the smaller binds, "
        "so the job's does (raise it in the job file)"
    )


def with_budget(settings: Any, budget: float | None) -> Any:
    """`--budget` and `run.budget_usd`: the smaller wins."""
    if budget is None:
        return settings
    if settings.budget_margin_usd >= budget:
        # As the job file's own budget is refused (break65 F1, verify67 F3): the run sent nothing,
        # exit 5 "resumable once there is money", and so did every resume.
        raise ConfigError(
            f"--budget {budget:g} leaves nothing after run.budget_margin_usd {settings.budget_margin_usd:g}: "
            "the run could send nothing"
        )
    return replace(settings, budget_usd=min(budget, settings.budget_usd or budget))


def with_cache(settings: Any, args: argparse.Namespace) -> Any:
    """`--cache [DIR]` turns the cache on (in DIR), keeping run.cache's other settings; `--no-cache` off."""
    if args.no_cache:
        return replace(settings, cache=False)
    options = dict(settings.cache) if isinstance(settings.cache, dict) else {}
    if args.cache:
        options["dir"] = args.cache  # the caller's to name
    elif isinstance(folder := options.get("dir"), str) and folder:
        from .._output_paths import job_path_problem

        if (problem := job_path_problem(Path(os.path.expanduser(folder)), "run.cache.dir")) is not None:
            raise ConfigError(problem)
    return settings if args.cache is None else replace(settings, cache=options or True)


def refuse_unmeetable_threshold(job: Any, pass_threshold: float | None) -> None:
    """`--pass-threshold` over a job with no check anywhere, as validate refuses one in the
    file: a run paid for every row, then exit 1 (out-138 F2); `report --job` exited 1."""
    from .._job import may_check
    from .._thresholds import NEVER_CHECKED

    if pass_threshold is not None and not may_check(job):
        raise ConfigError(f"--pass-threshold: {NEVER_CHECKED}")


def with_pinned_thresholds(settings: Any, pass_threshold: float | None, max_error_rate: float | None) -> Any:
    """`--pass-threshold` (the overall rate; a job's per-model, per-prompt and per-item ones
    stay) and `--max-error-rate` over the job's own."""
    if max_error_rate is not None:
        settings = replace(settings, max_error_rate=max_error_rate)
    if pass_threshold is not None:
        raw = settings.pass_threshold
        pinned = {**raw, "overall": pass_threshold} if isinstance(raw, dict) else pass_threshold
        settings = replace(settings, pass_threshold=pinned)
    return settings


def settings_from_args(job: Any, args: argparse.Namespace) -> Any:
    settings = job.run
    overrides = {
        "concurrency": args.concurrency,
        "deadline_s": args.deadline,
        "grace_s": args.grace,
        "timeout_s": args.timeout,
        "max_attempts": args.max_attempts,
        "max_response_bytes": args.max_response_bytes,
        "max_elapsed_s": args.max_elapsed,
        "max_wait_s": args.max_wait,
        "max_error_rate": args.max_error_rate,
    }
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    settings = with_budget(settings, args.budget)
    settings = with_cache(settings, args)
    if args.isolated_key:
        settings = replace(settings, isolated_key=True)
    if args.mode:
        settings = replace(settings, mode=args.mode)
    if args.stream is not None:
        settings = replace(settings, stream=args.stream)
    return settings


def test_seam(name: str) -> int | None:
    """A test-only hook from the environment (the crash tests kill a real process)."""
    value = os.environ.get(name)
    return int(value) if value and value.isdigit() else None


Shown = TypeVar("Shown", bound=Mapping[str, Any])


def show(
    console: Console,
    args: argparse.Namespace,
    data: Shown,
    as_text: Callable[[Shown], str],
    as_markdown: Callable[[Shown], str],
) -> None:
    """Print in the form asked (text, --json, --markdown); Markdown also to GITHUB_STEP_SUMMARY."""
    from .._output_paths import finite

    if args.json:
        # Scrubbed before it is written as JSON, which writes what is not ASCII as \uXXXX: the
        # stream's own scrub of the text missed a secret of full-width or other such characters
        # (out-180 F3).
        scrub = console.out.scrub
        shown = finite(data) if scrub is None else scrub.value(finite(data))
        console.out.write(json.dumps(shown, indent=2, allow_nan=False) + "\n")
    elif args.markdown:
        console.out.write(as_markdown(data))
        if is_step_summary(console.out.descriptor):
            return  # written there already, by the redirection
    else:
        console.out.write(as_text(data) + "\n")
    step_summary(console, as_markdown(data), args)
