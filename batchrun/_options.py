"""What one invocation adds to a job: the key, the endpoint, the output file, resume and shard.

The job's own `run:` section is `RunSettings` (_job); these come from the command line or a
library caller, and are shared by the run, `plan` and `report --job`'s re-grading.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from ._api_key import sendable_key
from ._argtypes import url_problem
from ._clock import Clock, SystemClock
from ._exceptions import ConfigError
from ._matrix import Shard

Notice = Callable[[str], None]


@dataclass
class RunOptions:
    api_key: str | None
    base_url: str | None = None  # overrides the job's endpoint
    output: Path | None = None
    resume: bool = False
    retry_errors: bool = False
    shard: Shard | None = None
    management_key: str | None = None
    transport: httpx.AsyncBaseTransport | None = None
    clock: Clock = field(default_factory=SystemClock)
    test_broken_ledger: bool = False  # test seam: reserve nothing (shows the server-side limit holds)
    # The endpoint as cache keys name it, when not the base URL: --simulate starts its
    # simulator on a new port each run, and names it "simulator" so its runs share entries.
    cache_endpoint: str | None = None
    # --simulate: a simulator of this run's own, which knows no batch an earlier run submitted.
    fresh_simulator: bool = False
    test_kill_after_submit: int | None = None  # test seam: SIGKILL after the Nth batch is accepted
    # The verdict the summary records (`exit_code`): --pass-threshold, and --no-thresholds as False.
    pass_threshold: float | None = None
    thresholds: bool = True

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Refuse (or normalise) what the CLI would refuse; `run_job` checks again, for options
        changed after they were made (verify69 F7: `options.output = "x.jsonl"` was an AttributeError)."""
        for name in ("api_key", "management_key"):  # a TypeError from the key check (break68 F3)
            if not isinstance(getattr(self, name), (str, type(None))):
                raise ConfigError(f"RunOptions.{name} is a str (or None), not a {type(getattr(self, name)).__name__}")
        # Refused here, before anything is sent, without being shown (break50 F1).
        sendable_key(self.api_key)
        sendable_key(self.management_key, "the management key")
        if isinstance(self.output, (str, os.PathLike)):  # as final_records takes one (break50 F2)
            self.output = Path(self.output)
        elif self.output is not None:  # an AttributeError once the run began (break68 F3)
            raise ConfigError(f"RunOptions.output is a path (or None), not a {type(self.output).__name__}")
        if self.output is not None and "\0" in str(self.output):
            raise ConfigError("the output path holds a NUL byte, which no file name can")
        # As the CLI refuses them, before anything is written: a Shard(0, 2) ran no row and said
        # "complete", "1/2" was a TypeError, an ftp:// endpoint a server's failure (break56 F3).
        if self.shard is not None and not isinstance(self.shard, Shard):
            raise ConfigError(
                f"RunOptions.shard is a batchrun.Shard (Shard(1, 4) or Shard.parse('1/4')), not {self.shard!r}"
            )
        if self.base_url is not None and (problem := url_problem(str(self.base_url))) is not None:
            raise ConfigError(f"RunOptions.base_url: {problem}")


@dataclass
class HostCallback:
    """A library caller's `on_record`. What it raises is kept and raised when the run has ended, its
    rows written and its summary too: raised into a worker, it was lost, and the run exited 0 with
    the caller never told (break50 F5). The first is kept; the callback is not called again."""

    callback: Callable[[dict[str, Any]], None] | None
    raised: list[Exception] = field(default_factory=list)

    def __call__(self, line: bytes) -> None:
        """`line`: the record as written. The caller gets its own copy, read from it (its `request`
        too): given the run's own dict, a callback that redacted `vars` changed every row sharing
        them, their ids, their graders' rubrics and the records written late (break56 F1)."""
        if self.callback is not None and not self.raised:
            try:
                self.callback(orjson.loads(line))
            except Exception as exc:  # noqa: BLE001 - the caller's own, whatever it is: raised at the end
                self.raised.append(exc)

    def raise_kept(self) -> None:
        if self.raised:
            raise self.raised[0]
