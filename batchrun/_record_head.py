"""The head of every record, defined once: its first fields, in order, with the shape of
each value as the writer (orjson) puts it on the line.

`record_head` writes it; the resume scan (_reader.scan_states) finds it at each line start
with a pattern built from the same table, without parsing the line, and keeps the part a
resume needs (`STATE`) as the exact bytes of the line, decoded only for rows it asks about.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import orjson

# field -> the pattern of its JSON value; the order is the order on the line.
HEAD: dict[str, bytes] = {
    "id": rb'"[0-9a-f]+"',
    "fingerprint": rb'"[0-9a-f]*"',
    "status": rb'"[a-z]+"',
    "reason": rb'(?:null|"[a-z_0-9]*")',
    "retryable": rb"(?:true|false)",
    "cost": rb"(?:null|[-+0-9.eE]+)",
    "spent": rb"[-+0-9.eE]+",
}
STATE = ("fingerprint", "status", "reason", "retryable")  # what a resume needs of a row
RECORD_START = b'{"' + next(iter(HEAD)).encode() + b'":"'  # every record begins so (the id is a string)
# The state's bytes are kept without their first key, the same in every row (memory: 1M rows).
_STATE_KEY = b'"' + STATE[0].encode() + b'":'


class RowState(NamedTuple):
    """What resume needs to know of a written row."""

    fingerprint: str
    status: str
    reason: str | None
    retryable: bool


def record_head(
    row_id: str,
    fingerprint: str,
    status: str,
    reason: str | None,
    retryable: bool,
    cost: float | None,
    spent: float | None = None,
) -> dict[str, Any]:
    """The first fields of a record. `spent` is what the budget counted for the row (its
    answer and its grading, with the worst case of any attempt of unknown cost): a resume
    counts it as already spent. It defaults to `cost`, for a row with nothing beyond it."""
    values = (row_id, fingerprint, status, reason, retryable, cost, spent if spent is not None else cost or 0.0)
    return dict(zip(HEAD, values, strict=True))


_MONEY_FIELDS = ("cost", "spent", "resolves", "cost_held", "cost_known", "judge_cost", "judge_cost_known")


def money_rounded(record: dict[str, Any]) -> dict[str, Any]:
    """`record` with its money fields to 12 places, as money is kept: sums of parts wrote
    `"spent": 0.0021400000000000004` (out-122 F5). The same dict where none needs it."""
    noisy = {
        name: round(value, 12)
        for name in _MONEY_FIELDS
        if type(value := record.get(name)) is float and round(value, 12) != value
    }
    return {**record, **noisy} if noisy else record


# Whose run a record is: the job, its version, and the shard ("K/N") of a sharded run.
Identity = tuple[str, str, "str | None"]


def record_identity(identity: Identity) -> dict[str, Any]:
    """The fields that say whose run a record is. A sharded run's records name their shard, so
    a results file says it even without its summary and journal: resumed without --shard, a
    shard's file was run to the whole matrix, the other shards' rows paid again (verify31 N1)."""
    job, fingerprint, shard = identity
    fields: dict[str, Any] = {"job": job, "job_fingerprint": fingerprint}
    if shard is not None:
        fields["shard"] = shard
    return fields


def state_blob(fingerprint: str, status: str, reason: str | None, retryable: bool) -> bytes:
    """A row's state in the bytes its record's head has on the line."""
    state = orjson.dumps(dict(zip(STATE, (fingerprint, status, reason, retryable), strict=True)))
    return state[1 + len(_STATE_KEY) : -1]


def parse_state(blob: bytes) -> RowState:
    return RowState(**orjson.loads(b"{" + _STATE_KEY + blob + b"}"))


def _field(name: str, group: bool = False) -> bytes:
    value = b"(" + HEAD[name] + b")" if group else HEAD[name]
    return b'"' + name.encode() + b'":' + value


# One match per line start: (id, state bytes, cost, spent, resolves). Files written before `spent`
# existed have no such field: their `cost` is what was spent.
LINE_HEADS = re.compile(
    rb"\n\{"
    + _field("id").replace(HEAD["id"], rb'"([0-9a-f]+)"')
    + b","
    + _STATE_KEY
    + b"("
    + b",".join(_field(name) for name in STATE)[len(_STATE_KEY) :]
    + b"),"
    + _field("cost", group=True)
    + b",(?:"
    + _field("spent", group=True)
    + b",)?"
    # A row written again with a cost learnt late (_late_costs): the `spent` it replaces.
    + rb'(?:"resolves":([-+0-9.eE]+),)?'
)
assert list(HEAD)[1 : 1 + len(STATE)] == list(STATE), "the state is one run of the head"
