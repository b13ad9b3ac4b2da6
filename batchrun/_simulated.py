"""How the built-in simulator is named where a run records what answered it: its summary's
`endpoint` and the cache's keys (its port changes from run to run), with its --sim settings when
any: `simulator[{...}]`. Readers tell a simulated run by it: `--resume` passes over a try-out, and
`merge` warns of simulated shards beside real ones."""

from __future__ import annotations

from typing import Any

SIMULATOR_ENDPOINT = "simulator"


def simulated(endpoint: Any) -> bool:
    """Whether a run's recorded `endpoint` is the built-in simulator, whatever its settings."""
    return isinstance(endpoint, str) and endpoint.startswith(SIMULATOR_ENDPOINT)
