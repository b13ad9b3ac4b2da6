"""Streamed answers over server-sent events, as api_reference/streaming.mdx describes them.

A keep-alive comment first (": OPENROUTER PROCESSING"), then `chat.completion.chunk`
events of a few tokens each, a last chunk with `finish_reason` and `usage`, and
`data: [DONE]`. The generation id is in the `X-Generation-Id` header and every chunk.
Cancelling stops generation and billing (like a provider that supports cancellation):
a client that goes away is billed the prompt and the tokens generated until then.
`fault.midstream` sends the documented mid-stream error event after the first chunk
(finish_reason "error": not billed, zero-completion-insurance.mdx).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from ._billing import BillingRoutes, count_tokens, usage_block
from ._errors import PROVIDER
from ._extras import Extras
from ._faults import hang
from ._keys import SimKey


def router_metadata(model: str, provider: str = PROVIDER) -> dict[str, Any]:
    """The opt-in `openrouter_metadata` of a reply (guides/features/router-metadata.mdx)."""
    return {
        "requested": model,
        "strategy": "direct",
        "region": None,
        "summary": f"available=1, selected={provider}",
        "attempt": 1,
        "is_byok": False,
        "endpoints": {"total": 1, "available": [{"provider": provider, "model": model, "selected": True}]},
        "attempts": [{"provider": provider, "model": model, "status": 200}],
    }


@dataclass
class Generation:
    """What one streamed answer is: its id, who serves it, its text and its prices."""

    id: str
    model: str
    provider: str
    content: str
    prompt_tokens: int
    prices: tuple[float, float, float]  # prompt, completion, request
    max_tokens: int
    row: str | None
    fault: str | None
    tool_calls: list[dict[str, Any]] | None = None  # sent as deltas: name first, arguments in pieces
    extras: Extras = field(default_factory=Extras)  # reasoning (before the answer) and web search
    tier: dict[str, str] = field(default_factory=dict)  # the served tier, when one was asked for

    def completion(self, generated: int) -> int:
        """Completion tokens billed once `generated` of the answer's are out: reasoning comes first."""
        return generated + self.extras.reasoning_within(generated, self.max_tokens)


def _event(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class StreamReplies(BillingRoutes):
    """Streaming, mixed into the Simulator (which owns the state named here)."""

    def _chunk(self, gen: Generation, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": gen.id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": gen.model,
            "provider": gen.provider,
            **gen.tier,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "native_finish_reason": finish}],
        }

    def _cost(self, gen: Generation, completion_tokens: int) -> float:
        prompt, completion, request = gen.prices
        if prompt < 0:
            return 0.0
        return gen.prompt_tokens * prompt + gen.completion(completion_tokens) * completion + request

    async def stream_answer(self, request: web.Request, key: SimKey, gen: Generation) -> web.StreamResponse:
        config = self.config
        words = gen.content.split(" ")
        response = web.StreamResponse(
            status=200,
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Generation-Id": gen.id},
        )
        generated = 0  # completion tokens produced so far
        finish = "stop"
        try:
            await response.prepare(request)
            await response.write(b": OPENROUTER PROCESSING\n\n")
            for index, call in enumerate(gen.tool_calls or []):
                arguments = call["function"]["arguments"]
                head = {"index": index, "id": call["id"], "type": "function"}
                deltas = [{**head, "function": {"name": call["function"]["name"], "arguments": ""}}]
                half = len(arguments) // 2
                deltas += [{"index": index, "function": {"arguments": p}} for p in (arguments[:half], arguments[half:])]
                for delta in deltas:
                    await response.write(_event(self._chunk(gen, {"role": "assistant", "tool_calls": [delta]})))
                generated += count_tokens(config, arguments)
                finish = "tool_calls"
            step = max(1, config.stream_chunk_tokens)
            for start in range(0, len(words), step):
                piece = " ".join(words[start : start + step]) + (" " if start + step < len(words) else "")
                generated += count_tokens(config, piece)
                await response.write(_event(self._chunk(gen, {"role": "assistant", "content": piece})))
                if gen.fault == "midstream":
                    # The docs' MidStreamError: a numeric code and the typed error_type; a 500-class
                    # message is generic and has no provider_code (errors-and-debugging.mdx:246-280).
                    typed = {"error_type": "provider_unavailable"}
                    error = {"code": 502, "message": "Provider returned error", "metadata": typed}
                    await response.write(_event({**self._chunk(gen, {"content": ""}, "error"), "error": error}))
                    return response  # finish_reason error: not billed
                if gen.fault in ("hang", "stall"):
                    await hang(request, config.hang_s)  # stops producing; the client gives up
                if generated >= gen.max_tokens:
                    finish = "length"
                    break
                if config.stream_chunk_ms:
                    await asyncio.sleep(config.stream_chunk_ms / 1000)
            tokens = (gen.prompt_tokens, gen.completion(generated))
            cost, upstream = self.bill(
                key, gen.row, gen.id, gen.model, gen.provider, self._cost(gen, generated), False, tokens
            )
            usage = {
                **usage_block(gen.prompt_tokens, gen.completion(generated), cost, config.byok, upstream),
                **gen.extras.usage(gen.completion(generated) - generated),
            }
            last = {**self._chunk(gen, {}, finish), "usage": usage}
            if request.headers.get("X-OpenRouter-Metadata", "").lower() == "enabled":
                last["openrouter_metadata"] = router_metadata(
                    gen.model, gen.provider
                )  # router-metadata.mdx: the final chunk
            await response.write(_event(last))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionResetError:
            self._cancelled(key, gen, generated)
        except asyncio.CancelledError:
            self._cancelled(key, gen, generated)
            raise
        return response

    def _cancelled(self, key: SimKey, gen: Generation, generated: int) -> None:
        """The client cancelled: generation stops, and what was generated is billed."""
        self.stats.cancelled_streams += 1
        tokens = (gen.prompt_tokens, gen.completion(generated))
        self.bill(key, gen.row, gen.id, gen.model, gen.provider, self._cost(gen, generated), True, tokens)
        self.generations[gen.id].update(cancelled=True, streamed=True)
