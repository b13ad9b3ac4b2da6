"""OpenRouter in a box: a real HTTP server on loopback, for --simulate, tests and benchmarks.

Serves POST /api/v1/chat/completions, GET /api/v1/models, GET /api/v1/key, the
management API /api/v1/keys, and the beta Batch API /api/beta/batches, with OpenRouter's
shapes. Answers are deterministic functions of the request. Faults (status codes,
200-with-error bodies, resets, truncated bodies, hangs), rate limits, daily caps and key
limits are drawn from a seeded generator, so a scenario replays the same sequence of faults.
GET /__sim/stats reports counters.

Modules: `_config` (SimConfig), `_server` (lifecycle, routes, chat), `_keys` (/key, /keys),
`_limits` (rate windows), `_faults` (injected faults), `_answers` (what models say),
`_stats` (counters), `_http` (response helpers), `_batches` (the beta Batch API).
"""

from ._config import DEFAULT_ACCURACY, DEFAULT_PRICES, PER_M, SimConfig
from ._server import Simulator, serve
from ._stats import SimStats

__all__ = ["DEFAULT_ACCURACY", "DEFAULT_PRICES", "PER_M", "SimConfig", "SimStats", "Simulator", "serve"]
