"""The simulator's keys: the account key, /key, and the management API /keys."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .._formats import parse_utc_seconds, utc_seconds
from ._config import SimConfig
from ._http import error_response, json_response
from ._stats import SimStats


@dataclass
class SimKey:
    limit: float | None
    label: str
    hash: str
    name: str = ""
    usage: float = 0.0
    byok_usage: float = 0.0  # upstream BYOK spend (openapi /key byok_usage)
    include_byok_in_limit: bool = False
    reserved: float = 0.0
    disabled: bool = False
    expires_at: float | None = None
    created: bool = False  # made through /keys

    @property
    def counted(self) -> float:
        """What the key's limit counts: its usage, and its BYOK usage when the limit includes it."""
        return self.usage + (self.byok_usage if self.include_byok_in_limit else 0.0)


def account_key(config: SimConfig) -> SimKey:
    return SimKey(
        limit=config.key_limit,
        label="sk-or-v1-sim...acct",
        hash="acct" + "0" * 60,
        include_byok_in_limit=config.key_byok_in_limit,
    )


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() or None if header.startswith("Bearer ") else None


_KEY_FIELDS = (
    "label",
    "limit",
    "limit_reset",
    "limit_remaining",
    "usage",
    "usage_daily",
    "usage_weekly",
    "usage_monthly",
    "is_free_tier",
    "expires_at",
)


class KeyRoutes:
    """Key handling, mixed into the Simulator (which owns the state named here)."""

    config: SimConfig
    stats: SimStats
    account_key: SimKey
    _keys: dict[str, SimKey]  # token -> key, for keys made through /keys
    _hashes: dict[str, str]  # hash -> token
    issued: list[str]  # every key /keys created, kept for tests that look for leaks

    def add_key_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/key", self._key)
        app.router.add_post("/api/v1/keys", self._create_key)
        app.router.add_get("/api/v1/keys/{hash}", self._get_key)
        app.router.add_patch("/api/v1/keys/{hash}", self._patch_key)
        app.router.add_delete("/api/v1/keys/{hash}", self._delete_key)

    def chat_key(self, token: str | None) -> SimKey | web.Response:
        if token is None:
            return error_response(401, "No auth credentials found")
        if token == self.config.management_key:
            return error_response(401, "Management keys cannot be used for completions")
        key = self._keys.get(token)
        if key is not None:
            if key.disabled:
                return error_response(401, "This key is disabled")
            if key.expires_at is not None and time.time() >= key.expires_at:
                return error_response(401, "This key has expired")
            return key
        if self.config.require_key is not None and token != self.config.require_key:
            return error_response(401, "Invalid API key")
        return self.account_key

    def _management(self, request: web.Request) -> web.Response | None:
        if bearer(request) != self.config.management_key:
            return error_response(401, "A management key is required for /keys")
        return None

    def _key_data(self, key: SimKey) -> dict[str, Any]:
        counted = key.counted
        remaining = None if key.limit is None else max(0.0, key.limit - counted)
        return {
            "hash": key.hash,
            "name": key.name,
            "label": key.label,
            "limit": key.limit,
            "limit_remaining": remaining,
            "limit_reset": None,
            "usage": key.usage,
            "usage_daily": key.usage,
            "usage_weekly": key.usage,
            "usage_monthly": key.usage,
            "byok_usage": key.byok_usage,
            "include_byok_in_limit": key.include_byok_in_limit,
            "disabled": key.disabled,
            "is_free_tier": False,
            "expires_at": None if key.expires_at is None else utc_seconds(key.expires_at),
        }

    async def _key(self, request: web.Request) -> web.Response:
        """GET /key: the fields limits.mdx documents, and nothing else."""
        key = self.chat_key(bearer(request))
        if isinstance(key, web.Response):
            return key
        data = self._key_data(key)
        info = {name: data[name] for name in _KEY_FIELDS}
        # The rest of what openapi.yaml GET /key requires; rate_limit is "deprecated and safe
        # to ignore" (limits.mdx) but the schema still lists it.
        # The key's own BYOK figures: a /key that always said 0 hid a BYOK run's upstream spend.
        info.update(
            include_byok_in_limit=key.include_byok_in_limit,
            byok_usage=key.byok_usage,
            byok_usage_daily=key.byok_usage,
            byok_usage_weekly=key.byok_usage,
            byok_usage_monthly=key.byok_usage,
            is_management_key=False,
            is_provisioning_key=False,
            creator_user_id=None,
            rate_limit={"interval": "1h", "note": "This field is deprecated and safe to ignore.", "requests": 1000},
        )
        return json_response({"data": info})

    async def _create_key(self, request: web.Request) -> web.Response:
        denied = self._management(request)
        if denied:
            return denied
        body = await request.json()
        if not isinstance(body.get("name"), str) or not body["name"]:
            return error_response(400, "name is required")
        limit = body.get("limit")
        if limit is not None and (not isinstance(limit, (int, float)) or limit < 0):
            return error_response(400, "limit must be a non-negative number")
        expires_at = None
        if body.get("expires_at"):
            try:
                expires_at = parse_utc_seconds(body["expires_at"])
            except ValueError:
                return error_response(400, "expires_at must be an ISO 8601 UTC time")
        token = "sk-or-v1-" + secrets.token_hex(32)
        key = SimKey(
            limit=None if self.config.created_keys_unlimited else limit,
            label=f"{token[:12]}...{token[-3:]}",
            hash=hashlib.sha256(token.encode()).hexdigest(),
            name=body["name"],
            expires_at=expires_at,
            created=True,
            include_byok_in_limit=body.get("include_byok_in_limit") is True,
        )
        self._keys[token] = key
        self._hashes[key.hash] = token
        self.issued.append(token)
        self.stats.keys_created += 1
        return json_response({"key": token, "data": self._key_data(key)}, status=201)

    def _by_hash(self, request: web.Request) -> SimKey | web.Response:
        denied = self._management(request)
        if denied:
            return denied
        token = self._hashes.get(request.match_info["hash"])
        if token is None or token not in self._keys:
            return error_response(404, "No key with that hash")
        return self._keys[token]

    async def _get_key(self, request: web.Request) -> web.Response:
        key = self._by_hash(request)
        return key if isinstance(key, web.Response) else json_response({"data": self._key_data(key)})

    async def _patch_key(self, request: web.Request) -> web.Response:
        key = self._by_hash(request)
        if isinstance(key, web.Response):
            return key
        body = await request.json()
        if "disabled" in body:
            key.disabled = bool(body["disabled"])
        if "limit" in body:
            key.limit = body["limit"]
        return json_response({"data": self._key_data(key)})

    async def _delete_key(self, request: web.Request) -> web.Response:
        key = self._by_hash(request)
        if isinstance(key, web.Response):
            return key
        del self._keys[self._hashes.pop(key.hash)]
        self.stats.keys_deleted += 1
        return json_response({"deleted": True})  # openapi.yaml, DELETE /keys/{hash}
