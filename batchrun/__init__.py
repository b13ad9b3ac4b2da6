"""batchrun: declarative, unattended batches of LLM chat requests through OpenRouter.

The CLI (`batchrun JOB.yaml`) sits on this small library; see README.md. Names are
imported on first use, so `batchrun validate` does not pay for httpx and aiohttp.
"""

from __future__ import annotations

# Neither `typing` nor `importlib` at import: the console script imports this package before
# `_entry` installs its signal handlers, and `typing` alone was 15 of the 20 ms a SIGTERM then
# killed the process by the signal, not exit 7 (out-126 F2). mypy reads the block below.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

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
    "Permanent": "_exceptions",
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
    "matrix_requests": "_matrix",
    "ResultsWriter": "_results",
    "final_records": "_public_reader",
    "RunControl": "_run_control",
    "RunOptions": "_options",
    "RunReport": "_orchestration",
    "run_job": "_orchestration",
    "ExitCode": "_verdict",
    "SimConfig": "simulator",
    "Simulator": "simulator",
}

# Derived, so a name is added in two places: _EXPORTS (runtime) and the block below (types).
__all__ = sorted([*_EXPORTS, "__version__"])

if TYPE_CHECKING:
    from ._client import ChatResult as ChatResult
    from ._client import ModelInfo as ModelInfo
    from ._client import OpenRouterClient as OpenRouterClient
    from ._exceptions import AuthFailed as AuthFailed
    from ._exceptions import BatchrunError as BatchrunError
    from ._exceptions import ConfigError as ConfigError
    from ._exceptions import CreditExhausted as CreditExhausted
    from ._exceptions import DailyCapReached as DailyCapReached
    from ._exceptions import JobError as JobError
    from ._exceptions import LockHeld as LockHeld
    from ._exceptions import ModelUnavailable as ModelUnavailable
    from ._exceptions import Permanent as Permanent
    from ._exceptions import Problem as Problem
    from ._exceptions import RateLimited as RateLimited
    from ._exceptions import Rejected as Rejected
    from ._exceptions import RequestFailed as RequestFailed
    from ._exceptions import ResultsError as ResultsError
    from ._exceptions import Transient as Transient
    from ._job import Job as Job
    from ._job import load_job as load_job
    from ._ledger import CreditLedger as CreditLedger
    from ._matrix import Request as Request
    from ._matrix import Shard as Shard
    from ._matrix import matrix_requests as matrix_requests
    from ._options import RunOptions as RunOptions
    from ._orchestration import RunReport as RunReport
    from ._orchestration import run_job as run_job
    from ._public_reader import final_records as final_records
    from ._results import ResultsWriter as ResultsWriter
    from ._run_control import RunControl as RunControl
    from ._verdict import ExitCode as ExitCode
    from .simulator import SimConfig as SimConfig
    from .simulator import Simulator as Simulator


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'batchrun' has no attribute {name!r}")
    value = getattr(__import__(f"{__name__}.{module}", fromlist=[name]), name)
    globals()[name] = value
    return value
