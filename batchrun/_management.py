"""OpenRouter's management API, with a management key: the account's balance (/credits) and
per-run keys (/keys). The key is scrubbed from everything a server sends, as the API key is,
and a key hash goes into a URL only quoted, after `parse_created_key` checked its shape."""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import quote

from ._account_reply import CreatedKey, data_of, parse_created_key, parse_key_data
from ._classify import server_now
from ._client import OpenRouterClient
from ._exceptions import ConfigError, RequestFailed, Transient
from ._pricing import parse_balance


class ManagementApi:
    def __init__(self, client: OpenRouterClient, management_key: str) -> None:
        self.client = client
        self.key = management_key
        client.protect(management_key)  # a /keys server may echo it in any error

    async def credits(self) -> float | None:
        """GET /credits: the account's balance, total_credits - total_usage; None where the
        endpoint has no /credits. A reply that cannot be read raises `bad_response`, like a bad
        /key: the balance bounds the run, so a lie about it must not drop the bound in silence
        (break-14 #12)."""
        try:
            reply = await self.client._account_get("/credits", self.key)
        except RequestFailed as failure:
            if failure.http_status != 403:
                raise
            # openapi /credits: 403 "Only management keys can perform this operation": a bad setting,
            # not an outage (out-104 F6: exit 1, which a wrapper retries for ever).
            raise ConfigError(
                f"the management key was refused by /credits ({failure.message}): give a management key in "
                "$OPENROUTER_MANAGEMENT_KEY (or the job's endpoint.management_key_env), or unset it"
            ) from None
        if reply is None:
            return None
        balance = parse_balance(data_of(reply, "/credits"))
        if balance is None:
            raise Transient(
                "bad_response", "the /credits reply has no readable total_credits and total_usage", reply.status
            )
        return balance

    async def create_key(self, name: str, limit: float, expires_at: str) -> CreatedKey:
        """POST /keys: the new key, its hash and label."""
        client = self.client
        reply = await client._send(
            "POST",
            "/keys",
            self.key,
            # include_byok_in_limit: the key's limit then covers BYOK spend too (openapi /keys).
            {"name": name, "limit": limit, "expires_at": expires_at, "include_byok_in_limit": True},
        )
        if reply.status in (404, 405, 501):
            raise ConfigError(f"{client.base_url} has no /keys management API: --isolated-key cannot be used")
        if reply.status not in (200, 201):
            raise client._failure(reply)
        created = parse_created_key(reply, client.scrub)
        client.scrub.add(created.key)
        now = client._clock.time()
        return replace(created, server_ahead_s=server_now(reply.headers, now) - now)

    async def key_by_hash(self, key_hash: str) -> dict[str, Any] | None:
        reply = await self.client._account_get(_key_path(key_hash), self.key)
        return None if reply is None else parse_key_data(data_of(reply, "/keys"), self.client.scrub, "/keys")

    async def delete_key(self, key_hash: str) -> None:
        reply = await self.client._send("DELETE", _key_path(key_hash), self.key)
        if reply.status not in (200, 204):
            raise self.client._failure(reply)

    async def disable_key(self, key_hash: str) -> None:
        reply = await self.client._send("PATCH", _key_path(key_hash), self.key, {"disabled": True})
        if reply.status != 200:
            raise self.client._failure(reply)


def _key_path(key_hash: str) -> str:
    return f"/keys/{quote(key_hash, safe='')}"
