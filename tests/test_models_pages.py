"""GET /models pages (openapi.yaml `getModels`: `offset`/`limit`, `links.next`), with respx and
against the simulator over loopback."""

from __future__ import annotations

from typing import Any

import httpx
import respx

from batchrun._client import MAX_MODEL_PAGES, OpenRouterClient
from batchrun.simulator import SimConfig, Simulator

from .conftest import FAKE_KEY, FakeClock

BASE = "https://openrouter.test/api/v1"


def page(ids: list[str], following: str | None) -> httpx.Response:
    data: list[dict[str, Any]] = [
        {"id": i, "pricing": {"prompt": "0.000001", "completion": "0.000002"}, "context_length": 8192} for i in ids
    ]
    return httpx.Response(200, json={"data": data, "links": {"next": following}})


def client() -> OpenRouterClient:
    return OpenRouterClient(BASE, FAKE_KEY, clock=FakeClock())


def pages(answers: dict[str, httpx.Response], seen: list[str]) -> Any:
    """A /models route answering by query string ("" for the plain list), logging each query."""

    def answer(request: httpx.Request) -> httpx.Response:
        query = request.url.query.decode()
        seen.append(query)
        return answers[query]

    return answer


async def test_every_page_of_models_is_read() -> None:
    seen: list[str] = []
    answers = {
        "": page(["a/one", "a/two"], "/api/v1/models?offset=2&limit=2"),
        "offset=2&limit=2": page(["b/three"], None),
    }
    with respx.mock(using="httpx") as mock:
        mock.get(url__startswith=f"{BASE}/models").mock(side_effect=pages(answers, seen))
        async with client() as c:
            models = await c.models()
    assert models is not None and set(models) == {"a/one", "a/two", "b/three"}
    assert seen == ["", "offset=2&limit=2"]


async def test_a_next_link_to_another_host_is_read_on_ours_with_only_its_numbers() -> None:
    seen: list[str] = []
    answers = {
        "": page(["a/one"], "https://evil.test/steal?offset=1&limit=1&key=x"),
        "offset=1&limit=1": page([], None),
    }
    with respx.mock(using="httpx", assert_all_called=False) as mock:
        mock.get(url__startswith=f"{BASE}/models").mock(side_effect=pages(answers, seen))
        elsewhere = mock.route(host="evil.test").mock(return_value=page(["e/vil"], None))
        async with client() as c:
            models = await c.models()
    assert models is not None and set(models) == {"a/one"}
    assert seen == ["", "offset=1&limit=1"] and not elsewhere.called  # the key never goes to another host


async def test_a_next_link_without_numbers_or_one_that_loops_ends_the_listing() -> None:
    seen: list[str] = []
    # '²' is a digit to str.isdigit() and none to int(): a ValueError (out-143).
    for link in ("/api/v1/models?page=two", "/api/v1/models?offset=²&limit=1"):
        with respx.mock(using="httpx") as mock:
            mock.get(url__startswith=f"{BASE}/models").mock(side_effect=pages({"": page(["a/one"], link)}, seen))
            async with client() as c:
                assert set(await c.models() or {}) == {"a/one"}
        assert seen == [""]
        seen.clear()
    answers = {
        "": page(["a/one"], "/api/v1/models?offset=1&limit=1"),
        "offset=1&limit=1": page(["b/two"], "/api/v1/models?offset=1&limit=1"),  # the same page for ever
    }
    with respx.mock(using="httpx") as mock:
        mock.get(url__startswith=f"{BASE}/models").mock(side_effect=pages(answers, seen))
        async with client() as c:
            assert set(await c.models() or {}) == {"a/one", "b/two"}
    assert seen == ["", "offset=1&limit=1"]


async def test_an_endless_chain_of_pages_stops_at_the_cap() -> None:
    calls = [0]

    def endless(request: httpx.Request) -> httpx.Response:
        calls[0] += 1
        offset = int(request.url.params.get("offset", "0"))
        return page([f"m/{offset}"], f"/api/v1/models?offset={offset + 1}&limit=1")

    with respx.mock(using="httpx") as mock:
        mock.get(url__startswith=f"{BASE}/models").mock(side_effect=endless)
        async with client() as c:
            models = await c.models()
    assert models is not None and len(models) == MAX_MODEL_PAGES + 1 and calls[0] == MAX_MODEL_PAGES + 1


async def test_the_simulator_pages_its_models_and_the_client_reads_them_all() -> None:
    full = Simulator(SimConfig())
    paged = Simulator(SimConfig(models_page=2))
    with full.serve_in_thread(), paged.serve_in_thread():
        async with OpenRouterClient(full.base_url, FAKE_KEY) as c:
            everything = await c.models()
        async with OpenRouterClient(paged.base_url, FAKE_KEY) as c:
            pages = await c.models()
    assert everything is not None and pages is not None
    assert set(pages) == set(everything) and len(everything) > 2  # more than one page of 2


def _listing(model: str, prompt: str, completion: str) -> dict[str, Any]:
    return {"id": model, "pricing": {"prompt": prompt, "completion": completion}, "context_length": 8192}


async def test_a_model_listed_twice_keeps_the_dearer_price_of_each_listing() -> None:
    # break36 F1: the later listing was believed: cheap after dear, a $0.02 budget billed $0.12.
    first = httpx.Response(
        200,
        json={
            "data": [_listing("a/one", "0.001", "0.000002"), _listing("a/one", "0.00001", "0.00003")],
            "links": {"next": "/api/v1/models?offset=2&limit=2"},
        },
    )
    answers = {"": first, "offset=2&limit=2": httpx.Response(200, json={"data": [_listing("a/one", "0", "0")]})}
    with respx.mock(using="httpx") as mock:
        mock.get(url__startswith=f"{BASE}/models").mock(side_effect=pages(answers, []))
        async with client() as c:
            models = await c.models()
    assert models is not None
    info = models["a/one"]
    assert (info.prompt_price, info.completion_price) == (0.001, 0.00003)  # across a page and pages
    assert (
        info.price is not None and info.price.prices["prompt"] == 0.001 and info.price.prices["completion"] == 0.00003
    )
