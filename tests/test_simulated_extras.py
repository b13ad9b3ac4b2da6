"""The simulator bills reasoning and web search as the docs describe them, and batchrun's worst
case and records keep up (issue 14: "the simulator bills like the real service")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batchrun import ExitCode
from batchrun._account_reply import model_info
from batchrun._scrub import Scrubber
from batchrun.simulator import SimConfig, Simulator
from batchrun.simulator._config import reasoning_object

from .conftest import FAKE_KEY, call_cli, final_rows, write_job

pytestmark = pytest.mark.usefixtures("api_key_env")
MODEL = "openai/gpt-4o-mini"


def _job(params: str, run: str = "") -> str:
    return f"""
name: extras
defaults:
  params: {{max_tokens: 60, {params}}}
models: [{MODEL}]
prompts:
  - id: q
    text: "What is {{{{n}}}} + 1?"
    vars: [{{n: 1}}, {{n: 2}}, {{n: 3}}]
run: {{concurrency: 2{run}}}
"""


def _run(sim: Simulator, tmp_path: Path, text: str, *args: str) -> tuple[int, str, list[dict[str, Any]]]:
    out = tmp_path / "out.jsonl"
    code, _, err = call_cli(write_job(tmp_path, text), "--base-url", sim.base_url, "-o", out, "-q", *args)
    return code, err, final_rows(out) if out.exists() else []


def test_models_lists_the_reasoning_object_batchrun_reads() -> None:
    import httpx

    config = SimConfig(reasoning={MODEL: reasoning_object("mandatory")})
    with Simulator(config).serve_in_thread() as sim:
        listed = httpx.get(f"{sim.base_url}/models", headers={"Authorization": f"Bearer {FAKE_KEY}"}).json()["data"]
    entries = {entry["id"]: entry for entry in listed}
    assert entries[MODEL]["reasoning"]["mandatory"] is True
    assert "reasoning" not in entries["anthropic/claude-3.5-haiku"]  # "omitted for non-reasoning models"
    info = model_info(entries[MODEL], Scrubber())
    assert info is not None and info.reasoning_default == "mandatory"


@pytest.mark.parametrize(
    ("kind", "params", "reasoned"),
    [
        ("mandatory", "", 1024),  # the documented floor, beyond max_tokens 60
        ("enabled", "", 1024),
        ("enabled", "reasoning: {enabled: false}", 0),  # turned off by the request
        ("optional", "", 0),  # off unless asked
        ("optional", "reasoning: {max_tokens: 2000}", 2000),  # "used directly"
    ],
)
def test_reasoning_is_billed_as_output_and_the_worst_case_still_bounds_it(
    tmp_path: Path, kind: str, params: str, reasoned: int
) -> None:
    config = SimConfig(reasoning={MODEL: reasoning_object(kind)})
    with Simulator(config).serve_in_thread() as sim:
        code, err, rows = _run(sim, tmp_path, _job(params), "--budget", "1")
        billed = dict(sim.stats.billed_by_row)
    assert code == ExitCode.OK, err
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    for row in rows:
        usage = row["usage"]
        assert isinstance(usage, dict)
        details = usage.get("completion_tokens_details") or {}
        # The answer fits in what is left of max(max_tokens, the budget) beside the reasoning.
        assert details.get("reasoning_tokens", 0) == pytest.approx(reasoned, abs=60)
        assert usage["completion_tokens"] >= details.get("reasoning_tokens", 0)
        assert row["cost"] == pytest.approx(billed[str(row["id"])], abs=1e-12)
    # Nothing cost more than the worst case counted for it (the estimate is the plan's sum).
    assert sum(billed.values()) <= summary["estimate_usd"] + 1e-12


WEB = {
    "plugin": ("plugins: [{id: web, max_results: 3}]", 1, 3),
    "server tool": ("tools: [{type: 'openrouter:web_search', parameters: {max_results: 12}}]", 2, 12),
    "shorthand": ("tools: [{type: web_search_preview}]", 2, 5),  # converted to openrouter:web_search
}


@pytest.mark.parametrize("kind", list(WEB))
def test_web_search_is_billed_and_batchrun_refuses_it_under_a_budget(tmp_path: Path, kind: str) -> None:
    params, searches, results = WEB[kind]
    with Simulator().serve_in_thread() as sim:
        # No documented size bounds the search results: refused under a limit, nothing sent.
        code, err, _ = _run(sim, tmp_path, _job(params), "--budget", "1")
        assert code == ExitCode.USAGE and "the worst case is not a bound" in err, err
        assert sim.stats.chat_requests == 0
        # Allowed without a limit: each row costs what the simulator billed, search included.
        code, err, rows = _run(sim, tmp_path, _job(params, ", allow_unknown_prices: true"))
        billed = dict(sim.stats.billed_by_row)
    assert code == ExitCode.OK, err
    search_usd = searches * (0.007 + 0.001 * max(0, results - 10))
    for row in rows:
        usage = row["usage"]
        assert isinstance(usage, dict)
        assert usage["server_tool_use_details"]["tool_calls_executed"] == searches
        assert usage["prompt_tokens"] >= searches * results * 500  # the results, read as prompt
        assert row["cost"] == pytest.approx(billed[str(row["id"])], abs=1e-12) and row["cost"] > search_usd
