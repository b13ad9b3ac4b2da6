"""A stored answer, read as a reply from a server is read before it becomes a hit, and
whether it is one for the run that reads it (`why_not_a_hit`: planning, lookups and `cache
explain` all ask it).

The cache is a file anything may have written: another batchrun, a user with the sqlite3
shell, CI's cache restored from another branch. `CachedAnswer.from_row` checks each column's
type; this checks what a reply's reader checks of the same fields (break22 M3: an entry whose
content and generation id held the run's key wrote the key into the results, and one with
100 tool calls of 200 KB wrote a 20 MB record): every string scrubbed of the run's keys, the
generation id only when it is an id, usage as `usage_of` keeps it, tool calls bounded as
`tool_calls_of` bounds them. An answer larger than this run's reply cap could not have come
from a reply it would read: a miss.
"""

from __future__ import annotations

import re
from dataclasses import replace

from ._cache_values import CachedAnswer, Probe
from ._generation import valid_generation_id
from ._matrix import Request
from ._reply import MAX_TOOL_CALLS, str_of, tool_call, usage_of
from ._scrub import Scrubber

# When the answer first arrived, as `utc()` writes it (a stored time is never trusted as text).
_UTC_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|\+00:00)")


WHOLE = frozenset({"stop", "tool_calls"})


def whole_answer(finish_reason: str | None, store_length: bool) -> bool:
    """An answer a cache keeps and hits: one that ended as a whole answer does, or was cut at
    max_tokens where the job allows that (`store_length`)."""
    return finish_reason in WHOLE or (store_length and finish_reason == "length")


def answer_problem(answer: CachedAnswer, max_reply_bytes: int | None) -> str | None:
    """Why `answer` is no answer a reply within `max_reply_bytes` could carry, or None."""
    if max_reply_bytes is not None and len(answer.to_json()) > max_reply_bytes:
        return f"its stored answer is over this job's max_response_bytes {max_reply_bytes}"
    if answer.generated_at and not _UTC_TIME.fullmatch(answer.generated_at):
        return "its stored time is not a UTC time"  # verify22 N2: copied into the record as it was
    return None


def checked_hit(answer: CachedAnswer, scrub: Scrubber, max_reply_bytes: int | None) -> CachedAnswer | None:
    """`answer` as a reply's reader would have kept it, or None when it is no answer a reply
    within `max_reply_bytes` could carry."""
    if answer_problem(answer, max_reply_bytes) is not None:
        return None
    calls = tuple(
        tool_call(
            {"id": call.get("id"), "function": {"name": call.get("name"), "arguments": call.get("arguments")}}, scrub
        )
        for call in answer.tool_calls[:MAX_TOOL_CALLS]
    )
    return replace(
        answer,
        generation_id=valid_generation_id(answer.generation_id, scrub),
        response_model=str_of(answer.response_model, scrub),
        provider=str_of(answer.provider, scrub),
        content=scrub.text(answer.content),
        finish_reason=str_of(answer.finish_reason, scrub),
        native_finish_reason=str_of(answer.native_finish_reason, scrub),
        usage=usage_of(answer.usage, scrub),
        refusal=str_of(answer.refusal, scrub),
        reasoning=str_of(answer.reasoning, scrub),
        cost_status=str_of(answer.cost_status, scrub),
        tool_calls=calls,
    )


def why_not_a_hit(
    request: Request, probe: Probe, max_reply_bytes: int | None, store_length: bool, batch: bool
) -> str | None:
    """Why a stored answer to exactly this request is no hit for the run that reads it, or
    None: the reader's cap, store_length and checks decide, not the storing run's."""
    answer = probe.answer
    if answer is None:
        return "its stored answer is not one a reply could carry (no text, or not an answer's shape)"
    if answer.cost is None:  # a cost the file holds that is no number: never passed off as free
        return "its stored cost is not a usable number"
    if max_reply_bytes is not None and (answer.reply_bytes is None or answer.reply_bytes > max_reply_bytes):
        return f"its reply was {answer.reply_bytes or '?'} bytes, over this job's max_response_bytes {max_reply_bytes}"
    if answer.finish_reason == "length" and not store_length:
        return "it was cut at max_tokens (finish_reason length) and this job does not set run.cache.store_length"
    if not whole_answer(answer.finish_reason, store_length):
        return f"its answer did not end as a whole one does (finish_reason {answer.finish_reason})"
    if answer.latency_ms is None and not batch and any("max_latency_ms" in check for check in request.checks):
        return "it was collected in batch mode (no latency) and this row has a max_latency_ms check"
    return answer_problem(answer, max_reply_bytes)


def probe_of(request: Request, answer: CachedAnswer) -> Probe:
    """A looked-up answer as `usable` judges it (its body was compared by the lookup)."""
    return Probe(request.payload, answer)
