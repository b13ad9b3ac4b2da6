"""Client calls for OpenRouter's Batch API (beta): submit, poll, cancel; typed batch objects.

The only source is the Batch API quickstart (`batch-quickstart.mdx`); the OpenAPI spec
(`openapi/openapi.yaml`) does not list these paths. Documented and relied on here:
`POST /api/beta/batches` with `endpoint` and `model` serialized before `requests` (a 400
otherwise), answered `202` with a batch object in `validating`; `GET /api/beta/batches/:id`;
statuses `validating`, `in_progress`, `finalizing`, `completed`, `failed`, `expired`,
`cancelling`, `cancelled` (the terminal ones: completed, failed, expired, cancelled); inline
`results` once completed, each with exactly one of `response` (`status_code`, `body`) or
`error`, mapped back by `custom_id`; batch-level `usage.cost` as the charge.

Not documented, so not relied on: a list endpoint, batch metadata, idempotency keys, the
shape of a per-item `error`, whether result bodies carry `usage`, and a cancel endpoint.
`cancel` posts to `/api/beta/batches/:id/cancel` (OpenAI's shape, which the documented
`cancelling`/`cancelled` statuses suggest) and reports plainly when the endpoint has none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import orjson

from ._classify import reply_date
from ._client import ChatResult, OpenRouterClient
from ._costs import CostModel
from ._exceptions import ConfigError, Rejected, RequestFailed, Transient
from ._formats import short
from ._generation import valid_generation_id
from ._matrix import Request
from ._pricing import MAX_CHARGE_USD, money
from ._reply import Reply, count, loads

CHAT_ENDPOINT = "/v1/chat/completions"
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
STATUSES = TERMINAL | {"validating", "in_progress", "finalizing", "cancelling"}


def batches_url(base_url: str) -> str:
    """`https://openrouter.ai/api/v1` -> `https://openrouter.ai/api/beta/batches`."""
    base = base_url.rstrip("/")
    if not base.endswith("/api/v1"):
        raise ConfigError(
            f"batch mode needs OpenRouter's Batch API, found beside an .../api/v1 base URL; {base} is not one"
        )
    return base[: -len("/v1")] + "/beta/batches"


def submission_body(model: str, items: list[tuple[str, bytes]]) -> bytes:
    """The POST body, built by hand so `endpoint` and `model` come before `requests` (the API
    stream-parses it and answers 400 otherwise) and each `body` is the exact bytes sync mode
    would send."""
    head = orjson.dumps({"endpoint": CHAT_ENDPOINT, "model": model})[:-1]
    requests = b",".join(b'{"custom_id":' + orjson.dumps(cid) + b',"body":' + body + b"}" for cid, body in items)
    return head + b',"requests":[' + requests + b"]}"


@dataclass(frozen=True)
class BatchItem:
    custom_id: str
    result: ChatResult | None
    failure: RequestFailed | None


@dataclass(frozen=True)
class BatchInfo:
    id: str
    status: str
    request_counts: dict[str, int]
    cost: float | None  # batch-level usage.cost: what OpenRouter charges
    usage: dict[str, Any] | None
    error: str | None
    results: list[dict[str, Any]] | None  # raw items; read them with BatchClient.items
    completed: int | None = None  # request_counts.completed as sent (None: absent or not a count)
    model: str | None = None  # as the batch object says (scrubbed), to check an adopted batch
    created_at: float | None = None  # epoch seconds, as the batch object says
    server_ahead_s: float = 0.0  # the reply's Date less our clock (0: no Date), for created_at

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _exact_count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


# What one result item may take in a batch's reply: 64 KiB, and 16 bytes (a token's text as
# JSON, escaped) per completion token its request allows (verify22 N3: answers of max_tokens
# 32,000 passed a flat 64 KiB each).
ITEM_BYTES = 64 * 1024
BYTES_PER_TOKEN = 16
# The most one poll's reply may take, whatever its rows allow: a batch's rows without max_tokens
# are allowed their model's listed maximum (out-100 F3), and a gzip bomb answering a poll of
# 10,000 such rows then took gigabytes (out-103 F4). A batch past it is said, and max_tokens or a
# smaller batch_max_requests brings it under.
MAX_POLL_BYTES = 1 << 30


def item_allowance(request: Request | None, costs: CostModel | None = None) -> int:
    """What the result item of `request` may take in its batch's reply: by its completion bound, its
    max_tokens or, without one, the model's listed maximum its worst case is costed at (out-100 F3:
    64 KiB a row without max_tokens, and a paid batch of long answers was never collected)."""
    body = request.body if request is not None else {}
    tokens = max((count(body.get(name)) or 0 for name in ("max_completion_tokens", "max_tokens")), default=0)
    if request is not None and costs is not None:
        tokens = max(tokens, costs.completion_cap(request) or 0)
    return ITEM_BYTES + BYTES_PER_TOKEN * tokens


class BatchClient:
    """The Batch API over an OpenRouterClient: same HTTP client, key, scrubbing and classifier."""

    def __init__(self, client: OpenRouterClient) -> None:
        self.client = client
        self.url = batches_url(client.base_url)

    async def _call(self, method: str, url: str, content: bytes | None = None, max_bytes: int = 0) -> tuple[Reply, Any]:
        client = self.client
        request = client._http.build_request(method, url, content=content, headers=client._auth(client._api_key))
        reply = await client._exchange(request, max_bytes=max_bytes)  # size-capped, like every reply
        if reply.status not in (200, 201, 202):
            raise client._failure(reply)  # the error object, or the body's text scrubbed then cut
        try:
            # As a sync reply is read: NaN or Infinity in a cost is a cost not believed, not a
            # batch object never read (break22 M1: polled for ever, its paid answers unrecorded).
            data = loads(reply.body)
        except orjson.JSONDecodeError:
            data = None
        return reply, data

    def _info(self, data: Any, submitted: bool = False) -> BatchInfo:
        """A batch object, checked: a server that lies about its shape is a Transient failure."""
        status = None if submitted else 200
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            # After a submission's 2xx the batch may exist whatever the body says: in doubt (no
            # HTTP status), held and never submitted again, like a refused id (break-14c N2).
            raise Transient("bad_response", "the Batch API answered something that is not a batch object", status)
        if data.get("status") not in STATUSES:  # named, as it came (break49 F4: "not a batch object")
            shown = short(self.client.scrub.text(str(data.get("status"))), 40)  # scrubbed whole, then cut
            raise Transient(
                "bad_response", f"the Batch API answered a batch status it does not document: {shown}", status
            )
        results = data.get("results")
        counts = data.get("request_counts")
        counts = counts if isinstance(counts, dict) else {}
        said_done = bool(_exact_count(counts.get("completed")))
        if data["status"] == "completed" and not isinstance(results, list) and (results is not None or said_done):
            # "When a batch completes, `results` is returned inline as an array" (batch-quickstart.mdx):
            # read as no result for any row, every row was an error to pay for again (break49 F2).
            # Null (or none) with no request said completed: none; its rows get their share, as errors.
            raise Transient(
                "bad_response", "the Batch API answered a completed batch whose results are no array", status
            )
        if valid_generation_id(data["id"], self.client.scrub) is None:
            # The id is kept in X.batches.json and sent back in URLs: one that is not an id, or
            # holds a key or a fragment of one, is never kept (break-14b C14). After a submission
            # the batch may exist: no HTTP status makes it "in doubt", never submitted again.
            raise Transient("bad_response", "the Batch API answered a batch id that is not an id", status)
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
        cost = money(usage.get("cost")) if usage else None  # finite, non-negative, or unknown
        requests = _exact_count(counts.get("total")) or (len(results) if isinstance(results, list) else 0)
        if cost is not None and cost > MAX_CHARGE_USD * max(1, requests):
            cost = None  # no batch of its requests costs that: not believed, as one answer's (out-105 F3)
        error = data.get("error")
        if isinstance(error, dict):
            error = str(error.get("message") or error)
        return BatchInfo(
            id=data["id"],
            status=data["status"],
            request_counts={k: _count(counts.get(k)) for k in ("total", "completed", "failed")},
            cost=cost,
            usage=usage,
            error=None if error is None else self.client.scrub.text(str(error))[:500],
            results=results if isinstance(results, list) else None,
            completed=_exact_count(counts.get("completed")),
            model=short(self.client.scrub.text(data["model"]), 200) if isinstance(data.get("model"), str) else None,
            created_at=count(data.get("created_at")),  # whole epoch seconds (batch-quickstart.mdx), or None
        )

    async def submit(self, model: str, items: list[tuple[str, bytes]]) -> BatchInfo:
        _, data = await self._call("POST", self.url, submission_body(model, items))
        return self._info(data, submitted=True)

    async def get(self, batch_id: str, allowance: int = 0) -> BatchInfo:
        """The batch object. A completed batch carries every result inline, in one reply: its
        cap is max_response_bytes plus `allowance`, what its rows' answers may take
        (`item_allowance`; break22 M2: a batch of 8,100 one-word answers passed the 4 MiB
        cap, and no poll could ever collect it)."""
        cap = min(self.client.max_response_bytes + allowance, max(MAX_POLL_BYTES, self.client.max_response_bytes))
        reply, data = await self._call("GET", f"{self.url}/{batch_id}", max_bytes=cap)
        date = reply_date(reply.headers)  # ahead or behind: an adopted batch's created_at is put on our clock
        ahead = 0.0 if date is None else date - self.client._clock.time()
        return replace(self._info(data), server_ahead_s=ahead)

    async def cancel(self, batch_id: str) -> BatchInfo:
        try:
            _, data = await self._call("POST", f"{self.url}/{batch_id}/cancel")
        except RequestFailed as failure:
            if failure.http_status in (404, 405, 501):
                raise ConfigError(
                    f"{self.url} has no cancel endpoint for batches (the Batch API quickstart documents "
                    "none): cancel it in OpenRouter's dashboard"
                ) from None
            raise
        return self._info(data)

    def items(self, info: BatchInfo) -> dict[str, BatchItem]:
        """custom_id -> the item's answer or its classified failure, read like a sync reply."""
        return self.read_items(info)[0]

    def read_items(self, info: BatchInfo) -> tuple[dict[str, BatchItem], list[BatchItem]]:
        """`items`, and the items it drops where several are for one custom_id: the row keeps
        the last answer, or the last failure if none answered (a failure after a paid answer
        made the row an error at $0, to be bought again: verify34 N3). What the dropped ones say
        they cost is charged all the same (break34 M2: not counted, a batch whose items summed
        to $1.20 counted $0.00003 against a $1 budget)."""
        out: dict[str, BatchItem] = {}
        repeated: list[BatchItem] = []
        for raw in info.results or []:
            if not isinstance(raw, dict) or not isinstance(raw.get("custom_id"), str):
                continue  # an item we cannot map back: its row stays without a result
            item = self._item(raw)
            earlier = out.get(item.custom_id)
            if earlier is not None and earlier.result is not None and item.result is None:
                repeated.append(item)
                continue
            if earlier is not None:
                repeated.append(earlier)
            out[item.custom_id] = item
        return out, repeated

    def _item(self, raw: dict[str, Any]) -> BatchItem:
        custom_id = raw["custom_id"]
        response, error = raw.get("response"), raw.get("error")
        if isinstance(response, dict) and not error:
            status = response.get("status_code")
            status = status if isinstance(status, int) and 100 <= status <= 599 else 200
            reply = Reply(status, {}, _as_json(response.get("body")))
            try:
                return BatchItem(custom_id, self.client.read_chat_reply(reply), None)
            except RequestFailed as failure:
                return BatchItem(custom_id, None, failure)
        # The per-item error shape is not documented; read it like a sync error object.
        shaped = error if isinstance(error, dict) else {"message": str(error or "no response and no error")}
        return BatchItem(custom_id, None, self.client.error_object_failure(shaped))


def end_failure(info: BatchInfo) -> RequestFailed:
    """The failure of a row a terminal batch has no result for."""
    if info.status == "completed":
        return Transient("batch_missing_result", f"batch {info.id} returned no result for this row")
    message = info.error or f"the batch ended {info.status}"
    if info.status == "expired":
        return Transient("batch_expired", message)
    if info.status == "lost":
        # Retryable, so `--retry-errors` can submit the rows again: the user's call, since
        # a 404 under another key does not prove the batch never ran.
        return Transient("batch_not_found", message, 404)
    return Rejected("batch_failed", message)


def stray_items(info: BatchInfo, rows: list[str], differing: int = 0) -> str | None:
    """What a batch's results hold beyond one item per row sent: items repeating a row (its
    last answer is the row's; `differing`: rows whose copies answered differently) or for a
    row never sent (not recorded); each one's cost is counted."""
    ids = [raw.get("custom_id") for raw in info.results or [] if isinstance(raw, dict)]
    sent = set(rows)
    repeated = len([i for i in ids if i in sent]) - len(sent & set(ids))
    unknown = sum(i not in sent for i in ids)
    kept = "its last answer is kept"
    if differing:
        kept += f"; {differing} row(s) answered differently by their copies"
    said = [f"{repeated} result item(s) repeat a row ({kept}; each one's cost counted)"] if repeated else []
    said += [f"{unknown} result item(s) are for no row it was sent (not recorded)"] if unknown else []
    return "; ".join(said) or None


def differing_rows(items: dict[str, BatchItem], repeated: list[BatchItem]) -> int:
    """Rows with a dropped copy whose answer is not the one kept: the row's verdict depends on
    which copy is believed."""
    differ = set()
    for item in repeated:
        kept = items[item.custom_id].result
        if item.result is not None and kept is not None and item.result.content != kept.content:
            differ.add(item.custom_id)
    return len(differ)


def _as_json(body: Any) -> bytes:
    """An item's body as the bytes a sync reply would have been, for the same reader. orjson
    refuses an integer past 64 bits, which Python's json module read (verify22 N1: a
    token count of 10**400 in one item was a traceback at every resume); json writes it, and
    the reader drops it as it drops such a count in a sync reply."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        return json.dumps(body).encode()
