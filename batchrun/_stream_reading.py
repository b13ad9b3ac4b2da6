"""What a stream's events say: the reading so far, each chunk read into it (content, reasoning,
refusal, tool-call deltas, finish reason, usage), and what is wrong with a chunk's shape.

Tool calls are the OpenAI delta shape OpenRouter relays (streaming.mdx shows none): a call's
first delta at an index brings its id and name, later ones at that index its arguments' pieces.
A delta at an index in use that brings another id begins another call: adapters stream parallel
calls all at index 0 (or with none), and the second was glued onto the first (break55 F1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._charges import reported_charge
from ._generation import Flight, valid_generation_id
from ._reply import MAX_TOOL_CALLS, type_name
from ._routing import answering_provider
from ._scrub import Scrubber


@dataclass
class Reading:
    """What the stream said so far."""

    flight: Flight
    model: str | None = None
    provider: str | None = None
    by_metadata: bool = False  # `provider` is the one `openrouter_metadata` selected: no chunk's own field replaces it
    service_tier: str | None = None
    finish_reason: str | None = None
    native_finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    choice_error: Any = None  # an error in the choice, or the finish reason "error": raised at the end
    mid_stream: bool = False  # the error came as the documented top-level error event
    ttft_ms: float | None = None
    first_token: bool = False
    done: bool = False
    size: int = 0  # bytes read so far, what the cap counts

    @property
    def generation_id(self) -> str | None:
        return self.flight.generation_id

    @generation_id.setter
    def generation_id(self, value: str | None) -> None:
        self.flight.generation_id = value

    @property
    def answered(self) -> bool:
        """The choice finished, and not with an error: what came after it can add only usage."""
        return self.finish_reason not in (None, "error") and self.choice_error is None

    def __post_init__(self) -> None:
        self.parts: list[str] = []
        # The other texts a delta carries, joined as content is: a plain reply records them too
        # (verify23: streams dropped them).
        self.reasoning: list[str] = []
        self.refusal: list[str] = []
        self.calls: list[dict[str, Any]] = []  # in the order they began, bounded (MAX_TOOL_CALLS)
        self.open_calls: dict[int, dict[str, Any]] = {}  # the call each index's deltas go to now


def read_chunk(chunk: dict[str, Any], reading: Reading, scrub: Scrubber) -> None:
    if reading.generation_id is None:
        reading.generation_id = valid_generation_id(chunk.get("id"), scrub)
    for field in ("model", "service_tier"):
        if isinstance(chunk.get(field), str):
            setattr(reading, field, chunk[field][:200])
    # The router's metadata comes on the last chunk before [DONE] (router-metadata.mdx): its
    # selected endpoint is who answered, as in a plain reply, over any chunk's `provider` (out-161
    # F2: streamed rows recorded none, or the last chunk's, where a plain reply said Azure).
    metadata = chunk.get("openrouter_metadata")  # on one chunk of a stream: no call for the others
    named = None if metadata is None else answering_provider({"openrouter_metadata": metadata}, scrub.text)
    if named is not None:
        reading.provider, reading.by_metadata = named, True
    elif isinstance(chunk.get("provider"), str) and not reading.by_metadata:
        reading.provider = chunk["provider"][:200]
    usage = chunk.get("usage")
    if isinstance(usage, dict) and not _costs_less(usage, reading.usage):
        reading.usage = usage
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return
    choice = choices[0]
    delta = choice.get("delta")
    if isinstance(delta, dict):
        content = delta.get("content")
        if isinstance(content, str) and content:
            reading.parts.append(content)
            reading.first_token = True
        if isinstance(delta.get("tool_calls"), list):
            _read_tool_deltas(delta["tool_calls"], reading)
        if isinstance(delta.get("reasoning"), str) and delta["reasoning"]:
            reading.reasoning.append(delta["reasoning"])
            reading.first_token = True  # a reasoning token is a first token too
        if isinstance(delta.get("refusal"), str) and delta["refusal"]:
            reading.refusal.append(delta["refusal"])
    for field in ("finish_reason", "native_finish_reason"):
        if isinstance(choice.get(field), str):
            setattr(reading, field, choice[field])


def _read_tool_deltas(deltas: list[Any], reading: Reading) -> None:
    for delta in deltas:
        if not isinstance(delta, dict):
            continue
        index = delta.get("index", 0)
        if not isinstance(index, int) or isinstance(index, bool):
            continue
        call = reading.open_calls.get(index)
        # An empty id is none: DashScope/Qwen adapters send "" on every continuation delta (verify58 F1).
        new_id = delta.get("id") if isinstance(delta.get("id"), str) and delta.get("id") else None
        if call is None or (new_id is not None and call["id"] is not None and new_id != call["id"]):
            if len(reading.calls) >= MAX_TOOL_CALLS:
                continue
            call = {"index": index, "id": None, "name": None, "pieces": []}
            reading.calls.append(call)
            reading.open_calls[index] = call
        function: dict[str, Any] = delta["function"] if isinstance(delta.get("function"), dict) else {}
        if call["id"] is None and new_id is not None:
            call["id"] = new_id
        if call["name"] is None and isinstance(function.get("name"), str):
            call["name"] = function["name"]
        if isinstance(function.get("arguments"), str):
            call["pieces"].append(function["arguments"])  # joined once at the end: no quadratic copying
        reading.first_token = True


def streamed_calls(reading: Reading) -> list[dict[str, Any]]:
    """The streamed calls in the non-streamed shape, for _reply.tool_calls_of: by index, and at
    one index in the order they began."""
    calls = sorted(reading.calls, key=lambda c: c["index"])  # stable: one index's calls keep their order
    return [
        {"id": c["id"], "function": {"name": c["name"], "arguments": "".join(c["pieces"]) if c["pieces"] else None}}
        for c in calls
    ]


def _costs_less(usage: dict[str, Any], earlier: dict[str, Any] | None) -> bool:
    """A second usage chunk that reports a lower cost than the first, or none it can be read by,
    is not believed over it: the last one won, and a `cost: 0` after the real one recorded the row
    at $0 (break14h H13); a repeat with the tokens and no cost, at an estimate 73x low (break55 F5).
    Batch mode takes the larger of two figures too (_batch_costs)."""
    if earlier is None:
        return False
    # What each counts (a BYOK answer's fee with its upstream cost), not the fee alone: a fee of
    # $0.0001 replaced a BYOK usage of $0 plus $0.012 upstream (verify14i V10).
    now, before = reported_charge(usage), reported_charge(earlier)
    return before is not None and (now is None or now < before)


def shape_problem(chunk: dict[str, Any], finished: bool) -> str | None:
    """What is wrong with a chunk's `choices` (the documented ChatStreamChunk), if anything:
    the shapes, a choice other than the one asked for (verify23: merged into the answer), text
    that is not text (dropped), or text after the choice finished (appended)."""
    choices = chunk.get("choices", [])
    if not isinstance(choices, list):
        return f"choices is {type_name(choices)}, not a list"
    for choice in choices:
        if not isinstance(choice, dict):
            return f"choice is {type_name(choice)}, not an object"
        if choice.get("index", 0) != 0:
            return f"choice index is {str(choice['index'])[:20]}: one choice was asked for"
        delta = choice.get("delta", {})
        if not isinstance(delta, dict) and delta is not None:
            return f"delta is {type_name(delta)}, not an object"
        content = (delta or {}).get("content")
        if content is not None and not isinstance(content, str):
            return f"delta content is {type_name(content)}, not text"
        if finished and (content or (delta or {}).get("tool_calls")):
            return "delta after the choice's finish_reason"
    return None


def choice_error(chunk: dict[str, Any]) -> Any:
    choices = chunk.get("choices")
    return choices[0].get("error") if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
