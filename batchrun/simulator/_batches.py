"""The simulator's Batch API: POST /api/beta/batches, GET /api/beta/batches/{id}.

The only source is OpenRouter's Batch API quickstart (`batch-quickstart.mdx`, marked beta);
the OpenAPI spec does not list these paths. What the page documents is modelled as written:

- the body's `endpoint` and `model` must come before `requests` (else 400);
- a request body's own `model` must match the batch's (else the submission is rejected: 400);
- 202 with `status: "validating"`; then `in_progress`, `finalizing`, `completed`, or the
  endings `failed`, `expired`, `cancelled`; `results` is null until `completed`, then inline;
- text only: image, audio, video or file parts fail validation (we end the batch as `failed`);
- on Google models every request must ask for the same `response_format`: validation fails
  the batch and names the first conflicting request;
- billing at 50% of the per-token price; `usage` on the batch reports the charge.

Where the page is silent, the simulator makes a choice and says so here:
- the shape of a per-item `error` (we send `{"code", "message"}`, as sync errors carry);
- whether a result body carries its own `usage` (the example omits it; we include it unless
  `batch_item_usage=false`, so both cases are tested);
- a cancel endpoint: none is documented. `batch_cancel_api=true` serves
  `POST /api/beta/batches/{id}/cancel` in OpenAI's shape, for testing `batches cancel`;
- a list endpoint, metadata, or idempotency keys: none is documented, and none is served.

Timing is a function of the simulator's `clock` (a callable returning seconds), so tests
drive batches through their states with a fake clock instead of sleeping.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from aiohttp import web

from .._parts import non_text_part
from ._answers import tokens
from ._config import SimConfig
from ._grader import tool_calls_for
from ._http import error_response as _error
from ._http import json_response as _json
from ._keys import SimKey, bearer


class BatchHost(Protocol):
    """What the batch routes use of the simulator that serves them."""

    config: SimConfig
    account_key: SimKey
    run_tag: str

    clock: Callable[[], float]

    def chat_key(self, token: str | None) -> SimKey | web.Response: ...

    def answer(
        self, model: str, messages: list[dict[str, Any]], body: dict[str, Any], row: str | None = None
    ) -> str: ...


ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/messages", "/v1/embeddings")
TERMINAL = ("completed", "failed", "expired", "cancelled")


@dataclass
class SimBatch:
    id: str
    model: str
    endpoint: str
    created: float
    requests: list[dict[str, Any]]
    failure: str | None = None  # validation failure, found at submit, shown once validating ends
    cancelled_at: float | None = None
    results: list[dict[str, Any]] | None = None
    usage: dict[str, Any] | None = None


@dataclass
class BatchStats:
    submitted: int = 0
    by_model: Counter[str] = field(default_factory=Counter)
    polls: int = 0
    cancels: int = 0
    billed_usd: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "submitted": self.submitted,
            "by_model": dict(self.by_model),
            "polls": self.polls,
            "cancels": self.cancels,
            "billed_usd": self.billed_usd,
        }


class SimBatches:
    """Batch routes over one Simulator (its keys, prices, answers and config)."""

    def __init__(self, simulator: BatchHost) -> None:
        self.sim = simulator
        self.batches: dict[str, SimBatch] = {}
        self.stats = BatchStats()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/beta/batches", self._submit)
        app.router.add_get("/api/beta/batches/{id}", self._get)
        if self.sim.config.batch_cancel_api:
            app.router.add_post("/api/beta/batches/{id}/cancel", self._cancel)

    def _now(self) -> float:
        return self.sim.clock()

    # -- submit ------------------------------------------------------------------------------
    async def _submit(self, request: web.Request) -> web.Response:
        key = self.sim.chat_key(bearer(request))
        if isinstance(key, web.Response):
            return key
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "Invalid JSON body")
        if not isinstance(body, dict):
            return _error(400, "The body must be a JSON object")
        order = list(body)
        if "requests" in order and any(k in order[order.index("requests") :] for k in ("endpoint", "model")):
            # Documented: the body is stream-parsed, and `requests` before them is a 400.
            return _error(400, "endpoint and model must be serialized before requests")
        endpoint, model, items = body.get("endpoint"), body.get("model"), body.get("requests")
        if endpoint not in ENDPOINTS:
            return _error(400, f"endpoint must be one of {', '.join(ENDPOINTS)}")
        if endpoint != "/v1/chat/completions":
            return _error(400, f"the simulator answers /v1/chat/completions batches only, not {endpoint}")
        if not isinstance(model, str) or model not in self.sim.config.prices:
            return _error(400, f"{model} is not a valid model ID")
        if not isinstance(items, list) or not items:
            return _error(400, "requests must be a non-empty array")
        seen: set[str] = set()
        for index, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("custom_id"), str):
                return _error(400, f"requests[{index}]: custom_id must be a string")
            if item["custom_id"] in seen:
                return _error(400, f"requests[{index}]: custom_id {item['custom_id']!r} is not unique")
            seen.add(item["custom_id"])
            if not isinstance(item.get("body"), dict) or not isinstance(item["body"].get("messages"), list):
                return _error(400, f"requests[{index}]: body must be a chat completion request")
            if item["body"].get("model", model) != model:
                return _error(400, f"requests[{index}]: body.model must match the batch model {model}")
        self.stats.submitted += 1
        self.stats.by_model[model] += 1
        digest = hashlib.sha256(f"{self.sim.run_tag}:{self.stats.submitted}".encode()).hexdigest()[:20]
        batch = SimBatch(f"batch_{digest}", model, endpoint, self._now(), items, self._validation_failure(model, items))
        self.batches[batch.id] = batch
        return _json(self._object(batch), 202)

    def _validation_failure(self, model: str, items: list[dict[str, Any]]) -> str | None:
        for index, item in enumerate(items):
            part = non_text_part(item["body"])
            if part is not None:
                return f"requests[{index}] ({item['custom_id']}): the Batch API is text-only ({part})"
        if model.startswith("google/"):
            first = orjson.dumps(items[0]["body"].get("response_format"), option=orjson.OPT_SORT_KEYS)
            for index, item in enumerate(items):
                if orjson.dumps(item["body"].get("response_format"), option=orjson.OPT_SORT_KEYS) != first:
                    return (
                        f"requests[{index}] ({item['custom_id']}): every request of a batch on a Google "
                        "model must ask for the same response_format"
                    )
        return None

    # -- state -------------------------------------------------------------------------------
    def status(self, batch: SimBatch) -> str:
        config = self.sim.config
        elapsed = self._now() - batch.created
        if batch.cancelled_at is not None:
            return "cancelled" if self._now() - batch.cancelled_at >= config.batch_finalizing_s else "cancelling"
        if elapsed < config.batch_validating_s:
            return "validating"
        if batch.failure is not None:
            return "failed"
        if elapsed < config.batch_validating_s + config.batch_in_progress_s:
            return "in_progress"
        if config.batch_outcome in ("expired", "failed", "cancelled"):
            return config.batch_outcome
        if elapsed < config.batch_validating_s + config.batch_in_progress_s + config.batch_finalizing_s:
            return "finalizing"
        return "completed"

    def _object(self, batch: SimBatch) -> dict[str, Any]:
        status = self.status(batch)
        if status == "completed" and batch.results is None:
            self._complete(batch)
        failed = sum(1 for r in batch.results or [] if r["error"] is not None)
        counts = {"total": len(batch.requests), "completed": 0, "failed": 0}
        if status == "completed":
            counts.update(completed=len(batch.requests) - failed, failed=failed)
        error = None
        if status == "failed":
            error = {"code": 400, "message": batch.failure or "the batch failed"}
        elif status == "expired":
            error = {"code": 408, "message": "the batch did not complete within its 24h window"}
        end = status in TERMINAL
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "model": batch.model,
            "completion_window": "24h",
            "status": status,
            "created_at": int(batch.created),
            "finalized_at": int(self._now()) if end else None,
            "request_counts": counts,
            "usage": batch.usage if status == "completed" and self.sim.config.batch_usage else None,
            "results": batch.results if status == "completed" else None,
            "error": error,
        }

    def _complete(self, batch: SimBatch) -> None:
        """Answer every item once, at half the per-token price, and bill the account key."""
        sim, config = self.sim, self.sim.config
        prompt_price, completion_price, request_price = config.prices[batch.model]
        results, totals = [], Counter[str]()
        cost_total = 0.0
        for index, item in enumerate(batch.requests):
            body, custom_id = item["body"], item["custom_id"]
            draw = int(hashlib.sha256(f"{config.seed}:{batch.id}:{custom_id}".encode()).hexdigest()[:8], 16)
            result: dict[str, Any] = {"id": f"batch_req_{index}", "custom_id": custom_id, "response": None}
            if draw / 0xFFFFFFFF < config.batch_item_error_rate:
                result["error"] = {"code": 502, "message": "Provider returned error"}
                results.append(result)
                continue
            messages = body["messages"]
            # batchrun's custom_id is `<row id>-<body fingerprint>` (an older one's, the row id).
            content = sim.answer(batch.model, messages, body, custom_id.partition("-")[0])
            # Tools are called as in a sync answer (verify21 V7: a batch never called one, so a
            # simulated batch run of a tool job read as a regression).
            calls = tool_calls_for(batch.model, messages, body, config.accuracy.get(batch.model, 0.85))
            max_tokens = int(body.get("max_tokens") or 16384)
            completion_tokens = tokens(content if not calls else json.dumps(calls))
            finish = "tool_calls" if calls else "stop"
            if calls:
                content = ""
            elif completion_tokens > max_tokens:
                content, completion_tokens, finish = content[: max_tokens * 4], max_tokens, "length"
            prompt_tokens = sum(tokens(str(m.get("content", ""))) + 4 for m in messages)
            # Documented: typically 50% of the per-token price; non-token components at full price.
            share = config.batch_price_share
            cost = max(0.0, share * (prompt_tokens * prompt_price + completion_tokens * completion_price))
            cost += max(0.0, request_price)
            cost_total += cost
            totals.update(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
            generation = hashlib.sha256((batch.id + custom_id).encode()).hexdigest()[:20]
            reply: dict[str, Any] = {
                "id": f"gen-batch-{int(batch.created)}-{generation}",
                "object": "chat.completion",
                "created": int(batch.created),
                "model": batch.model,
                "provider": "SimCloud",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content or None, "tool_calls": calls or None},
                        "finish_reason": finish,
                        "native_finish_reason": finish,
                    }
                ],
            }
            if config.batch_item_usage:
                reply["usage"] = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                    "cost": round(cost, 12),
                }
            result["response"] = {"status_code": 200, "request_id": f"request_{index}", "body": reply}
            result["error"] = None
            results.append(result)
        batch.results = results
        batch.usage = {
            "prompt_tokens": totals["prompt_tokens"],
            "completion_tokens": totals["completion_tokens"],
            "total_tokens": totals["prompt_tokens"] + totals["completion_tokens"],
            "cost": round(cost_total, 12),
            "is_byok": False,
        }
        sim.account_key.usage += cost_total
        self.stats.billed_usd += cost_total

    # -- poll and cancel ---------------------------------------------------------------------
    def _find(self, request: web.Request) -> SimBatch | web.Response:
        key = self.sim.chat_key(bearer(request))
        if isinstance(key, web.Response):
            return key
        batch = self.batches.get(request.match_info["id"])
        return _error(404, "No batch with that id") if batch is None else batch

    async def _get(self, request: web.Request) -> web.Response:
        batch = self._find(request)
        if isinstance(batch, web.Response):
            return batch
        self.stats.polls += 1
        return _json(self._object(batch))

    async def _cancel(self, request: web.Request) -> web.Response:
        batch = self._find(request)
        if isinstance(batch, web.Response):
            return batch
        if self.status(batch) in TERMINAL:
            return _error(409, f"batch {batch.id} has already ended")
        self.stats.cancels += 1
        batch.cancelled_at = self._now()
        return _json(self._object(batch))
