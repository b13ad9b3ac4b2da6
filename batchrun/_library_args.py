"""What a library caller hands `run_job`, checked before anything is locked, written or sent.

The README promises `BatchrunError`s. A path or a dict in the job's place, a `control` of another
type or an `on_record` that cannot be called had been Python's own AttributeError or TypeError; the
last only once every row had been sent and paid for, and the run's report was lost (break68 F3, F4).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ._exceptions import ConfigError
from ._job import Job
from ._options import RunOptions
from ._run_control import RunControl


def checked_arguments(
    job: object,
    options: object,
    control: object,
    callbacks: dict[str, Callable[..., Any] | None],
) -> RunControl:
    """The run's control (a new one for None, one used by no other run), once every argument is
    of its type."""
    if not isinstance(job, Job):
        raise ConfigError(f"run_job takes a Job, as load_job(path) returns it, not {_kind(job)}")
    if not isinstance(options, RunOptions):
        raise ConfigError(f"run_job takes its options as a RunOptions, not {_kind(options)}")
    options.check()
    options.pass_threshold = checked_threshold(options.pass_threshold)
    if not isinstance(options.thresholds, bool):
        raise ConfigError(f"RunOptions.thresholds is True or False, not {_kind(options.thresholds)}")
    if control is not None and not isinstance(control, RunControl):
        raise ConfigError(f"run_job's control is a RunControl (or None), not {_kind(control)}")
    for name, callback in callbacks.items():
        if callback is not None and not callable(callback):
            raise ConfigError(f"run_job's {name} is called with each {_CALLED[name]}: {_kind(callback)} cannot be")
    control = control or RunControl()
    if control.used:  # its stop and its event are the last run's: every row was "deadline" (break50 F4)
        raise ConfigError("this RunControl was given to an earlier run: make a new one for each run")
    control.used = True
    return control


def checked_threshold(value: object) -> float | None:
    """`verdict(pass_threshold=)` as `--pass-threshold` takes it: a rate from 0 to 1 (80, meant
    as a percentage, read as 8000% and failed every run)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"pass_threshold is a number between 0 and 1, not {_kind(value)}")
    if not 0 <= value <= 1:
        raise ConfigError(f"pass_threshold must be between 0 and 1 (0.9 for 90%), got {value:g}")
    return float(value)


_CALLED = {"on_record": "record", "on_start": "run's row count", "notice": "notice"}


def _kind(value: object) -> str:
    # The type, never the value: a string in the wrong place may be the key.
    return f"a {type(value).__name__}"
