"""A per-run API key whose credit limit is the run's budget (OpenRouter management API).

The ledger keeps a run under budget in software; this key makes OpenRouter enforce it
too, so a bug or a second process with the same job cannot spend more. The key expires
a little after the run's deadline: a key left behind by a kill -9 dies on its own.
The key itself and its full hash never leave this module: the audit keeps the label and
a hash prefix only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ._account_reply import CreatedKey
from ._client import OpenRouterClient
from ._cut_off import CutOff
from ._exceptions import ConfigError, RateLimited, RequestFailed, Transient
from ._formats import utc_compact, utc_seconds
from ._management import ManagementApi
from ._reconcile import key_usage
from ._retry import RetryPolicy, retry_call

if TYPE_CHECKING:
    from ._job import Job
    from ._options import RunOptions
    from ._settings import RunSettings

EXPIRY_SLACK_S = 600.0
DAY_S = 86_400.0  # a clock further behind the server's than this is not believed: said
T = TypeVar("T")


def with_key_deadline(settings: RunSettings) -> RunSettings:
    """A run on a per-run key without a deadline ends before its key does: at `key_expiry_s`
    less the grace and the slack (exit 6, resumable). Past it, the key expired mid-run and the
    run ended "the API key was refused", exit 9, which reads as the user's key gone (break33 m3)."""
    deadline = settings.key_expiry_s - settings.grace_s - EXPIRY_SLACK_S
    if not settings.isolated_key or settings.deadline_s is not None or deadline < 60:
        return settings  # (a key_expiry_s too short for that margin keeps the key's life as set)
    from dataclasses import replace

    # The key then lives deadline + grace + slack: key_expiry_s, as before (IsolatedKey.for_run).
    return replace(settings, deadline_s=deadline)


def _not_held_to(limit: object, budget: float) -> bool:
    """Whether a key's `limit` fails to hold a run to `budget` (none, or above it)."""
    return not isinstance(limit, (int, float)) or limit > round(budget, 6) + 1e-9


class IsolatedKey:
    def __init__(
        self,
        client: OpenRouterClient,
        management_key: str,
        name: str,
        expires_at: float,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self._client = client
        self._policy = policy or RetryPolicy()
        self._sleep = sleep
        self._management = ManagementApi(client, management_key)
        self.name = name
        self.expires_at = expires_at
        self._hash: str | None = None
        self.label = name  # the server's label once it answered; till then the name asked for
        self.limit: float | None = None
        self.final_usage: float | None = None
        self.removed: str | None = None  # "deleted" or "disabled"
        self.finished = False  # `finish` ran: a key it could not remove is not tried (and said) again
        self.asking = False  # its creation was asked for, and no reply came yet

    @classmethod
    def for_run(cls, job: Job, options: RunOptions, settings: RunSettings, client: OpenRouterClient) -> IsolatedKey:
        if not options.management_key:
            raise ConfigError(f"--isolated-key needs a management key in ${job.endpoint.management_key_env}")
        now = options.clock.time()
        life = settings.deadline_s + settings.grace_s + EXPIRY_SLACK_S if settings.deadline_s else settings.key_expiry_s
        stamp = utc_compact(now)
        policy = RetryPolicy(settings.max_attempts, settings.max_elapsed_s, settings.max_wait_s)
        return cls(
            client, options.management_key, f"batchrun {job.name} {stamp}", now + life, policy, options.clock.sleep
        )

    async def _call(self, call: Callable[[], Awaitable[T]], retried: type[Transient] = Transient) -> T:
        """Management calls retry transient failures like chat calls (`retried`: a narrower kind)."""
        if self._sleep is None:
            return await call()
        return await retry_call(call, self._policy, self._sleep, retried=retried)

    async def _make(self, budget: float) -> CreatedKey:
        """POST /keys, for the run's budget until `expires_at`."""
        expires = utc_seconds(self.expires_at)
        if expires.startswith("("):  # past datetime's range: no body the server could take (out-110 F6)
            raise ConfigError(f"--isolated-key: the run's deadline is too far ahead for a key's expiry ({expires})")
        self.asking = True  # cut off from here (a signal), a key may exist that no reply named
        try:
            # Retried only after a 429 (nothing made): a create retried after a 5xx or a lost answer
            # may each have made a key with the run's budget (break33 m2: six of them).
            make = lambda: self._management.create_key(self.name, round(budget, 6), expires)  # noqa: E731
            created = await self._call(make, retried=RateLimited)
        except RequestFailed as failure:
            self.asking = False
            # A key may exist after a reply that was not an answer (a 5xx, a cut connection, a
            # 2xx in a shape not read, a proxy's 408 while the upstream acted: verify32 n7): said,
            # with when it dies (break23 F6: nothing was said).
            maybe = failure.may_have_acted
            left = f"; a key named {self.name!r} may have been created: it expires at {expires}" if maybe else ""
            raise ConfigError(f"could not create the per-run key: {failure.message}{left}") from None
        self.asking = False  # cut off (a signal), it stays set: the key may exist, and is said so
        return created

    async def create(self, budget: float | None) -> None:
        if budget is None:
            raise ConfigError("--isolated-key needs a budget (run.budget_usd or --budget): it is the key's limit")
        created = await self._make(budget)
        self._hash = created.hash  # from here on, `finish` removes the key whatever happens
        if created.server_ahead_s > DAY_S:  # a Date that lies (a proxy's): no key made to live a year (verify48)
            raise ConfigError(
                f"the /keys reply's Date is {created.server_ahead_s:,.0f} s ahead of this machine's clock: "
                "set the clock (NTP), or check what answers for the endpoint; the key made is removed"
            )
        if created.server_ahead_s > EXPIRY_SLACK_S / 2:
            # Its expiry was set by our clock: behind the server's, the key would die mid-run on
            # the server's, refused as a bad key is (exit 9: break46 F5). Made again, on the server's.
            try:
                await self._call(lambda: self._management.delete_key(created.hash))
            except RequestFailed as failure:
                raise ConfigError(
                    f"could not remove the per-run key made by a clock behind the server's: {failure.message}"
                ) from None
            self._hash, self.expires_at = None, self.expires_at + created.server_ahead_s
            created = await self._make(budget)
            self._hash = created.hash
        self.label = created.label or self.name
        if created.key is None:
            raise ConfigError("the /keys reply named the key it created but not the key itself: it is removed")
        await self._confirm_limit(created.hash, budget)
        self.limit = budget
        self._client.use_key(created.key)
        # And the key handed over is the one described: its own /key says its limit (break33 m9:
        # a reply that named a limited key and handed over an unlimited one went unnoticed).
        try:
            own = await self._call(self._client.key_info)
        except RequestFailed as failure:
            raise ConfigError(f"could not read the per-run key's own /key: {failure.message}") from None
        if own is None:  # 404, 405, 501: a key that cannot be verified is not used (verify32 n1: an unlimited one was)
            raise ConfigError(
                "could not read the per-run key's own /key: it answered as if there were none (404, 405 or 501), "
                "so the key handed over cannot be shown to hold the budget; it is not used"
            )
        limit = own.get("limit")
        if _not_held_to(limit, budget):
            raise ConfigError(
                f"the key the /keys reply handed over has limit {'none' if limit is None else f'${limit}'} on its "
                f"own /key, not the ${round(budget, 6)} the reply described: it is not used"
            )

    async def _confirm_limit(self, key_hash: str, budget: float) -> None:
        """The key's own limit is what makes OpenRouter enforce the budget: read it back, and
        refuse a key without it (break-14b M5: the audit claimed a limit the server never set).
        The caller's `finish` deletes the key."""
        try:
            info = await self._call(lambda: self._management.key_by_hash(key_hash))
        except RequestFailed as failure:
            raise ConfigError(f"could not read back the per-run key's limit: {failure.message}") from None
        if info is None:  # 404: "limit none" said of a key the server does not show (verify23 N7)
            raise ConfigError(
                "could not read back the per-run key's limit: GET /keys/{hash} answered 404, as if it were not "
                "there; the key is removed (a warning says so if not)"
            )
        limit = info.get("limit")
        if _not_held_to(limit, budget):
            shown = "none" if limit is None else f"${limit}"
            raise ConfigError(
                f"the per-run key was created with limit {shown}, not the ${round(budget, 6)} asked for: "
                "OpenRouter would not hold the run to its budget; the key is removed (a warning says so if not)"
            )

    async def finish(self, notice: Callable[[str], None], cut_off: CutOff | None = None) -> None:
        """Read the key's own usage, then delete it (disable it where deletion fails).
        (The run's reconciliation, in _reconcile, compares that usage with the ledger.)"""
        key_hash = self._hash
        if key_hash is None and self.asking and not self.finished:
            # Its creation was cut off (a signal during start-up): said, as for a failed reply,
            # not "the per-run key None" (verify25 N11).
            self.finished = True
            notice(
                f"warning: a per-run key named {self.name!r} may have been created before the run was stopped; "
                f"it expires at {utc_seconds(self.expires_at)}"
            )
        if key_hash is None or self.finished:
            return
        self.finished = True
        cut_off = cut_off or CutOff()
        try:
            async with cut_off.bound():  # a stopping run's wind-down (verify23 N1)
                await self._remove(notice, key_hash, cut_off.part(0.5), cut_off.part(0.75))
        except TimeoutError:
            notice(
                f"warning: the per-run key {self.label} could not be removed before the run had to end; "
                f"it expires at {utc_seconds(self.expires_at)}"
            )

    async def _remove(
        self, notice: Callable[[str], None], key_hash: str, read_until: float | None, delete_until: float | None
    ) -> None:
        """Its usage read in at most the first half of the time there is (`read_until`): a read
        that hung left the deletion none, and the key stayed live for hours (break60 F1). The
        deletion ends by `delete_until`, so that disabling it, where deletion fails or hangs, has
        the rest: a DELETE that hung left the key enabled (verify64 F4)."""
        try:
            async with asyncio.timeout_at(read_until):
                info = await self._call(lambda: self._management.key_by_hash(key_hash))
            # As its limit counts it: the key is created with include_byok_in_limit (break14c N3).
            self.final_usage = key_usage(info)
        except RequestFailed as failure:
            notice(f"warning: could not read the per-run key's usage: {failure.message}")
        except TimeoutError:
            notice("warning: could not read the per-run key's usage: no answer in the time it had")
        try:
            async with asyncio.timeout_at(delete_until):
                await self._call(lambda: self._management.delete_key(key_hash))
            self.removed = "deleted"
        except (RequestFailed, TimeoutError) as failure:
            why = failure.message if isinstance(failure, RequestFailed) else "no answer in the time it had"
            try:
                await self._call(lambda: self._management.disable_key(key_hash))
                self.removed = "disabled"
                notice(f"warning: could not delete the per-run key ({why}); it was disabled")
            except RequestFailed as second:
                notice(
                    f"warning: the per-run key {self.label} could not be deleted or disabled "
                    f"({second.message}); it expires on its own"
                )

    def audit(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "hash_prefix": (self._hash or "")[:8],
            "limit_usd": self.limit,
            "usage_usd": self.final_usage,
            "removed": self.removed,
            "expires_at": utc_seconds(self.expires_at),
        }
