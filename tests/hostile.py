"""A hostile OpenRouter on raw loopback sockets: it answers whatever bytes a test scripts.

Each request is parsed just enough (request line, headers, body) to hand to a handler,
which returns the raw bytes of its answer (status line included, so it may be no HTTP at
all) or an async function that writes them (huge bodies, streamed without holding them).
Every answer closes its connection, so a test never depends on keep-alive.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchrun.simulator import DEFAULT_PRICES

from .conftest import FAKE_KEY, MGMT_KEY, call_cli, final_rows, write_job


@dataclass
class RawRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def key(self) -> str:
        return self.headers.get("authorization", "").removeprefix("Bearer ")

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


Writer = Callable[[asyncio.StreamWriter], Awaitable[None]]
Answer = bytes | Writer
Handler = Callable[[RawRequest], Answer]


def http(status: int, body: bytes, headers: dict[str, str] | None = None, reason: str = "X") -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def json_answer(status: int, payload: Any, headers: dict[str, str] | None = None) -> bytes:
    return http(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})


_GENERATIONS = itertools.count(1)


def new_generation_id() -> str:
    """A generation id no other reply of the suite has: OpenRouter's are unique."""
    return f"gen-{next(_GENERATIONS)}"


def asked_generation(request: RawRequest) -> str:
    """The id a `/generation?id=` request asks for."""
    return request.path.split("id=", 1)[1]


def chat_payload(content: Any = "Paris", **overrides: Any) -> dict[str, Any]:
    """A chat completion as OpenRouter sends it; each its own generation id, as the service's are
    unique (one id on two replies is a lie batchrun does not look up by: break66 F4)."""
    payload: dict[str, Any] = {
        "id": new_generation_id(),
        "object": "chat.completion",
        "model": "openai/gpt-4o-mini",
        "provider": "OpenAI",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "native_finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12, "cost": 0.00001},
    }
    payload.update(overrides)
    return payload


def models_payload(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    data: list[dict[str, Any]] = []
    for model, (prompt, completion, request) in DEFAULT_PRICES.items():
        data.append(
            {
                "id": model,
                "context_length": 131072,
                "pricing": {"prompt": str(prompt), "completion": str(completion), "request": str(request)},
                "top_provider": {"max_completion_tokens": 16384},
            }
        )
    for item in data:
        item.update((overrides or {}).get(item["id"], {}))
    return {"data": data}


def streamed(status: int, total: int, chunk: bytes, headers: dict[str, str], server: HostileServer) -> Writer:
    """An answer of `total` body bytes written chunk by chunk; notes whether the peer left."""

    async def write(writer: asyncio.StreamWriter) -> None:
        head = [f"HTTP/1.1 {status} OK", "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        sent = 0
        try:
            while sent < total:
                piece = chunk[: total - sent]
                writer.write(piece)
                await writer.drain()
                sent += len(piece)
        except (ConnectionError, OSError):
            server.aborted += 1  # the client dropped the connection before the end
        server.body_bytes_sent.append(sent)

    return write


def gzip_bomb(unpacked: int) -> bytes:
    """`unpacked` zero bytes, gzipped (about 1,000 to 1), built without holding them."""
    import zlib

    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = b"\0" * (1 << 20)
    parts = [packer.compress(block) for _ in range(unpacked // len(block))]
    parts.append(packer.flush())
    return b"".join(parts)


_ = gzip  # gzip.decompress is what a reader of these tests would reach for to check a bomb


@dataclass
class HostileServer:
    chat: Handler
    models: Handler = field(default=lambda request: json_answer(200, models_payload()))
    key: Handler = field(
        default=lambda request: json_answer(
            200, {"data": {"label": "k", "limit": None, "limit_remaining": None, "usage": 0}}
        )
    )
    keys: Handler | None = None
    # Any other route, by the end of its path (before the query): "/generation", "/endpoints",
    # "/credits"; unlisted ones answer 404 like an endpoint the server does not have.
    routes: dict[str, Handler] = field(default_factory=dict)
    banner: bytes | None = None  # sent on connect before anything is read (an SSH/TLS port)
    port: int = 0
    requests: list[RawRequest] = field(default_factory=list)
    aborted: int = 0
    body_bytes_sent: list[int] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def chat_rows(self) -> list[str]:
        return [r.headers.get("x-batchrun-row", "") for r in self.requests if r.path.endswith("/chat/completions")]

    def _route(self, request: RawRequest) -> Answer:
        path = request.path.split("?")[0]
        for suffix, handler in self.routes.items():
            if path.endswith(suffix):
                return handler(request)
        if path.endswith("/chat/completions"):
            return self.chat(request)
        if path.endswith("/models"):
            return self.models(request)
        if path.endswith("/key"):
            return self.key(request)
        if "/keys" in path and self.keys is not None:
            return self.keys(request)
        return json_answer(404, {"error": {"code": 404, "message": "no such route"}})

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.banner is not None:
                writer.write(self.banner)
                await writer.drain()
            line = await reader.readline()
            if not line:
                return
            method, path, _ = line.decode("latin-1").split(" ", 2)
            headers = {}
            while True:
                header = await reader.readline()
                if header in (b"\r\n", b"\n", b""):
                    break
                name, _, value = header.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            request = RawRequest(method, path, headers, body)
            self.requests.append(request)
            answer = self._route(request)
            if isinstance(answer, bytes):
                writer.write(answer)
                await writer.drain()
            else:
                await answer(writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    @contextmanager
    def running(self) -> Iterator[HostileServer]:
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        holder: dict[str, asyncio.Server] = {}

        async def start() -> None:
            server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            holder["server"] = server
            self.port = server.sockets[0].getsockname()[1]

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(start())
            ready.set()
            loop.run_forever()

        thread = threading.Thread(target=serve, name="hostile-server", daemon=True)
        thread.start()
        assert ready.wait(10)
        try:
            yield self
        finally:

            async def stop() -> None:
                holder["server"].close()
                # Handlers still asleep (a hang) end here, while the loop runs: left to the
                # garbage collector, their `finally` would meet a dead loop and raise into
                # whatever Python is doing then (once, pytest's rewriting of a module).
                handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for handler in handlers:
                    handler.cancel()
                await asyncio.gather(*handlers, return_exceptions=True)

            asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)


# -- what every hostile case checks ---------------------------------------------------------------
JOB = """
name: hostile
defaults:
  params: {max_tokens: 16}
models: [openai/gpt-4o-mini]
prompts:
  - id: capital
    text: "Capital of {{country}}?"
    vars: [{country: France}, {country: Japan}, {country: Italy}, {country: Spain}]
run: {concurrency: 2, timeout_s: 10, max_attempts: 1, grace_s: 1}
"""
ROWS = 4


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    rows: list[dict[str, Any]]
    outputs: str  # everything the run wrote or printed, for the leak check

    def kinds(self) -> set[str | None]:
        return {r["reason"] for r in self.rows}


def fragments(secret: str) -> list[str]:
    return [secret[i : i + 16] for i in range(len(secret) - 15)]


def assert_no_key_in(text: str, secrets: tuple[str, ...] = (FAKE_KEY, MGMT_KEY)) -> None:
    """Neither test key, nor any 16-character fragment of one, anywhere in `text`."""
    for secret in secrets:
        leaked = [f for f in fragments(secret) if f in text]
        assert not leaked, f"a key fragment leaked: {leaked[:1]}"


def check(
    server: HostileServer,
    tmp_path: Path,
    code: int,
    stdout: str,
    stderr: str,
    out: Path,
    row_of: Callable[[str], str] = lambda request_row: request_row,
) -> Outcome:
    """What every hostile case asserts: no traceback, no key anywhere, each row sent recorded
    exactly once (`row_of` maps a request's row label to its row, e.g. a grader's `<row>.j1`);
    a row is written again only with a cost learnt late, and then its last record is the row."""
    rows = final_rows(out) if out.exists() else []  # asserts any second record is a cost learnt late
    texts = [stdout, stderr, out.read_text() if out.exists() else ""]
    for extra in (out.with_name(out.stem + ".summary.json"), tmp_path / "step.md"):
        if extra.exists():
            texts.append(extra.read_text())
    outputs = "\n".join(texts)
    assert "Traceback" not in outputs
    assert_no_key_in(outputs)
    ids = {r["id"] for r in rows}
    assert {row_of(r) for r in server.chat_rows()} <= ids, "a row was sent but never recorded"
    return Outcome(code, stdout, stderr, rows, outputs)


def run(
    server: HostileServer,
    tmp_path: Path,
    *args: str,
    job: str = JOB,
    row_of: Callable[[str], str] = lambda request_row: request_row,
) -> Outcome:
    """The job against `server`, in process, then `check`."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = write_job(tmp_path, job)
    out = tmp_path / "out.jsonl"
    with server.running():
        code, stdout, stderr = call_cli(path, "--base-url", server.base_url, "-o", out, *args)
    return check(server, tmp_path, code, stdout, stderr, out, row_of)
