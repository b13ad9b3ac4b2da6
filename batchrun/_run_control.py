"""How the CLI's signal handlers reach a run, or a re-grading, that may not have its runner yet."""

from __future__ import annotations

from dataclasses import dataclass

from ._status import StopReason
from ._worker_pool import Runner


@dataclass
class RunControl:
    """Lets the CLI's signal handlers reach a run that may not have started its runner yet."""

    runner: Runner | None = None
    pending: StopReason | None = None

    def stop(self, reason: StopReason = StopReason.INTERRUPTED) -> None:
        if self.runner is not None:
            self.runner.request_stop(reason)
        else:
            self.pending = reason
