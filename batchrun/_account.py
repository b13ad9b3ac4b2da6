"""The account around a run: prices and balance before it, usage after it.

Pre-flight reads `/models`, then `/models/{author}/{slug}/endpoints` once per model (each
provider's price; the worst case needs the dearest one the request may be routed to),
and with a management key the account's balance (`/credits`). The end of every run makes
its last cost lookups and reconciles the key's usage with the ledger.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Any

from ._charges import ChargeBook
from ._client import ModelInfo, OpenRouterClient
from ._costs import EndpointsRead
from ._cut_off import CutOff
from ._exceptions import RequestFailed
from ._ledger import CreditLedger
from ._management import ManagementApi
from ._reconcile import KeyStart, add_warning, reconcile
from ._retry import RetryPolicy, retry_call

SUMMARY_NOISE_USD = 1e-8  # below a summary's eight decimal places


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


def endpoints_outage(endpoints: dict[str, EndpointsRead], bounded: bool, allow_unknown_prices: bool) -> None:
    """Under a limit, a listing that could not be read leaves a worst case unknown: raise its
    failure (exit 1, the endpoint failed before the run started), as for any start-up call. Read as
    bad configuration (exit 2, with advice to reserve $0), a transient 502 of /endpoints told a
    nightly job to fix its file and to turn its price bound off (break38 F3)."""
    outages = [(model, why) for model, why in sorted(endpoints.items()) if isinstance(why, str)]
    if outages and bounded and not allow_unknown_prices:
        model, kind = outages[0]
        raise RequestFailed(kind, f"/models/{model}/endpoints could not be read, so its worst case is not known")


async def read_balance(
    client: OpenRouterClient,
    management_key: str | None,
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]],
    time_left: Callable[[], float | None],
) -> float | None:
    """The account's balance from /credits, which needs a management key; retried like /key,
    and like /key a failure that outlasts the retries stops pre-flight (RequestFailed): with
    a management key given, the balance is a bound the run cannot keep without it."""
    if not management_key:
        return None
    return await retry_call(ManagementApi(client, management_key).credits, policy, sleep, time_left)


async def reconcile_run(
    client: OpenRouterClient,
    ledger: CreditLedger,
    book: ChargeBook,
    start: KeyStart,
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]],
    time_left: Callable[[], float | None],
    cut_off: CutOff | None = None,
    seen: KeyStart | None = None,
) -> dict[str, Any]:
    """The key's usage against the ledger (after the run's last lookups: `late_lookups`). The
    /key read is retried like start-up's (break-14 #15); when it still fails, or its usage
    cannot be read, the reconciliation says it was not done (a warning), never nothing; so
    does a start-up /key read whose usage could not be read (`start.unread` says why). The
    key's spend is measured like the ledger's (KeyStart.followed), or the fall of its
    limit_remaining when that is larger (_reconcile.key_spend)."""
    end_usage, why, info = None, None, None
    if start.usage is not None:
        try:
            async with (cut_off or CutOff()).bound():  # the wind-down's end, after a stop
                info = await retry_call(client.key_info, policy, sleep, time_left)
        except TimeoutError:
            why = "no answer before the run had to end"
        except RequestFailed as failure:
            why = f"{failure.kind}: {failure.message[:200]}"
        else:
            usage, problem = start.followed(info)
            fell = seen.followed(info)[1] if seen is not None and problem is None else None
            if fell is not None:  # below a read during the run: no usage to reconcile with
                why = fell
            elif usage is None:
                why = "its usage is missing, negative or not a number"
            elif problem is not None:
                end_usage = usage  # gone down: the reconciliation says so
            else:
                end_usage = start.usage + start.spend(usage, info)
    reconciliation = reconcile(start.usage, end_usage, ledger, book, why, start.unread)
    if (appeared := _limit_appeared(start, info)) is not None:
        add_warning(reconciliation, appeared)
    return reconciliation


def _limit_appeared(start: KeyStart, info: dict[str, Any] | None) -> str | None:
    """A limit the key had not at start-up, used up at the end: the run knew of none, so nothing
    held it back (out-172 F2: exit 0, and not a word, for a key 7.6 times past it)."""
    if info is None or start.limit is not None:
        return None
    # As parse_key_data left them: a limit in USD or None, limit_remaining a finite number or None.
    limit, remaining = info.get("limit"), info.get("limit_remaining")
    if limit is None or remaining is None or remaining > 0:
        return None
    return (
        f"the key was given a limit of ${limit:.6f} during the run, and it is used up (limit_remaining "
        f"${remaining:.6f}): the run had no limit to keep to; the key's requests are refused until it is raised"
    )


def counted_at_end(reconciliation: dict[str, Any], ledger: CreditLedger, sent: bool = True) -> float:
    """What the end-of-run /key read shows charged beyond the ledger, past what the key window
    already counted: spent too, in no record (break14e E9, E2, E8, E10: a run the window never
    stopped forgot it, and its resume spent the budget again; E6: exit 0 for a key charged past
    its limit). Below the cent the warning waits for too: answers under-reporting a small run's
    whole bill tenfold were left uncounted (verify38 N3: $0.00032 for $0.0032 billed); only what
    the summaries' eight decimals cannot show is noise. Noted as `counted_at_end_usd`. A run that
    `sent` nothing was charged nothing: what the key shows is another's (out-122 F4: each resume of
    a finished file on a shared key took it as its own, until one exited 5)."""
    difference = reconciliation.get("difference_usd") or 0.0
    gap = max(0.0, difference - ledger.from_key) if difference > SUMMARY_NOISE_USD and sent else 0.0
    reconciliation["counted_at_end_usd"] = round(gap, 8)
    return gap
