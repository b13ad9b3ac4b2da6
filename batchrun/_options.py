"""What one invocation adds to a job: the key, the endpoint, the output file, resume and shard.

The job's own `run:` section is `RunSettings` (_job); these come from the command line or a
library caller, and are shared by the run, `plan` and `report --job`'s re-grading.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ._clock import Clock, SystemClock
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
