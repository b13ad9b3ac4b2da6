"""The simulator's own behaviour, through its Python API and real HTTP on loopback."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from batchrun.simulator import SimConfig, Simulator

from .conftest import FakeClock

BODY: dict[str, object] = {
    "model": "openai/gpt-4o-mini",
    "messages": [{"role": "user", "content": "What is the capital of Japan?"}],
}
AUTH = {"Authorization": "Bearer k"}


def post(web: httpx.Client, sim: Simulator, body: dict[str, object] = BODY) -> httpx.Response:
    return web.post(f"{sim.base_url}/chat/completions", json=body, headers=AUTH)


def test_answers_are_deterministic_and_shaped_like_openrouter(web: httpx.Client, sim: Simulator) -> None:
    sim.config.accuracy["openai/gpt-4o-mini"] = 1.0
    first, second = post(web, sim).json(), post(web, sim).json()
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"] == "Tokyo"
    assert first["id"].startswith("gen-") and first["id"] != second["id"]
    usage = first["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] and usage["cost"] > 0
    # ChatResult (openapi.yaml) has no `provider`: who answered is in the opt-in metadata.
    assert "provider" not in first and first["choices"][0]["finish_reason"] == "stop"


def test_a_generations_record_gives_the_answers_cost_and_token_counts(web: httpx.Client, sim: Simulator) -> None:
    # As openapi.yaml's GenerationResponse: total_cost and native_tokens_* (batchrun fills a
    # reply's missing usage from them).
    answer = post(web, sim).json()
    data = web.get(f"{sim.base_url}/generation", params={"id": answer["id"]}, headers=AUTH).json()["data"]
    usage = answer["usage"]
    assert data["id"] == answer["id"] and data["total_cost"] == usage["cost"]
    assert (data["native_tokens_prompt"], data["native_tokens_completion"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )


@pytest.mark.parametrize("second", [0.0, 59.9], ids=["minute-start", "minute-end"])
def test_a_per_minute_limit_answers_429_with_the_reset(web: httpx.Client, sim: Simulator, second: float) -> None:
    # The simulator's windows run on its clock: a fixed time, so no run straddles a minute.
    clock = FakeClock(start=1_800_000_000.0 + second)  # a whole minute (08:00:00 UTC) + `second`
    sim.clock = clock.time
    sim.config.rate_limit_rpm = 3
    statuses = [post(web, sim).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    limited = post(web, sim)
    assert int(limited.headers["X-RateLimit-Reset"]) == 1_800_000_060_000  # the next whole minute, in ms
    assert limited.headers["X-RateLimit-Limit"] == "3" and limited.json()["error"]["code"] == 429
    clock.now += 60 - second  # the next minute: a fresh window
    assert post(web, sim).status_code == 200


def test_the_free_daily_cap_resets_at_the_midnight_it_names(web: httpx.Client, sim: Simulator) -> None:
    # break46 F4: one count for the server's life: after the midnight its 429 named, it refused
    # again, naming the next one, and a client that waited for the reset saw "a daily cap".
    midnight = 1_800_057_600.0  # 2027-01-16 00:00:00 UTC
    clock = FakeClock(start=midnight - 4)
    sim.clock = clock.time
    sim.config.free_daily_cap = 1
    free = {**BODY, "model": "meta-llama/llama-3.3-70b-instruct:free"}
    assert [post(web, sim, free).status_code for _ in range(2)] == [200, 429]
    limited = post(web, sim, free)
    assert int(limited.headers["X-RateLimit-Reset"]) == int(midnight * 1000)
    clock.now += 4  # the midnight named
    assert [post(web, sim, free).status_code for _ in range(2)] == [200, 429]
    assert int(post(web, sim, free).headers["X-RateLimit-Reset"]) == int((midnight + 86400) * 1000)


@pytest.mark.parametrize("header", ["retry-after", "retry-after-ms"])
def test_per_second_limit_header_forms(web: httpx.Client, sim: Simulator, header: str) -> None:
    sim.clock = FakeClock(start=1_800_000_000.25).time  # a quarter into a second, for the whole test
    sim.config.rate_limit_rps = 1
    sim.config.rate_limit_header = header
    responses = [post(web, sim) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 429, 429]
    wait = {"retry-after": "1", "retry-after-ms": "750"}[header]  # to the next whole second
    assert responses[1].headers[header] == wait


def test_faults_replay_under_a_seed(web: httpx.Client) -> None:
    def statuses(seed: int) -> list[int]:
        simulator = Simulator(SimConfig(seed=seed, faults={"500": 0.3, "503": 0.2}))
        with simulator.serve_in_thread():
            return [post(web, simulator).status_code for _ in range(30)]

    assert statuses(3) == statuses(3)
    assert statuses(3) != statuses(4)
    assert {500, 503, 200} <= set(statuses(3))


def test_latency_distributions_replay_under_a_seed() -> None:
    def delays(jitter: str) -> list[float]:
        simulator = Simulator(SimConfig(seed=9, latency_ms=10, jitter_ms=5, jitter=jitter))
        return [simulator._latency_s() for _ in range(200)]

    uniform, exponential = delays("uniform"), delays("exponential")
    assert uniform == delays("uniform") and all(0.005 <= d <= 0.015 for d in uniform)
    assert min(exponential) >= 0.010 and max(exponential) > 0.020  # a tail past the uniform's bound


def test_key_usage_grows_with_what_was_billed(web: httpx.Client, sim: Simulator) -> None:
    sim.config.key_limit = 1.0
    sim.account_key.limit = 1.0
    spent = sum(post(web, sim).json()["usage"]["cost"] for _ in range(3))
    key = web.get(f"{sim.base_url}/key", headers=AUTH).json()["data"]
    assert key["usage"] == pytest.approx(spent) and key["limit_remaining"] == pytest.approx(1.0 - spent)


def test_options_parse_and_refuse_unknown_names() -> None:
    config = SimConfig()
    for option in (
        "latency_ms=50",
        "fault.503=0.1",
        "fault.reset=0.05",
        "rate_limit_rpm=20",
        "free_daily_cap=5",
        "price.acme/x=1,2,0.001",
        "accuracy.acme/x=0.5",
        "account_api=false",
        "jitter=exponential",
    ):
        config.set_option(option)
    assert config.latency_ms == 50 and config.faults == {"503": 0.1, "reset": 0.05} and config.rate_limit_rpm == 20
    assert config.prices["acme/x"] == pytest.approx((1e-6, 2e-6, 0.001)) and config.account_api is False
    for bad in ("nonsense=1", "fault.teapot=0.1", "latency_ms"):
        with pytest.raises(ValueError):
            config.set_option(bad)


@pytest.mark.parametrize("properties", [["a", "b"], 5, {"a": 5}])
def test_tools_whose_parameters_are_no_schema_are_a_400_not_a_crash(
    web: httpx.Client, sim: Simulator, properties: object
) -> None:
    # verify20 V13: the simulator's handler died on them (a traceback per attempt on the
    # terminal, a retried 500); a provider refuses them as a bad request.
    tools = [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": properties}}}
    ]
    reply = post(web, sim, {**BODY, "tools": tools, "tool_choice": "required"})
    assert reply.status_code == 400 and "Invalid tools" in reply.json()["error"]["message"]


def test_closing_ends_a_latency_in_flight_unbilled(web: httpx.Client) -> None:
    # A minute's latency: the request is still waiting when the block ends. Closing answers it
    # 503 at once, billing nothing (before, the runner's shutdown waited out its timeout, then
    # dropped the connection).
    simulator = Simulator(SimConfig(latency_ms=60_000))
    replies: list[httpx.Response] = []
    with simulator.serve_in_thread() as sim:
        sender = threading.Thread(target=lambda: replies.append(post(web, sim)))
        sender.start()
        end = time.monotonic() + 10
        while sim.stats.chat_requests < 1 and time.monotonic() < end:
            time.sleep(0.005)
        assert sim.stats.chat_requests == 1
    sender.join(10)
    assert [r.status_code for r in replies] == [503] and "closing" in replies[0].text
    assert sim.stats.billed_usd == 0 and sim.generations == {}
