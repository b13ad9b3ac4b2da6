"""A server whose prices are honest and whose answers lie, and the jobs run against it: shared
by the cost-bound tests (test_cost_bound, test_cost_bound_inputs)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchrun._job import load_job
from batchrun._matrix import matrix_requests

from .conftest import call_cli, write_job
from .hostile import HostileServer, RawRequest, chat_payload, check, json_answer

MODEL = "acme/cheap"
PROMPT, COMPLETION = 1e-4, 2e-4  # USD per token: dear, so that a few KB is real money


def pricing(**extra: Any) -> dict[str, Any]:
    return {"prompt": str(PROMPT), "completion": str(COMPLETION), "request": "0", **extra}


def model_entry(model: str = MODEL, price: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": model,
        "context_length": 131072,
        "pricing": price or pricing(),
        "top_provider": {"max_completion_tokens": 16384},
        **extra,
    }


def endpoint(price: dict[str, Any], tag: str = "p0", **extra: Any) -> dict[str, Any]:
    return {"provider_name": tag.upper(), "tag": tag, "pricing": price, "max_completion_tokens": 16384, **extra}


@dataclass
class Billing:
    """Bills each chat request one token per byte of its body (a tokenizer that counts the
    whole request, tools and schemas included) and `completion` tokens, at the /models price."""

    completion: int = 2
    reported: Any = "match"  # usage.cost sent back: the bill, a value, or "omit"
    usage: dict[str, Any] = field(default_factory=dict)
    total: float = 0.0
    chats: int = 0

    def chat(self, request: RawRequest) -> bytes:
        bill = len(request.body) * PROMPT + self.completion * COMPLETION
        self.total += bill
        self.chats += 1
        usage: dict[str, Any] = {"prompt_tokens": len(request.body), "completion_tokens": self.completion}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if self.reported == "match":
            usage["cost"] = bill
        elif self.reported != "omit":
            usage["cost"] = self.reported
        usage.update(self.usage)
        return json_answer(200, chat_payload("42", model=MODEL, usage=usage, id=f"gen-{self.chats}"))


def server(
    billing: Billing,
    models: list[dict[str, Any]] | None = None,
    endpoints: Any = None,
    key_usage: bool = False,
) -> HostileServer:
    """A server with `models` listed and, per model, `endpoints` (a list of endpoints, or a
    raw answer's bytes); with `key_usage`, /key reports what was really billed."""
    listed = models or [model_entry()]

    def key(request: RawRequest) -> bytes:
        usage = billing.total if key_usage else 0
        return json_answer(200, {"data": {"label": "k", "limit": None, "limit_remaining": None, "usage": usage}})

    hostile = HostileServer(chat=billing.chat, models=lambda r: json_answer(200, {"data": listed}), key=key)
    if endpoints is not None:

        def listing(request: RawRequest) -> bytes:
            if isinstance(endpoints, bytes):
                return endpoints
            return json_answer(200, {"data": {"id": MODEL, "endpoints": endpoints}})

        hostile.routes["/endpoints"] = listing
    return hostile


JOB = """
name: bound
defaults:
  params: {max_tokens: 2}
models: [acme/cheap]
prompts:
  - id: p
    text: "What is {{a}} + 1?"
    vars: [{a: 1}, {a: 2}, {a: 3}, {a: 4}, {a: 5}, {a: 6}]
run: {concurrency: 2, timeout_s: 10, max_attempts: 1}
"""
ROWS = 6


def params_job(name: str, params: dict[str, Any], model: str = MODEL, run: str = "") -> str:
    """JOB under another name, with these params (max_tokens 2 unless given), model, and `run`
    settings added (", cost_margin: 0")."""
    return (
        JOB.replace("name: bound", f"name: {name}")
        .replace("params: {max_tokens: 2}", "params: " + json.dumps({"max_tokens": 2, **params}))
        .replace("models: [acme/cheap]", f"models: [{model}]")
        .replace("max_attempts: 1}", "max_attempts: 1" + run + "}")
    )


def run(hostile: HostileServer, tmp_path: Path, job: str = JOB, *args: str) -> tuple[int, str, str, list[Any]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = write_job(tmp_path, job)
    out = tmp_path / "out.jsonl"
    with hostile.running():
        code, stdout, stderr = call_cli(path, "--base-url", hostile.base_url, "-o", out, *args)
    outcome = check(hostile, tmp_path, code, stdout, stderr, out)
    return code, stdout, stderr, outcome.rows


def plan(hostile: HostileServer, tmp_path: Path, job: str = JOB, *args: str) -> tuple[int, str, str]:
    path = write_job(tmp_path, job, "plan.yaml")
    with hostile.running():
        return call_cli("plan", path, "--base-url", hostile.base_url, *args)


def _request(tmp_path: Path, params: dict[str, Any], content: Any = "hi") -> Any:
    text = f"""
name: parts
defaults:
  params: {json.dumps(params)}
models: [acme/cheap]
prompts:
  - id: p
    messages: [{json.dumps({"role": "user", "content": content})}]
"""
    return next(matrix_requests(load_job(write_job(tmp_path, text))))
