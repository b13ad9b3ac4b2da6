"""What the response cache holds, as values: a stored answer, an entry on its way in, what
planning and `explain` read back, the figures of `cache stats`.

Reading a row back is reading a file anything may have written (another batchrun, a user
with the sqlite3 shell, a broken disk): every column is checked for its type as a reply
from a server is, and a value of the wrong type makes the entry a miss, never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson

MAX_STORED_USD = 1_000_000.0  # a stored cost past this is not believed: no hit says it saved that


def text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def number_or_none(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def cost_or_none(value: Any) -> float | None:
    """A stored cost as a number a hit may report as saved, else None (the entry is no hit):
    the file is read like a reply, since anything may have written it."""
    cost = number_or_none(value)
    return cost if cost is not None and 0 <= cost <= MAX_STORED_USD else None


def saving(cost: float | None, status: object) -> tuple[float, float]:
    """What a hit saved, as (known, at most): a cost that was only `estimated` (tokens x the
    dearest price) is an upper bound, not a saving to count (out-160 F4: 26 grader hits said
    "$0.009938 saved", about 9x what the server had billed for them)."""
    if cost is None:
        return 0.0, 0.0
    return (0.0, cost) if status == "estimated" else (cost, 0.0)


def blob(value: Any) -> bytes | None:
    """A BLOB column as bytes (text that something else wrote there, encoded), else None."""
    if isinstance(value, bytes):
        return value
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else None


def size_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """An ok answer as it was first received."""

    generation_id: str | None
    response_model: str | None
    provider: str | None
    content: str
    finish_reason: str | None
    native_finish_reason: str | None
    usage: dict[str, Any]
    cost: float | None
    latency_ms: float | None
    generated_at: str  # when the original answer arrived (UTC ISO 8601)
    refusal: str | None = None
    reasoning: str | None = None
    cost_status: str | None = None  # the original record's: reported, looked_up or estimated
    tool_calls: tuple[dict[str, Any], ...] = ()  # as the record had them: {id, name, arguments}
    reply_bytes: int | None = None  # the reply's size as read, against the reading run's cap

    def to_json(self) -> bytes:
        return encode_answer(
            self.generation_id,
            self.response_model,
            self.provider,
            self.content,
            self.finish_reason,
            self.native_finish_reason,
            self.usage,
            self.latency_ms,
            self.generated_at,
            self.refusal,
            self.reasoning,
            self.cost_status,
            self.tool_calls,
        )

    @classmethod
    def from_row(cls, answer: bytes, cost: float | None, reply_bytes: int | None) -> CachedAnswer | None:
        """None for an entry that does not hold a usable answer (then it is a miss)."""
        try:
            data = orjson.loads(answer)
            content = data["content"]
            usage = data["usage"]
            tool_calls = tuple(data.get("tool_calls") or ())
            if not isinstance(content, str) or not isinstance(usage, dict):
                return None
            if not (content or tool_calls) or not all(isinstance(call, dict) for call in tool_calls):
                return None
            if data.get("cost_status") not in _STORED_STATUSES:  # out-184 F6: "bogus" reached the records
                return None
            return cls(
                text_or_none(data.get("generation_id")),
                text_or_none(data.get("response_model")),
                text_or_none(data.get("provider")),
                content,
                text_or_none(data.get("finish_reason")),
                text_or_none(data.get("native_finish_reason")),
                usage,
                cost,
                number_or_none(data.get("latency_ms")),
                str(data.get("generated_at") or ""),
                text_or_none(data.get("refusal")),
                text_or_none(data.get("reasoning")),
                text_or_none(data.get("cost_status")),
                tool_calls,
                reply_bytes,
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


# What a stored answer's cost may be (_cache_session.store: an unknown cost is not stored).
_STORED_STATUSES = (None, "reported", "looked_up", "estimated")


def encode_answer(
    generation_id: str | None,
    response_model: str | None,
    provider: str | None,
    content: str,
    finish_reason: str | None,
    native_finish_reason: str | None,
    usage: dict[str, Any],
    latency_ms: float | None,
    generated_at: str,
    refusal: str | None,
    reasoning: str | None,
    cost_status: str | None,
    tool_calls: tuple[dict[str, Any], ...],
) -> bytes:
    """The `answer` column: what `CachedAnswer.from_row` reads back. A function of fields, not
    of a CachedAnswer, so the miss path encodes an answer without building one."""
    return orjson.dumps(
        {
            "generation_id": generation_id,
            "response_model": response_model,
            "provider": provider,
            "content": content,
            "finish_reason": finish_reason,
            "native_finish_reason": native_finish_reason,
            "usage": usage,
            "latency_ms": latency_ms,
            "generated_at": generated_at,
            "refusal": refusal,
            "reasoning": reasoning,
            "cost_status": cost_status,
            "tool_calls": list(tool_calls),
        }
    )


# One row of `entries` as `store_many` writes it, in the order of ENTRY_COLUMNS: a plain tuple,
# since building frozen dataclasses per stored answer cost more than the insert (bench/cache.py).
EntryRow = tuple[bytes, str, str, str, int, str, bytes, bytes, float, float, int, "str | None", "float | None"]
ENTRY_COLUMNS = (
    "key, row_id, group_id, model, repeat, base_url, body, answer, cost, created_at, reply_bytes, finish_reason,"
    " latency_ms"
)


class Probe(NamedTuple):
    """What planning reads of a stored entry to decide a hit: its body, and its answer as a
    lookup reads it (None where the entry holds none a lookup would take, so that planning
    never counts as a hit what the run then sends: break43 F5)."""

    body: bytes
    answer: CachedAnswer | None


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """One answer on its way into the cache."""

    key: bytes
    row_id: str
    group_id: str
    model: str
    repeat: int
    base_url: str
    payload: bytes
    answer: CachedAnswer
    created_at: float

    def row(self) -> EntryRow:
        answer = self.answer.to_json()
        return (
            self.key,
            self.row_id,
            self.group_id,
            self.model,
            self.repeat,
            self.base_url,
            self.payload,
            answer,
            self.answer.cost or 0.0,
            self.created_at,
            len(answer) if self.answer.reply_bytes is None else self.answer.reply_bytes,
            self.answer.finish_reason,
            self.answer.latency_ms,
        )


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A stored request, as `explain` compares it with the request a job would send now."""

    key: bytes
    row_id: str
    model: str
    repeat: int
    base_url: str
    body: dict[str, Any]
    cost: float | None
    created_at: float


@dataclass(frozen=True)
class RunStats:
    finished_at: float
    job: str
    hits: int
    misses: int
    stored: int
    saved_usd: float


@dataclass(frozen=True)
class CacheStats:
    path: Path
    entries: int
    size_bytes: int
    models: dict[str, int]
    oldest: float | None
    newest: float | None
    runs: list[RunStats]
