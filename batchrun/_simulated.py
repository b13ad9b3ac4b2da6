"""How the built-in simulator is named where a run records what answered it: its summary's
`endpoint` and the cache's keys (its port changes from run to run), with its --sim settings when
any: `simulator[{...}]`. Readers tell a simulated run by it: `--resume` passes over a try-out, and
`merge` warns of simulated shards beside real ones."""

from __future__ import annotations

from typing import Any

SIMULATOR_ENDPOINT = "simulator"
# A merged file's, when the simulator answered some of its shards and an endpoint others: neither
# the simulator's nor a model's (shards of two real endpoints name both: merged_endpoint).
MIXED_ENDPOINTS = "mixed"


def simulated(endpoint: Any) -> bool:
    """Whether a run's recorded `endpoint` is the built-in simulator, whatever its settings."""
    return isinstance(endpoint, str) and endpoint.startswith(SIMULATOR_ENDPOINT)


def merged_endpoint(endpoints: list[Any]) -> str | None:
    """What answered the merged file's rows, as a run's summary says it: the shards' endpoint when
    they share one, the simulator when it answered them all, MIXED_ENDPOINTS when some real
    endpoint did not answer them all; None when a shard's is not known. Without it, the merged
    file of a real night was taken for one the simulator's graders could re-grade: its failures
    re-graded at random passed the gate, 26 of them (out-114 F1)."""
    if not all(isinstance(endpoint, str) for endpoint in endpoints):
        return None
    if len(set(endpoints)) == 1:
        return str(endpoints[0])
    if not any(map(answered_in_part, endpoints)):
        # Real endpoints all: named, not "mixed", which says the simulator answered some (out-139 F7).
        return " + ".join(sorted(set(map(str, endpoints))))
    return SIMULATOR_ENDPOINT if all(map(simulated, endpoints)) else MIXED_ENDPOINTS


def answered_in_part(endpoint: Any) -> bool:
    """Whether the simulator answered any of a file's rows: all of them, or a merge's shards'."""
    return simulated(endpoint) or endpoint == MIXED_ENDPOINTS
