"""batchrun: declarative, unattended batches of LLM chat requests through OpenRouter.

The CLI (`batchrun JOB.yaml`) sits on this small library; see README.md. Names are
imported on first use, so `batchrun validate` does not pay for httpx and aiohttp.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ChatResult": "_client",
    "ModelInfo": "_client",
    "OpenRouterClient": "_client",
    "AuthFailed": "_exceptions",
    "BatchrunError": "_exceptions",
    "ConfigError": "_exceptions",
    "CreditExhausted": "_exceptions",
    "DailyCapReached": "_exceptions",
    "Final": "_exceptions",
    "JobError": "_exceptions",
    "LockHeld": "_exceptions",
    "ModelUnavailable": "_exceptions",
    "Problem": "_exceptions",
    "RateLimited": "_exceptions",
    "Rejected": "_exceptions",
    "RequestFailed": "_exceptions",
    "ResultsError": "_exceptions",
    "Transient": "_exceptions",
    "Job": "_job",
    "load_job": "_job",
    "CreditLedger": "_ledger",
    "Request": "_matrix",
    "Shard": "_matrix",
    "plan_requests": "_matrix",
    "ResultsWriter": "_results",
    "final_records": "_results",
    "RunControl": "_orchestration",
    "RunOptions": "_options",
    "RunReport": "_orchestration",
    "run_job": "_orchestration",
    "ExitCode": "_verdict",
    "SimConfig": "simulator",
    "Simulator": "simulator",
}

__all__ = [
    "AuthFailed",
    "BatchrunError",
    "ChatResult",
    "ConfigError",
    "CreditExhausted",
    "CreditLedger",
    "DailyCapReached",
    "ExitCode",
    "Final",
    "Job",
    "JobError",
    "LockHeld",
    "ModelInfo",
    "ModelUnavailable",
    "OpenRouterClient",
    "Problem",
    "RateLimited",
    "Rejected",
    "Request",
    "RequestFailed",
    "ResultsError",
    "ResultsWriter",
    "RunControl",
    "RunOptions",
    "RunReport",
    "Shard",
    "SimConfig",
    "Simulator",
    "Transient",
    "final_records",
    "load_job",
    "plan_requests",
    "run_job",
    "__version__",
]

if TYPE_CHECKING:
    from ._client import ChatResult, ModelInfo, OpenRouterClient
    from ._exceptions import (
        AuthFailed,
        BatchrunError,
        ConfigError,
        CreditExhausted,
        DailyCapReached,
        Final,
        JobError,
        LockHeld,
        ModelUnavailable,
        Problem,
        RateLimited,
        Rejected,
        RequestFailed,
        ResultsError,
        Transient,
    )
    from ._job import Job, load_job
    from ._ledger import CreditLedger
    from ._matrix import Request, Shard, plan_requests
    from ._options import RunOptions
    from ._orchestration import RunControl, RunReport, run_job
    from ._results import ResultsWriter, final_records
    from ._verdict import ExitCode
    from .simulator import SimConfig, Simulator


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'batchrun' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
