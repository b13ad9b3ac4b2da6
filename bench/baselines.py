"""Bare baselines: asyncio, a semaphore, a bounded producer, the same JSONL appends.

python bench/baselines.py CLIENT BASE_URL N CONCURRENCY OUT.jsonl
CLIENT: httpx-aiohttp (batchrun's floor), aiohttp (any asyncio client's limit), httpx (default pool).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

BODY = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 16}
HEADERS = {"Authorization": "Bearer bench-key", "Content-Type": "application/json"}


async def drive(send: Callable[[bytes], Awaitable[dict[str, Any]]], total: int, concurrency: int, out: str) -> None:
    queue: asyncio.Queue[int | None] = asyncio.Queue(maxsize=concurrency * 2)  # bounded producer
    body = json.dumps(BODY).encode()

    async def produce() -> None:
        for index in range(total):
            await queue.put(index)
        for _ in range(concurrency):
            await queue.put(None)

    with open(out, "a", encoding="utf-8") as handle:

        async def work() -> None:
            while (index := await queue.get()) is not None:
                data = await send(body)
                handle.write(
                    json.dumps(
                        {"i": index, "content": data["choices"][0]["message"]["content"], "usage": data["usage"]}
                    )
                    + "\n"
                )
                handle.flush()

        await asyncio.gather(produce(), *(work() for _ in range(concurrency)))


async def main(client: str, base: str, total: int, concurrency: int, out: str) -> None:
    url = f"{base}/api/v1/chat/completions"
    if client == "aiohttp":
        import aiohttp

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

            async def send(body: bytes) -> dict[str, Any]:
                async with session.post(url, data=body, headers=HEADERS) as response:
                    return dict(await response.json())

            await drive(send, total, concurrency, out)
        return
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    if client == "httpx-aiohttp":
        from httpx_aiohttp import AiohttpTransport

        http = httpx.AsyncClient(transport=AiohttpTransport(limits=limits), timeout=60, trust_env=False)
    else:
        http = httpx.AsyncClient(limits=limits, timeout=60, trust_env=False)
    async with http:

        async def send_httpx(body: bytes) -> dict[str, Any]:
            response = await http.post(url, content=body, headers=HEADERS)
            return dict(response.json())

        await drive(send_httpx, total, concurrency, out)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]))
