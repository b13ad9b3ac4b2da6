"""The simulator's server: lifecycle, routes and the chat endpoint."""

from __future__ import annotations

import asyncio
import email.utils
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from .._event_loop import loop_factory
from ._batches import SimBatches
from ._chat import ChatRoutes
from ._config import VARIANTS, SimConfig
from ._faults import CLOSING
from ._http import error_response, json_response
from ._keys import SimKey, account_key
from ._limits import RateWindow
from ._stats import SimStats


class Simulator(ChatRoutes):
    """The server. Use `serve_in_thread()` from tests, `start()`/`stop()` from async code."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.stats = SimStats()
        self._rng = random.Random(self.config.seed)
        self._keys: dict[str, SimKey] = {}
        self._hashes: dict[str, str] = {}
        self.issued: list[str] = []
        self._generations = 0
        self.generations: dict[str, dict[str, Any]] = {}
        self.run_tag = secrets.token_hex(4)
        self.limits = RateWindow(self.config, lambda: self.clock())
        self.unanswered: set[int] = set()
        self._daily: Counter[str] = Counter()  # free requests today (by the simulator's clock)
        self._daily_day = -1
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.host = "127.0.0.1"
        self.account_key = account_key(self.config)
        # Batch timing and rate windows; tests drive it with a fake clock.
        self.clock: Callable[[], float] = time.time
        self.batches = SimBatches(self)
        self._date = (-1, "")  # (second, its Date text): formatted once a second, not per reply

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/api/v1"

    # -- lifecycle ---------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app[CLOSING] = asyncio.Event()
        app.on_response_prepare.append(self._dated)
        app.router.add_post("/api/v1/chat/completions", self._chat)
        app.router.add_get("/__sim/stats", self._stats)
        app.router.add_post("/__sim/reset", self._reset)
        self.batches.add_routes(app)
        if self.config.account_api:
            app.router.add_get("/api/v1/models", self._models)
            self.add_key_routes(app)
            app.router.add_get("/api/v1/model/{author}/{slug}", self._model)
            self.add_billing_routes(app)
        return app

    async def _dated(self, _request: web.Request, response: web.StreamResponse) -> None:
        """Every reply's Date by the simulator's clock, the one its X-RateLimit-Reset is in (a
        test's fake clock too): a client measures a reset against the Date when the two clocks
        disagree (_classify.server_now)."""
        second = int(self.clock())
        if self._date[0] != second:
            self._date = (second, email.utils.formatdate(second, usegmt=True))
        response.headers["Date"] = self._date[1]

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=1024)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only here
        assert server is not None and hasattr(server, "sockets")
        self.host, self.port = host, server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.app[CLOSING].set()  # simulated hangs end, so the shutdown waits for none
            # ... once the requests in hand have their answers (a 503 for a latency cut short): the
            # runner's shutdown cancels a request still being read, and its client saw the
            # connection dropped (a request not yet asleep when the closing came). At most a second.
            for _ in range(200):
                if not self.unanswered:
                    break
                await asyncio.sleep(0.005)
            await self._runner.cleanup()
            self._runner = None

    async def _stop_everything(self) -> None:
        """Stop, then end handlers still asleep in a simulated hang, so the loop closes clean."""
        await self.stop()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    @contextmanager
    def serve_in_thread(self) -> Iterator[Simulator]:
        """Run on a loopback port in a daemon thread for the duration of the block (on uvloop
        where installed, as `batchrun simulate`: the tests' server spends less CPU per request)."""
        loop = (loop_factory() or asyncio.new_event_loop)()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            ready.set()
            loop.run_forever()

        thread = threading.Thread(target=serve, name="batchrun-simulator", daemon=True)
        thread.start()
        if not ready.wait(10):
            raise RuntimeError("simulator did not start")
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self._stop_everything(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

    # -- info --------------------------------------------------------------------------------
    def _model_entry(self, model: str, canonical: str) -> dict[str, Any]:
        p, c, r = self.config.prices[canonical]
        if model.endswith(":free"):
            p = c = r = 0.0
        return {
            "id": model,
            "canonical_slug": canonical,
            "name": model,
            "context_length": 131072,
            "pricing": {"prompt": f"{p:.12g}", "completion": f"{c:.12g}", "request": f"{r:.12g}", "image": "0"},
            "top_provider": {"context_length": 131072, "max_completion_tokens": 16384, "is_moderated": False},
            # The rest of what openapi.yaml's Model schema requires.
            "created": 1_700_000_000,
            "architecture": {
                "input_modalities": ["text"],
                "output_modalities": ["text"],
                "modality": "text->text",
                "tokenizer": "Other",
                "instruct_type": None,
            },
            "per_request_limits": None,
            "supported_parameters": ["temperature", "top_p", "max_tokens", "max_completion_tokens", "seed", "stop"],
            "default_parameters": None,
            "supported_voices": None,
            "links": {"details": f"/api/v1/models/{canonical}/endpoints"},
            # "Omitted for non-reasoning models" (openapi ModelReasoning).
            **({"reasoning": self.config.reasoning[canonical]} if canonical in self.config.reasoning else {}),
        }

    def canonical(self, model: str) -> str | None:
        """The priced model behind an id: itself, an alias's target, or a variant's base
        (model-variants/*.mdx); None when the simulator does not know it."""
        config = self.config
        model = config.aliases.get(model, model)
        if model in config.prices:
            return model
        base, sep, variant = model.rpartition(":")
        if sep and variant in VARIANTS and base in config.prices:
            return base
        return None

    async def _models(self, request: web.Request) -> web.Response:
        """GET /models (openapi `getModels`): the full list, or with `offset`/`limit` one page
        and `links.next` to the following one (null on the last)."""
        hidden = self.config.private_models
        data = [self._model_entry(model, model) for model in self.config.prices if model not in hidden]
        query = request.query
        if "offset" not in query and "limit" not in query and self.config.models_page is None:
            return json_response({"data": data, "total_count": len(data), "links": {"next": None}})
        try:
            offset = int(query.get("offset", "0"))
            limit = int(query.get("limit", str(self.config.models_page or 500)))
        except ValueError:
            return error_response(400, "offset and limit must be integers")
        if offset < 0 or not 1 <= limit <= 1000:
            return error_response(400, "offset must be >= 0 and limit 1 to 1000")
        end = offset + limit
        following = f"/api/v1/models?offset={end}&limit={limit}" if end < len(data) else None
        return json_response({"data": data[offset:end], "total_count": len(data), "links": {"next": following}})

    async def _model(self, request: web.Request) -> web.Response:
        """GET /model/{author}/{slug}: one model, variants and aliases resolved (openapi `getModel`)."""
        model = f"{request.match_info['author']}/{request.match_info['slug']}"
        canonical = self.canonical(model)
        if canonical is None:
            return error_response(404, "Resource not found")
        return json_response({"data": self._model_entry(model, canonical)})

    async def _stats(self, request: web.Request) -> web.Response:
        return json_response({**self.stats.as_json(), "batches": self.batches.stats.as_json()})

    async def _reset(self, request: web.Request) -> web.Response:
        """Fresh counters between benchmark rounds against one long-lived server."""
        self.stats = SimStats()
        self.account_key = account_key(self.config)
        self.limits.reset()
        return json_response({"ok": True})


async def serve(config: SimConfig, host: str, port: int) -> None:
    """`batchrun simulate`: serve until cancelled."""
    simulator = Simulator(config)
    await simulator.start(host, port)
    try:
        await asyncio.Event().wait()
    finally:
        await simulator.stop()
