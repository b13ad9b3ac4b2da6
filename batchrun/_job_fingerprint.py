"""The job's fingerprint: a hash of everything in a job file that shapes its requests.

Results files, resumes, `merge` and `history` compare it, so an unedited job must keep it
across versions of batchrun. Number keys (token ids: `logit_bias: {10: 1, 9: 2}`) became
text when the job is read (break20 C2); the hash orders a mapping whose keys are all whole
numbers numerically, as `json.dumps(sort_keys=True)` ordered them while they were numbers,
or `{10: 1, 9: 2}` would hash as `{"10", "9"}` and an upgrade would read as an edit
(verify20 V1: `merge` refused the run resumed across it as two job versions).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

_WHOLE_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)")


def _ordered(value: Any) -> Any:
    if isinstance(value, dict):
        keys = list(value)
        if keys and all(isinstance(k, str) and _WHOLE_NUMBER.fullmatch(k) for k in keys):
            keys.sort(key=int)
        else:
            keys.sort(key=str)
        return {k: _ordered(value[k]) for k in keys}
    if isinstance(value, list):
        return [_ordered(item) for item in value]
    return value


def job_fingerprint(data: dict[str, Any]) -> str:
    """Of the job file's data; `run`, `endpoint` and `x-` keys do not shape a request."""
    shaping = {k: v for k, v in data.items() if k not in ("run", "endpoint") and not k.startswith("x-")}
    return hashlib.sha256(json.dumps(_ordered(shaping), default=str).encode()).hexdigest()[:16]
