"""BYOK spend and the parts of the run's limit (out-104 F2).

A BYOK answer costs OpenRouter's fee (`usage.cost`) and the provider's own charge
(`cost_details.upstream_inference_cost`). The budget counts both. A key created with
`include_byok_in_limit: false` counts the fee alone, and the account's balance (/credits) never
pays a provider's BYOK charge (byok.mdx). Held to the key's limit as if it counted both, a BYOK
run stopped "for credits" with most of the key's limit unspent. The promise checked: the run
spends up to what each limit really counts, never past it, and a key that says it leaves BYOK
out but counts it all the same is held to what it counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from batchrun._limit_parts import LimitParts

from .conftest import SMALL_JOB, cli, counting_job, management_env, write_job
from .hostile import HostileServer, RawRequest, chat_payload, json_answer, models_payload, run

pytestmark = pytest.mark.usefixtures("keys_env")


def simulated(
    tmp_path: Path, *options: str, args: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """The small job (20 rows) on a BYOK simulator whose answers take all their max_tokens (so
    that what is spent is near the worst cases), with `--sim` options; its exit and summary."""
    tmp_path.mkdir()
    job, out = write_job(tmp_path, SMALL_JOB), tmp_path / "o.jsonl"
    sims = [arg for option in ("byok=true", "stream_padding=200", *options) for arg in ("--sim", option)]
    done = cli(job, "--simulate", *sims, *args, "-o", out, "-q", env=env)
    assert "Traceback" not in done.stderr
    return done.returncode, json.loads(out.with_name("o.summary.json").read_text())


def full_spend(tmp_path: Path) -> float:
    """What the small job costs on the BYOK simulator with no limit: fees and upstream charges."""
    code, summary = simulated(tmp_path / "free")
    assert code == 0 and summary["total"]["ok"] == 20
    return float(summary["spent_usd"])


def test_a_key_that_leaves_byok_out_of_its_limit_is_held_to_the_fees(tmp_path: Path) -> None:
    spend = full_spend(tmp_path)
    limit = spend / 2  # the fees (5% of the upstream charges) fit many times; fees and upstream do not
    code, summary = simulated(tmp_path / "out", f"key_limit={limit}")
    assert code == 0 and summary["stop"] is None and summary["total"]["ok"] == 20
    assert summary["spent_usd"] == pytest.approx(spend)  # past the key's limit: upstream, which it leaves out
    rec = summary["reconciliation"]
    assert rec["key_usage_delta_usd"] == pytest.approx(spend, abs=1e-8) and abs(rec["difference_usd"]) < 1e-8
    # The same key counting BYOK in its limit: stopped for credits, within it.
    code, summary = simulated(tmp_path / "in", f"key_limit={limit}", "key_byok_in_limit=true")
    assert code == 5 and summary["stop"] == "credits" and summary["total"]["ok"] < 20
    assert summary["spent_usd"] <= limit + 1e-12


def test_the_accounts_balance_never_pays_byok_upstream_but_the_budget_counts_it(tmp_path: Path) -> None:
    spend = full_spend(tmp_path)
    env = management_env()  # /credits read: the balance is a part of the limit
    code, summary = simulated(tmp_path / "balance", f"account_credits={spend / 2}", env=env)
    assert code == 0 and summary["total"]["ok"] == 20
    assert summary["account_balance_usd"] == pytest.approx(spend / 2, abs=1e-8)
    # A budget is what the user spends, upstream included: it never rises.
    code, summary = simulated(tmp_path / "budget", args=("--budget", str(spend / 2)), env=env)
    assert code == 5 and summary["stop"] == "budget" and summary["spent_usd"] <= spend / 2 + 1e-12


def test_the_parts_of_the_limit() -> None:
    parts = LimitParts(job=1.0, key=0.2, balance=0.5, key_leaves_byok_out=True, margin=0.01)
    assert parts.limit == 0.2 and parts.from_key
    assert parts.follow(0.3, 0.1) == pytest.approx(0.29)  # the key's part: 0.2 (0.31 less the margin and rise), +0.1
    assert parts.follow(5.0, 0.1) == pytest.approx(0.29)  # a reset or a raised key limit gives no room
    assert parts.follow(None, 0.4) == pytest.approx(0.59)  # the key's part +0.4; the balance's 0.5 + 0.4
    assert parts.follow(None, 2.0) == 1.0 and not parts.from_key  # the budget never rises
    assert parts.follow(None, 0.0) == 1.0  # a rise never goes back down (a fall stops the run elsewhere)
    counted = LimitParts(key=0.2, balance=0.25, key_leaves_byok_out=False)
    assert counted.follow(0.2, 0.1) == 0.2 and counted.from_key  # a key that counts BYOK: no rise
    assert LimitParts(key=-0.5).limit == 0.0 and LimitParts().limit is None


# -- a server whose /key says BYOK is out of the limit -----------------------------------------
MODEL = "openai/gpt-4o-mini"
PRICES = {MODEL: {"pricing": {"prompt": "0.0001", "completion": "0.0002", "request": "0"}}}  # ~$0.02 a row
FEE, UPSTREAM = 0.0006, 0.0114  # what each answer is charged: below its worst case
LIMIT = 0.05  # the key's: about two worst cases
JOB = counting_job("byok", MODEL, 20, "{concurrency: 2, timeout_s: 10, max_attempts: 2}")


@dataclass
class ByokKey:
    """Charges each answer FEE and UPSTREAM as BYOK; its /key says the limit leaves BYOK out, and
    `counts_byok`: its limit_remaining falls by the upstream charges all the same (it lies)."""

    counts_byok: bool
    fees: float = 0.0
    upstream: float = 0.0

    def chat(self, request: RawRequest) -> bytes:
        self.fees, self.upstream = self.fees + FEE, self.upstream + UPSTREAM
        usage: dict[str, Any] = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12, "cost": FEE}
        usage["is_byok"] = True
        usage["cost_details"] = {"upstream_inference_cost": UPSTREAM}
        return json_answer(200, chat_payload(model=MODEL, usage=usage))

    def key(self, request: RawRequest) -> bytes:
        counted = self.fees + (self.upstream if self.counts_byok else 0.0)
        data = {"label": "k", "limit": LIMIT, "limit_remaining": LIMIT - counted, "limit_reset": None}
        data |= {"usage": self.fees, "byok_usage": self.upstream, "include_byok_in_limit": False}
        return json_answer(200, {"data": data})


@pytest.mark.parametrize("counts_byok", [False, True], ids=["as it says", "counts BYOK though it says not"])
def test_a_key_that_leaves_byok_out_is_held_to_what_it_counts(tmp_path: Path, counts_byok: bool) -> None:
    key = ByokKey(counts_byok)
    server = HostileServer(chat=key.chat, models=lambda r: json_answer(200, models_payload(PRICES)), key=key.key)
    outcome = run(server, tmp_path, job=JOB)
    if counts_byok:  # what its limit_remaining shows it counts: never past it
        assert key.fees + key.upstream <= LIMIT + 1e-9
        assert outcome.code == 5 and outcome.kinds() >= {"credits"}
    else:  # the fees: every row, $0.24 in all on a $0.05 key, $0.012 of it fees
        assert key.fees <= LIMIT and outcome.code == 0 and len(outcome.rows) == 20
        assert {r["status"] for r in outcome.rows} == {"ok"}
