"""A per-run key whose limit is the budget, through the simulator's management API."""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import io
import json
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from batchrun import ExitCode, RunOptions, load_job, run_job
from batchrun._console import Console
from batchrun._exceptions import ConfigError
from batchrun._job import Job
from batchrun._run_control import RunControl
from batchrun._summary_text import render_text
from batchrun._transport import default_transport
from batchrun.simulator import SimConfig, Simulator

from .conftest import (
    BIG_JOB,
    BUDGET_JOB,
    FAKE_KEY,
    SIM_MANAGEMENT_KEY,
    SMALL_JOB,
    FakeClock,
    LeapClock,
    child_env,
    cli,
    created_keys,
    isolated_run,
    management_env,
    read_rows,
    start,
    wait_for_lines,
    write_job,
)


def test_the_run_key_is_created_used_and_deleted(tmp_path: Path, sim: Simulator) -> None:
    job = write_job(tmp_path, SMALL_JOB)
    out = tmp_path / "i.jsonl"
    before = time.time()
    result = isolated_run(sim, job, out, "0.5", "--deadline", "120")
    assert result.returncode == 0, result.stderr
    assert sim.stats.keys_created == 1 and sim.stats.keys_deleted == 1
    [label] = created_keys(sim)
    assert sim.stats.by_key_label[label] == 20 == sim.stats.chat_requests  # every chat request on the run key
    summary = json.loads((tmp_path / "i.summary.json").read_text())
    audit = summary["isolated_key"]
    assert audit["label"] == label and audit["limit_usd"] == 0.5 and audit["removed"] == "deleted"
    assert len(audit["hash_prefix"]) == 8
    expires = calendar.timegm(time.strptime(audit["expires_at"], "%Y-%m-%dT%H:%M:%SZ"))
    assert before + 120 < expires <= time.time() + 120 + 10 + 600 + 1  # deadline + grace + slack
    assert abs(audit["usage_usd"] - summary["spent_usd"]) < 1e-9
    assert f"per-run key {label}" in result.stdout


def test_a_deadline_past_any_keys_expiry_is_refused_before_a_key_is_asked_for(tmp_path: Path, sim: Simulator) -> None:
    # out-110 F6: --deadline 1e12 sent POST /keys an expires_at of "(no valid time)", and said
    # only the server's answer, which did not name the option.
    result = isolated_run(sim, write_job(tmp_path, SMALL_JOB), tmp_path / "i.jsonl", "0.5", "--deadline", "1e12")
    assert result.returncode == ExitCode.USAGE and "deadline is too far ahead for a key's expiry" in result.stderr
    assert sim.stats.keys_created == 0 and sim.stats.chat_requests == 0


def test_a_label_that_holds_the_per_run_key_shows_neither(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break53 F1: a gateway labelling a key with the key itself: the label was scrubbed before
    # the key was known, so the whole per-run key was printed and written to the summary.
    key_data = Simulator._key_data

    def labelled_with_the_key(simulator: Simulator, key: Any) -> dict[str, Any]:
        return {**key_data(simulator, key), "label": f"made for {simulator.issued[-1]}"}

    monkeypatch.setattr(Simulator, "_key_data", labelled_with_the_key)
    result = isolated_run(sim, write_job(tmp_path, SMALL_JOB), tmp_path / "i.jsonl", "0.5")
    assert result.returncode == 0, result.stderr
    [key] = sim.issued[-1:]
    written = (tmp_path / "i.summary.json").read_text() + (tmp_path / "i.jsonl").read_text()
    assert key not in result.stdout + result.stderr + written
    assert json.loads((tmp_path / "i.summary.json").read_text())["isolated_key"]["label"] == "made for [key]"


def test_the_key_is_deleted_after_a_budget_stop(tmp_path: Path, sim: Simulator) -> None:
    job = write_job(tmp_path, BUDGET_JOB)
    result = isolated_run(sim, job, tmp_path / "b.jsonl", "0.003", "-q")
    assert result.returncode == ExitCode.BUDGET
    assert sim.stats.keys_created == sim.stats.keys_deleted == 1


def interrupted_run(sim: Simulator, job: Path, out: Path, lines: int) -> int:
    """An isolated-key run stopped by SIGTERM once it has written `lines` rows; its exit code."""
    process = start(
        job, "--base-url", sim.base_url, "--isolated-key", "--budget", "1", "-o", out, "-q", env=management_env()
    )
    wait_for_lines(out, lines, process)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    return process.returncode


def test_the_key_is_deleted_after_sigterm(tmp_path: Path, sim: Simulator) -> None:
    sim.config.latency_ms = 100
    assert interrupted_run(sim, write_job(tmp_path, BIG_JOB), tmp_path / "t.jsonl", 5) == ExitCode.INTERRUPTED
    assert sim.stats.keys_created == sim.stats.keys_deleted == 1


def test_after_kill_9_the_key_is_left_but_expires(tmp_path: Path, sim: Simulator, web: httpx.Client) -> None:
    sim.config.latency_ms = 100
    job = write_job(tmp_path, BIG_JOB.replace("grace_s: 0.2", "grace_s: 0.2, key_expiry_s: 900"))
    out = tmp_path / "k.jsonl"
    process = start(
        job, "--base-url", sim.base_url, "--isolated-key", "--budget", "1", "-o", out, "-q", env=management_env()
    )
    wait_for_lines(out, 5, process)
    process.kill()
    process.wait()
    assert sim.stats.keys_created == 1 and sim.stats.keys_deleted == 0
    [(token, key)] = [(t, k) for t, k in sim._keys.items() if k.created]
    assert key.expires_at is not None and 0 < key.expires_at - time.time() <= 900  # the dead-man switch is set
    key.expires_at = time.time() - 1  # ... and once it passes, the key is refused
    response = web.post(
        f"{sim.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {token}"},
        json={"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 401 and "expired" in response.json()["error"]["message"]


async def test_a_broken_ledger_still_cannot_spend_past_the_budget(tmp_path: Path, sim: Simulator) -> None:
    job = load_job(write_job(tmp_path, BUDGET_JOB))
    job = job.__class__(
        **{**job.__dict__, "run": job.run.__class__(**{**job.run.__dict__, "budget_usd": 0.003, "isolated_key": True})}
    )
    out = tmp_path / "broken.jsonl"
    report = await run_job(
        job,
        RunOptions(
            api_key=None,
            base_url=sim.base_url,
            output=out,
            management_key=SIM_MANAGEMENT_KEY,
            # The real clock: a per-run key's run has a deadline (its key's expiry), which a
            # clock whose sleeps return at once would reach at once. Nothing here waits.
            test_broken_ledger=True,
        ),
    )
    rows = read_rows(out)
    assert report.outcome.stop == "credits" and 402 in sim.stats.by_status  # the server said no
    assert sum(r["cost"] or 0 for r in rows) <= 0.003
    assert sim.stats.keys_deleted == 1


def test_neither_key_appears_in_any_output(tmp_path: Path, sim: Simulator) -> None:
    job = write_job(tmp_path, SMALL_JOB)
    out = tmp_path / "n.jsonl"
    step = tmp_path / "step.md"
    keys = child_env(
        OPENROUTER_MANAGEMENT_KEY=SIM_MANAGEMENT_KEY, OPENROUTER_API_KEY=FAKE_KEY, GITHUB_STEP_SUMMARY=str(step)
    )
    result = isolated_run(sim, job, out, "0.5", environment=keys)
    assert result.returncode == 0
    [token] = sim.issued
    assert not [k for k in sim._keys.values() if k.created]  # deleted at the end
    key_hash = hashlib.sha256(token.encode()).hexdigest()
    texts = [out.read_text(), (tmp_path / "n.summary.json").read_text(), step.read_text(), result.stdout, result.stderr]
    for text in texts:
        assert SIM_MANAGEMENT_KEY not in text and FAKE_KEY not in text and token not in text and token[9:40] not in text
        assert key_hash not in text and key_hash[:20] not in text


def test_resume_creates_a_new_key_with_the_budget_left(tmp_path: Path, sim: Simulator) -> None:
    sim.config.latency_ms = 50
    job = write_job(tmp_path, BIG_JOB)
    out = tmp_path / "r.jsonl"
    assert interrupted_run(sim, job, out, 20) == ExitCode.INTERRUPTED
    spent, billed = sum(r["cost"] or 0 for r in read_rows(out)), sim.stats.billed_usd
    sim.config.latency_ms = 0  # the latency only let the SIGTERM land mid-run
    result = isolated_run(sim, job, out, "1", "--resume", "-q")
    assert result.returncode == 0, result.stderr
    assert sim.stats.keys_created == sim.stats.keys_deleted == 2
    limit = json.loads((tmp_path / "r.summary.json").read_text())["isolated_key"]["limit_usd"]
    if billed - spent < 1e-9:  # every charge has its record: the budget left, to the cent
        assert abs(limit - (1 - spent)) < 1e-6
    else:  # requests in flight past the grace (a busy machine: out-147 F5) were charged too, and counted
        assert limit <= 1 - billed + 1e-6


def test_isolated_key_configuration_errors_exit_2_before_any_request(tmp_path: Path, sim: Simulator) -> None:
    job = write_job(tmp_path, SMALL_JOB)
    no_management = isolated_run(sim, job, tmp_path / "a.jsonl", "1", environment=child_env())
    assert no_management.returncode == ExitCode.USAGE
    assert no_management.stderr == "batchrun: --isolated-key needs a management key in $OPENROUTER_MANAGEMENT_KEY\n"
    no_budget = cli(job, "--base-url", sim.base_url, "--isolated-key", "-o", tmp_path / "b.jsonl", env=management_env())
    assert no_budget.returncode == ExitCode.USAGE and "needs a budget" in no_budget.stderr
    refused = isolated_run(
        sim, job, tmp_path / "c.jsonl", "1", environment=child_env(OPENROUTER_MANAGEMENT_KEY="wrong")
    )
    assert refused.returncode == ExitCode.USAGE
    assert refused.stderr == "batchrun: could not create the per-run key: A management key is required for /keys\n"
    no_api = cli(
        job, "--simulate", "--sim", "account_api=false", "--isolated-key", "--budget", "1", "-o", tmp_path / "d.jsonl"
    )
    assert no_api.returncode == ExitCode.USAGE and "has no /keys management API" in no_api.stderr
    assert sim.stats.chat_requests == 0


def test_a_key_created_without_its_limit_is_refused_and_deleted(tmp_path: Path, sim: Simulator) -> None:
    # break-14b M5: a /keys server that ignored the limit was trusted; the audit claimed it.
    sim.config.created_keys_unlimited = True
    result = isolated_run(sim, write_job(tmp_path, SMALL_JOB), tmp_path / "u.jsonl", "0.1", "-q")
    assert result.returncode == ExitCode.USAGE
    assert result.stderr == (
        "batchrun: the per-run key was created with limit none, not the $0.1 asked for: "
        "OpenRouter would not hold the run to its budget; the key is removed (a warning says so if not)\n"
    )
    assert sim.stats.keys_created == sim.stats.keys_deleted == 1 and sim.stats.chat_requests == 0


def test_a_management_key_cannot_chat(web: httpx.Client, sim: Simulator) -> None:
    response = web.post(
        f"{sim.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {SIM_MANAGEMENT_KEY}"},
        json={"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 401


def test_a_key_charged_more_than_the_ledger_counted_is_a_warning(tmp_path: Path, sim: Simulator) -> None:
    sim.config.unreported_usd = 0.001  # 20 answers: 2 cents the responses never reported
    job = write_job(tmp_path, SMALL_JOB)
    result = isolated_run(sim, job, tmp_path / "m.jsonl", "0.5", "-q")
    assert result.returncode == 0
    assert (
        # To the millionth, as the summary's figures: to 4 places the ledger's $0.000036 read $0.0000.
        "warning: the key was charged $0.020036 during the run but the ledger counted $0.000036" in result.stderr
        and "$0.020000 beyond the answers' reported costs, counted as spent from the key's usage" in result.stderr
    )
    summary = json.loads((tmp_path / "m.summary.json").read_text())
    assert summary["reconciliation"]["difference_usd"] == pytest.approx(0.02, abs=1e-4)


def test_a_per_run_key_charged_as_byok_is_reconciled_with_its_byok_usage(tmp_path: Path) -> None:
    # The per-run key's limit includes BYOK (include_byok_in_limit: true), so its usage as that
    # limit counts it is usage + byok_usage. break14c N3: byok_usage was dropped, the key
    # seemed charged only OpenRouter's fee, and the reconciliation saw the ledger over-count.
    simulator = Simulator(SimConfig(byok=True))
    with simulator.serve_in_thread():
        result = isolated_run(simulator, write_job(tmp_path, SMALL_JOB), tmp_path / "y.jsonl", "0.5")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "y.summary.json").read_text())
    assert summary["spent_usd"] > 0
    assert abs(summary["isolated_key"]["usage_usd"] - summary["spent_usd"]) < 1e-9
    assert summary["reconciliation"]["warning"] is None
    assert summary["reconciliation"]["key_usage_delta_usd"] == pytest.approx(summary["spent_usd"], abs=1e-8)


class CreatedKeyRewrite(httpx.AsyncBaseTransport):
    """The client's transport, with the simulator's POST /keys answer rewritten by `edit`;
    every URL the run asks for is kept."""

    def __init__(self, edit: Any) -> None:
        self.inner = default_transport(4)
        self.edit = edit
        self.urls: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(str(request.url))
        response = await self.inner.handle_async_request(request)
        if request.method != "POST" or not request.url.path.endswith("/keys"):
            return response
        body = json.loads(await response.aread())
        self.edit(body)
        return httpx.Response(response.status_code, json=body)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _isolated(sim: Simulator, tmp_path: Path, transport: httpx.AsyncBaseTransport) -> tuple[Job, RunOptions]:
    """SMALL_JOB on a per-run key of $0.1, through `transport`."""
    job = load_job(write_job(tmp_path, SMALL_JOB))
    job = replace(job, run=replace(job.run, budget_usd=0.1, isolated_key=True, max_attempts=1))
    options = RunOptions(
        api_key=None,
        base_url=sim.base_url,
        output=tmp_path / "out.jsonl",
        management_key=SIM_MANAGEMENT_KEY,
        clock=FakeClock(),
        transport=transport,
    )
    return job, options


async def _isolated_with(sim: Simulator, tmp_path: Path, edit: Any) -> tuple[str, CreatedKeyRewrite]:
    transport = CreatedKeyRewrite(edit)
    with pytest.raises(ConfigError) as refused:
        await run_job(*_isolated(sim, tmp_path, transport))
    assert sim.stats.chat_requests == 0
    return str(refused.value), transport


async def test_a_created_key_hash_that_is_not_a_hash_never_reaches_a_url(tmp_path: Path, sim: Simulator) -> None:
    # break23 F5: "../../credits?x=<management key>" as the hash sent GET, DELETE and PATCH,
    # with the management key, to /api/credits?x=<management key>.
    def traverse(body: dict[str, Any]) -> None:
        body["data"]["hash"] = f"../../credits?x={SIM_MANAGEMENT_KEY}"

    message, transport = await _isolated_with(sim, tmp_path, traverse)
    assert message.startswith("could not create the per-run key: the /keys reply had a key hash that is not one; ")
    assert "may have been created: it expires at 20" in message  # the key it made is said, and when it dies
    assert [url for url in transport.urls if "/keys/" in url or "credits?" in url] == []
    assert not any(SIM_MANAGEMENT_KEY in url for url in transport.urls)


async def test_a_created_key_that_is_not_the_one_described_is_not_used(tmp_path: Path, sim: Simulator) -> None:
    # break33 m9: the reply described a key with the run's limit and handed over another, without
    # one: the run spent on it, and reported the described key "charged $0, deleted".
    def swapped(body: dict[str, Any]) -> None:
        body["key"] = FAKE_KEY  # the account's own key: no limit of its own

    message, _ = await _isolated_with(sim, tmp_path, swapped)
    assert message == (
        "the key the /keys reply handed over has limit none on its own /key, not the $0.1 the reply described: "
        "it is not used"
    )
    assert sim.stats.keys_created == sim.stats.keys_deleted == 1


class OwnKeyMissing(CreatedKeyRewrite):
    """The /keys reply handed over `FAKE_KEY`, whose own /key answers 404 (verify32 n1)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/key") and request.headers["authorization"] == f"Bearer {FAKE_KEY}":
            self.urls.append(str(request.url))
            return httpx.Response(404, json={"error": {"code": 404, "message": "Not Found"}})
        return await super().handle_async_request(request)


async def test_a_created_key_whose_own_key_is_not_found_is_not_used(tmp_path: Path, sim: Simulator) -> None:
    # verify32 n1: the check of the key handed over was skipped when its /key answered 404, and
    # the run spent on an unlimited key while reporting the described one "charged $0, deleted".
    transport = OwnKeyMissing(lambda body: body.__setitem__("key", FAKE_KEY))
    with pytest.raises(ConfigError) as refused:
        await run_job(*_isolated(sim, tmp_path, transport))
    assert str(refused.value) == (
        "could not read the per-run key's own /key: it answered as if there were none (404, 405 or 501), "
        "so the key handed over cannot be shown to hold the budget; it is not used"
    )
    assert sim.stats.chat_requests == 0
    assert sim.stats.keys_created == sim.stats.keys_deleted == 1  # and the key made is deleted


async def test_a_created_key_without_its_secret_is_removed(tmp_path: Path, sim: Simulator) -> None:
    # break23 F6: the reply named the key's hash but not the key: refused, the key left alive.
    message, _ = await _isolated_with(sim, tmp_path, lambda body: body.pop("key"))
    assert message == "the /keys reply named the key it created but not the key itself: it is removed"
    assert sim.stats.keys_created == sim.stats.keys_deleted == 1


class CreatedThenFailed(CreatedKeyRewrite):
    """POST /keys makes the key, then its answer is `status`: as a server failing after the
    insert (500), or a proxy that timed out while the upstream acted (408)."""

    def __init__(self, status: int) -> None:
        super().__init__(lambda _body: None)
        self.status = status

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if request.method == "POST" and request.url.path.endswith("/keys"):
            return httpx.Response(self.status, json={"error": {"code": self.status, "message": "it failed"}})
        return response


@pytest.mark.parametrize("status", [500, 408])
async def test_a_key_creation_that_failed_after_the_insert_is_said_and_not_tried_again(
    tmp_path: Path, sim: Simulator, status: int
) -> None:
    # break33 m2: retried like a chat call, six 500s made six keys, each with the run's budget.
    # verify32 n7: a 408 (a proxy's timeout) may come after the key was made: said too.
    job, options = _isolated(sim, tmp_path, CreatedThenFailed(status))
    with pytest.raises(ConfigError) as refused:
        await run_job(replace(job, run=replace(job.run, max_attempts=6)), options)
    assert "may have been created: it expires at 20" in str(refused.value)
    assert sim.stats.keys_created == 1 and sim.stats.chat_requests == 0


class KeyNotReadBack(CreatedKeyRewrite):
    """GET /keys/{hash} answers 404 once the key is created: the server does not show it."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and "/keys/" in request.url.path:
            return httpx.Response(404, json={"error": {"code": 404, "message": "not found"}})
        return await super().handle_async_request(request)


async def test_a_created_key_that_cannot_be_read_back_is_said_so(tmp_path: Path, sim: Simulator) -> None:
    # verify23 N7: a 404 on reading the key back said "created with limit none".
    with pytest.raises(ConfigError) as refused:
        await run_job(*_isolated(sim, tmp_path, KeyNotReadBack(lambda _body: None)))
    assert str(refused.value).startswith("could not read back the per-run key's limit: GET /keys/{hash} answered 404")
    assert sim.stats.chat_requests == 0 and sim.stats.keys_created == sim.stats.keys_deleted == 1


class UndeletableKeys(CreatedKeyRewrite):
    """DELETE and PATCH /keys/{hash} answer 500: the key can be neither deleted nor disabled."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method in ("DELETE", "PATCH") and "/keys/" in request.url.path:
            self.urls.append(f"{request.method} {request.url.path}")
            return httpx.Response(500, json={"error": {"code": 500, "message": "down"}})
        return await super().handle_async_request(request)


async def test_a_key_that_cannot_be_removed_is_said_once(tmp_path: Path, sim: Simulator) -> None:
    # break23: the warning was printed twice, the delete and disable tried twice: once at the
    # end of the run and again in its `finally`, since the key was still not removed.
    transport = UndeletableKeys(lambda body: None)
    notices: list[str] = []
    report = await run_job(*_isolated(sim, tmp_path, transport), notice=notices.append)
    warned = [n for n in notices if "could not be deleted or disabled" in n]
    assert len(warned) == 1, notices
    assert [u.split()[0] for u in transport.urls if u.startswith(("DELETE", "PATCH"))] == ["DELETE", "PATCH"]
    assert (report.summary["isolated_key"] or {}).get("removed", "?") is None and sim.stats.keys_deleted == 0


class CreationHangs(CreatedKeyRewrite):
    """POST /keys never answers: `asked` is set as it begins (a key may exist all the same)."""

    def __init__(self) -> None:
        super().__init__(lambda _body: None)
        self.asked = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/keys"):
            self.asked.set()
            await asyncio.Event().wait()  # only a cancel ends it
        return await super().handle_async_request(request)


async def test_a_signal_while_the_key_is_created_says_it_may_exist(tmp_path: Path, sim: Simulator) -> None:
    # verify25 N11: "the per-run key None ..." after a signal during its creation.
    transport = CreationHangs()
    job, options = _isolated(sim, tmp_path, transport)
    control, notices = RunControl(), list[str]()

    async def stop_when_asked() -> None:
        await transport.asked.wait()
        control.stop()

    stopper = asyncio.create_task(stop_when_asked())
    report = await asyncio.wait_for(run_job(job, options, control, notices.append), 30)  # a bound
    await stopper
    assert report.summary["stop"] == "interrupted" and sim.stats.chat_requests == 0
    (warning,) = [n for n in notices if "per-run key" in n]
    assert warning.startswith("warning: a per-run key named 'batchrun small ") and "may have been created" in warning
    assert "None" not in warning and "it expires at 20" in warning
    audit = report.summary["isolated_key"]
    assert audit is not None and audit["label"].startswith("batchrun small ")  # verify26: it was null
    # No reply named a key: none is said to be "NOT removed" (verify64 F10).
    shown = render_text(report.summary)
    assert "none known (the run stopped before a reply named one)" in shown and "NOT removed" not in shown


def test_a_run_on_a_per_run_key_without_a_deadline_ends_before_its_key_does() -> None:
    # break33 m3: the key expired mid-run (key_expiry_s), and the run ended "the API key was
    # refused", exit 9, which reads as the user's key gone. It now stops at the deadline (exit 6).
    from batchrun._isolated import EXPIRY_SLACK_S, with_key_deadline
    from batchrun._settings import RunSettings

    settings = RunSettings(isolated_key=True, key_expiry_s=3600.0, grace_s=5.0)
    assert with_key_deadline(settings).deadline_s == 3600.0 - 5.0 - EXPIRY_SLACK_S
    assert with_key_deadline(replace(settings, deadline_s=100.0)).deadline_s == 100.0  # given: kept
    assert with_key_deadline(replace(settings, isolated_key=False)).deadline_s is None
    assert with_key_deadline(replace(settings, key_expiry_s=300.0)).deadline_s is None  # too short: as set


def _on_a_real_clock(sim: Simulator, tmp_path: Path, offset_s: float) -> tuple[Job, RunOptions]:
    """SMALL_JOB on a per-run key of $0.1 with a 60 s deadline, on real time moved by `offset_s`
    (the simulator's keys expire by its real clock: a fake clock would not show it)."""
    job = load_job(write_job(tmp_path, SMALL_JOB))
    job = replace(job, run=replace(job.run, budget_usd=0.1, isolated_key=True, deadline_s=60.0, grace_s=1.0))
    clock = LeapClock(lambda: False, 0.0)
    clock.offset = offset_s
    output = tmp_path / "out.jsonl"
    options = RunOptions(
        api_key=None, base_url=sim.base_url, output=output, management_key=SIM_MANAGEMENT_KEY, clock=clock
    )
    return job, options


async def test_a_per_run_key_made_by_a_clock_behind_the_servers_lives_by_the_servers(
    tmp_path: Path, sim: Simulator
) -> None:
    # break46 F5: the key's expires_at came from our clock; 11 minutes behind the server's, the
    # key died mid-run, "the API key was refused" (exit 9); 15 minutes, exit 2 before any row.
    # The created key's reply says the server's time (its Date): the key is made again by it.
    report = await run_job(*_on_a_real_clock(sim, tmp_path, -900.0))  # 15 minutes behind the simulator's
    assert report.summary["stop"] is None and sim.stats.chat_requests == 20
    audit = report.summary["isolated_key"]
    assert len(sim.issued) == 2 and audit is not None and audit["removed"] in ("deleted", "disabled")


async def test_a_keys_reply_date_a_day_or_more_ahead_is_said_not_believed(tmp_path: Path, sim: Simulator) -> None:
    # verify48 N1: a proxy's Date a year ahead made the remade key live a year.
    sim.clock = lambda: time.time() + 2 * 86_400.0  # its replies' Date
    with pytest.raises(ConfigError, match="Date is 172,8[0-9][0-9] s ahead of this machine's clock: set the clock"):
        await run_job(*_on_a_real_clock(sim, tmp_path, 0.0))
    assert sim.stats.chat_requests == 0 and len(sim.issued) == 1


class HangingGeneration(httpx.AsyncBaseTransport):
    """The run's own transport, on which GET /generation never answers (until the run cuts it)
    and, from then on, each call that begins with one of `slow` ("GET /key": the /key read and
    the per-run key's usage read) answers after `slow_s` of real time."""

    def __init__(self, slow: tuple[str, ...] = (), slow_s: float = 0.0) -> None:
        self.inner = default_transport(8)
        self.slow, self.slow_s = slow, slow_s
        self.asked: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.asked.append(f"{request.method} {path.rsplit('/api/v1', 1)[-1]}")
        if path.endswith("/generation"):
            await asyncio.Event().wait()  # a lookup that hangs: only the run's cut-off ends it
        if "GET /generation" in self.asked and self.asked[-1].startswith(self.slow):
            await asyncio.sleep(self.slow_s)  # past the wind-down: only its cut-off ends it
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("slow", [(), ("GET /key",), ("DELETE /keys/",)])
async def test_after_a_stop_the_per_run_key_is_deleted_whatever_the_reads_before_it_do(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch, slow: tuple[str, ...]
) -> None:
    # break60 F1, F2: after a stop, the end-of-run calls shared one wind-down, in turn: the cost
    # lookups, /key, the per-run key's usage, and last its deletion. A /generation that hung used
    # it all: /key was never read ("not reconciled", the answers counted at their worst cases)
    # and DELETE never sent, the key live with its budget for 6 h. So did a /key, or the key's
    # own usage read, that answered after the wind-down; a DELETE that hung left it enabled.
    import batchrun._cut_off as cut_off

    monkeypatch.setattr(cut_off, "WIND_DOWN_FLOOR_S", 0.4)
    sim.config.faults = {"stall": 1.0}  # every answer's headers (its generation id), then nothing
    job = load_job(write_job(tmp_path, SMALL_JOB))
    # A grace of 0.5 s: the key's DELETE has a wind-down of its own as long, which a loaded machine
    # (the suite beside other work) ran past at 0.1 s, the key then left to expire: a flake.
    job = replace(job, run=replace(job.run, isolated_key=True, budget_usd=1.0, timeout_s=3600.0, grace_s=0.5))
    transport = HangingGeneration(slow, slow_s=30.0)
    control = RunControl()

    async def stop() -> None:
        while sim.stats.chat_requests < 4:  # four answers in flight, their ids known
            await asyncio.sleep(0.01)
        control.stop()

    stopper = asyncio.create_task(stop())
    options = RunOptions(
        FAKE_KEY, sim.base_url, tmp_path / "o.jsonl", management_key=SIM_MANAGEMENT_KEY, transport=transport
    )
    report = await asyncio.wait_for(run_job(job, options, control), 30)  # a bound, not a measure
    await stopper
    assert report.summary["stop"] == "interrupted" and "GET /generation" in transport.asked
    audit = report.summary["isolated_key"]
    assert audit is not None and sim.stats.keys_created == 1
    if slow == ("DELETE /keys/",):  # a DELETE that hangs is cut, and the key disabled (verify64 F4)
        assert audit["removed"] == "disabled" and transport.asked[-1].startswith("PATCH /keys/")
        return
    assert sim.stats.keys_deleted == 1 and audit["removed"] == "deleted", transport.asked
    if slow:  # the usage read cut at half the removal's own wind-down, the deletion sent in the rest
        assert audit["usage_usd"] is None
    else:  # half the wind-down was the lookups', the rest the /key read's
        after = transport.asked[transport.asked.index("GET /generation") :]
        assert "GET /key" in after and report.summary["reconciliation"]["warning"] is None


def test_a_keys_label_reads_the_same_on_both_streams_a_key_stays_hidden() -> None:
    # verify64 F10: stdout said the per-run key as `sk-or-v1-d5a...d9a`, stderr's warning about
    # the same key as `sk-or-...(hidden)...d9a`.
    out, err = io.StringIO(), io.StringIO()
    console = Console(out, err)
    console.error("per-run key sk-or-v1-0e6...1c96: NOT removed")
    console.error(f"a key typed as a value: {FAKE_KEY[:24]} beside sk-or-v1-0e6...1c96")
    said = err.getvalue().splitlines()
    assert said[0] == "batchrun: per-run key sk-or-v1-0e6...1c96: NOT removed"
    assert said[1] == "batchrun: a key typed as a value: sk-or-...(hidden) beside sk-or-v1-0e6...1c96"
