"""Parameters as the OpenAPI ChatRequest documents them, model ids as OpenRouter resolves
them (variants, aliases, ~latest, private models), and routing reproducibility warnings."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from batchrun import ExitCode, load_job, matrix_requests
from batchrun._account_reply import ModelInfo
from batchrun._models import resolve_models
from batchrun.simulator import Simulator

from .conftest import FAKE_KEY, call_cli, read_rows, write_job

DOCUMENTED = """
name: params
models: [openai/gpt-4o-mini]
defaults:
  params:
    max_completion_tokens: 10
    min_p: 0.1
    top_a: 0.2
    logprobs: true
    top_logprobs: 3
    verbosity: low
    reasoning_effort: low
    service_tier: flex
    plugins: [{id: web}]
    tools: [{type: function, function: {name: lookup, parameters: {type: object}}}]
    tool_choice: auto
    parallel_tool_calls: false
    response_format: {type: json_schema, json_schema: {name: answer, schema: {type: object}}}
    extra_body: {a_parameter_from_next_year: {x: 1}}
    provider:
      zdr: true
      order: [openai]
      allow_fallbacks: false
      sort: {by: price, partition: none}
      quantizations: [fp8, bf16]
      max_price: {prompt: 1, completion: "2"}
      preferred_max_latency: 2
      preferred_min_throughput: 50
      require_parameters: true
      data_collection: deny
prompts:
  - id: p
    messages:
      - role: user
        content:
          - {type: text, text: "Describe {{thing}}"}
          - {type: image_url, image_url: {url: "https://example.org/a.png", detail: low}}
          - {type: file, file: {filename: a.pdf, file_data: "data:application/pdf;base64,AAAA"}}
          - {type: input_audio, input_audio: {data: "AAAA", format: wav}}
    vars: [{thing: a cat}]
"""


def test_documented_parameters_validate_and_extra_body_passes_through_verbatim(tmp_path: Path) -> None:
    job_path = write_job(tmp_path, DOCUMENTED)
    assert call_cli("validate", job_path)[0] == 0
    [request] = list(matrix_requests(load_job(job_path)))
    body = request.body
    assert body["a_parameter_from_next_year"] == {"x": 1} and "extra_body" not in body
    assert body["max_completion_tokens"] == 10 and body["provider"]["zdr"] is True
    assert body["messages"][0]["content"][0] == {"type": "text", "text": "Describe a cat"}


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("model", "batchrun sets 'model' itself"),
        ("messages", "batchrun sets 'messages' itself"),
        ("preset", "batchrun sets 'preset' itself"),
        ("max_tokens", "'max_tokens' is a param of its own"),
        ("reasoning", "'reasoning' is a param of its own"),
    ],
)
def test_extra_body_cannot_replace_what_is_validated_and_priced(tmp_path: Path, key: str, why: str) -> None:
    # break-14b C1: `extra_body: {model: ...}` sent a dearer model than the one priced.
    job_path = write_job(tmp_path, DOCUMENTED.replace("a_parameter_from_next_year", key))
    code, _, err = call_cli("validate", job_path)
    assert code == ExitCode.USAGE
    assert f"at $.defaults.params.extra_body.{key}" in err and why in err


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("json_schema: {name: answer, schema", "json_schema: {schema"), "'name' is a required property"),
        (("tool_choice: auto", "tool_choise: auto"), "unknown key 'tool_choise'"),
        (("zdr: true", "zdr: yes please"), "at $.defaults.params.provider.zdr"),
        (("detail: low", "detail: tiny"), "$.prompts[0].messages[0].content"),
        (("format: wav}", "}"), "$.prompts[0].messages[0].content"),
        (("sort: {by: price, partition: none}", "sort: fastest"), "at $.defaults.params.provider.sort"),
    ],
)
def test_broken_parameters_are_validate_errors(tmp_path: Path, edit: tuple[str, str], expected: str) -> None:
    text = DOCUMENTED.replace(*edit)
    assert text != DOCUMENTED
    code, _, err = call_cli("validate", write_job(tmp_path, text))
    assert code == 2 and expected in err, err


MODELS_JOB = """
name: variants
models: [{models}]
defaults: {{params: {{max_tokens: 16}}}}
prompts: [{{id: p, text: "Capital of France?"}}]
run: {{budget_usd: 1.0}}
"""


def run_variants(tmp_path: Path, sim: Simulator, models: str) -> tuple[int, str, str]:
    job = write_job(tmp_path, MODELS_JOB.format(models=models))
    import os

    os.environ["OPENROUTER_API_KEY"] = FAKE_KEY
    try:
        return call_cli(job, "--base-url", sim.base_url, "-o", tmp_path / "out.jsonl", "-q")
    finally:
        del os.environ["OPENROUTER_API_KEY"]


def test_variants_aliases_latest_and_private_models_resolve_and_run(tmp_path: Path, sim: Simulator) -> None:
    sim.config.aliases["~openai/gpt-mini-latest"] = "openai/gpt-4o-mini"
    sim.config.set_option("private.acme/tuned-1=1,2")
    variants = "openai/gpt-4o-mini:nitro, openai/gpt-4o-mini:floor, openai/gpt-4o-mini:exacto"
    models = f"{variants}, '~openai/gpt-mini-latest', acme/tuned-1"
    code, _, err = run_variants(tmp_path, sim, models)
    assert code == 0, err
    rows = read_rows(tmp_path / "out.jsonl")
    assert {r["status"] for r in rows} == {"ok"} and len(rows) == 5
    # latest-resolution.mdx: the reply names the concrete model that served the alias.
    assert {r["response_model"] for r in rows if r["model"].startswith("~")} == {"openai/gpt-4o-mini"}


def test_an_id_the_api_says_does_not_exist_is_refused_with_the_reason(tmp_path: Path, sim: Simulator) -> None:
    code, _, err = run_variants(tmp_path, sim, "openai/gpt-4o-mini, acme/nope-1")
    assert code == 2
    assert "acme/nope-1: not listed by /models, and GET /model/acme/nope-1 answered 404" in err
    assert sim.stats.chat_requests == 0


def test_plan_prices_variants_at_the_base_price_and_warns_for_nitro_and_routing(tmp_path: Path, sim: Simulator) -> None:
    job = write_job(tmp_path, MODELS_JOB.format(models="openai/gpt-4o-mini, openai/gpt-4o-mini:nitro"))
    import os

    os.environ["OPENROUTER_API_KEY"] = FAKE_KEY
    try:
        code, out, err = call_cli("plan", job, "--base-url", sim.base_url)
    finally:
        del os.environ["OPENROUTER_API_KEY"]
    assert code == 0, err
    text = out.splitlines()
    basis = {line.split()[0]: text[i + 1] for i, line in enumerate(text) if line.startswith("openai/")}
    # The same prices (the worst cases differ only by the ":nitro" bytes of the body's model id).
    assert basis["openai/gpt-4o-mini"] == basis["openai/gpt-4o-mini:nitro"]
    assert basis["openai/gpt-4o-mini"].startswith("  price basis: ")
    assert "note: openai/gpt-4o-mini:nitro is not listed by /models: priced as variant of openai/gpt-4o-mini" in out
    assert "may be served by a priority-tier endpoint" in out
    assert "warning: routing not pinned for openai/gpt-4o-mini, openai/gpt-4o-mini:nitro" in out


def test_pinned_routing_gives_no_warning_and_the_summary_carries_it_otherwise(tmp_path: Path, sim: Simulator) -> None:
    code, out, _ = run_variants(tmp_path, sim, "openai/gpt-4o-mini")
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert "routing not pinned for openai/gpt-4o-mini" in summary["routing_warning"]
    pinned = MODELS_JOB.format(models="openai/gpt-4o-mini").replace(
        "{params: {max_tokens: 16}}", "{params: {max_tokens: 16, provider: {only: [openai], allow_fallbacks: false}}}"
    )
    job = write_job(tmp_path, pinned, "pinned.yaml")
    assert "routing not pinned" not in call_cli("plan", job)[1]


def _info(model_id: str, prompt: float) -> ModelInfo:
    return ModelInfo(model_id, prompt, prompt * 4, 0.0, 131072, 16384)


@pytest.mark.parametrize(
    ("answer", "price", "how"),
    [
        (("found", _info("acme/big:extended", 9e-6)), 9e-6, "single-model lookup (acme/big:extended)"),
        (("unknown", None), None, "unknown (a version of acme/big the base price does not bound"),
        (None, None, "unknown (a version of acme/big the base price does not bound"),
    ],
    ids=["looked-up", "lookup-unavailable", "no-lookup"],
)
def test_an_extended_version_is_never_priced_as_its_base(
    answer: tuple[str, ModelInfo | None] | None, price: float | None, how: str
) -> None:
    # extended.mdx: ":extended" gives "model versions with extended context windows", which may
    # cost more than the base (break14c m7): its own lookup prices it, else it is unknown.
    asked: list[str] = []

    async def lookup(model_id: str) -> tuple[str, ModelInfo | None]:
        asked.append(model_id)
        assert answer is not None
        return answer

    listed = {"acme/big": _info("acme/big", 1e-6)}
    resolution = asyncio.run(resolve_models({"acme/big:extended"}, listed, lookup if answer else None))
    assert resolution.models["acme/big:extended"].prompt_price == price
    assert resolution.how["acme/big:extended"].startswith(how)
    assert asked == (["acme/big:extended"] if answer else [])


def test_an_extended_version_the_lookup_does_not_know_is_refused() -> None:
    async def lookup(model_id: str) -> tuple[str, ModelInfo | None]:
        return "missing", None

    resolution = asyncio.run(resolve_models({"acme/big:extended"}, {"acme/big": _info("acme/big", 1e-6)}, lookup))
    assert resolution.missing == {
        "acme/big:extended": "not listed by /models, and GET /model/acme/big:extended answered 404"
    }
