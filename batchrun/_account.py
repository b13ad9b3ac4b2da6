"""The account around a run: prices and balance before it, usage after it.

Pre-flight reads `/models`, then `/models/{author}/{slug}/endpoints` once per model (each
provider's price; the worst case needs the dearest one the request may be routed to),
and with a management key the account's balance (`/credits`). The end of every run makes
its last cost lookups and reconciles the key's usage with the ledger.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Any

from ._charges import ChargeBook
from ._client import ModelInfo, OpenRouterClient
from ._costs import EndpointsRead
from ._exceptions import RequestFailed
from ._ledger import CreditLedger
from ._reconcile import key_usage, reconcile
from ._retry import RetryPolicy, retry_call


async def read_endpoints(
    client: OpenRouterClient,
    models: dict[str, ModelInfo] | None,
    wanted: Iterable[str],
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    time_left: Callable[[], float | None] = lambda: None,
) -> dict[str, EndpointsRead]:
    """Each listed model's endpoints, read once (their prices differ by provider), retried
    like a chat request. A list that cannot be read is its error kind instead: the /models
    price alone would not bound a dearer endpoint, so that model's worst case is unknown.
    An endpoint without the listing (404) is priced from /models."""
    endpoints: dict[str, EndpointsRead] = {}
    if models is None:
        return endpoints
    for model in sorted(wanted):
        if model not in models:
            continue
        try:
            if policy is None or sleep is None:
                endpoints[model] = await client.endpoints(model)
            else:
                endpoints[model] = await retry_call(partial(client.endpoints, model), policy, sleep, time_left)
        except RequestFailed as failure:
            endpoints[model] = failure.kind
    return endpoints


async def read_balance(client: OpenRouterClient, management_key: str | None) -> float | None:
    """The account's balance from /credits, which needs a management key."""
    if not management_key:
        return None
    try:
        return await client.credits(management_key)
    except RequestFailed:
        return None


async def reconcile_run(
    client: OpenRouterClient, ledger: CreditLedger, book: ChargeBook, start_usage: float | None
) -> dict[str, Any]:
    """Last lookups for charges still unknown, then the key's usage against the ledger."""
    await book.retry_lookups()
    end_usage = None
    if start_usage is not None:
        with contextlib.suppress(RequestFailed):  # unread: reported as not reconciled (delta null)
            end_usage = key_usage(await client.key_info())
    return reconcile(start_usage, end_usage, ledger, book)
