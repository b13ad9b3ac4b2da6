"""Credit-limit awareness: pre-flight, the plan, and a budget that is never overshot."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from batchrun import ExitCode, RunOptions, load_job, run_job
from batchrun._output_paths import summary_path
from batchrun._plan import previous_average
from batchrun.simulator import Simulator

from .conftest import (
    BUDGET_JOB,
    FAKE_KEY,
    SMALL_JOB,
    FakeClock,
    call_cli,
    child_env,
    cli,
    judged_small_job,
    read_rows,
    write_job,
)


@pytest.mark.parametrize("seed", range(20))
def test_spend_never_passes_the_budget(tmp_path: Path, seed: int) -> None:
    job = write_job(tmp_path, BUDGET_JOB)
    out = tmp_path / "b.jsonl"
    result = cli(
        job,
        "--simulate",
        "--sim",
        f"seed={seed}",
        "--sim",
        "cost_noise=0.08",
        "--sim",
        "jitter_ms=3",
        "--sim",
        "latency_ms=3",
        "--budget",
        "0.005",
        "-o",
        out,
        "-q",
    )
    assert result.returncode == ExitCode.BUDGET, result.stderr
    rows = read_rows(out)
    spent = sum(r["cost"] or 0 for r in rows)
    assert 0.0025 < spent <= 0.005
    assert len(rows) == 200 and {r["reason"] for r in rows if r["status"] == "skipped"} == {"budget"}
    assert (
        "stopped: budget" in result.stderr
        and f"left; --resume -o {out} goes on with a larger budget: " in result.stderr
    )


@pytest.mark.parametrize("edit", ["answered rows removed", "spend zeroed", "spend zeroed, rewritten longer"])
def test_records_removed_after_a_budget_stop_do_not_give_their_spend_back(
    tmp_path: Path, sim: Simulator, edit: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break44 F4: the rows removed from the file (or their `spent` zeroed) between a budget stop
    # and --resume took their spend with them: the resume spent the budget again, 1.84x billed,
    # without a word, though the summary beside the file said what was spent and the file's size.
    monkeypatch.setenv("OPENROUTER_API_KEY", FAKE_KEY)
    job, out = write_job(tmp_path, BUDGET_JOB), tmp_path / "b.jsonl"
    args = (job, "--base-url", sim.base_url, "--budget", "0.005", "-o", out, "-q")
    assert call_cli(*args)[0] == ExitCode.BUDGET
    billed = sim.stats.billed_usd
    first_spent = json.loads((tmp_path / "b.summary.json").read_text())["spent_usd"]
    assert first_spent >= billed - 1e-12
    lines = out.read_text().splitlines(keepends=True)
    if edit == "spend zeroed":
        kept = [re.sub(r'"spent":[0-9.e-]+', '"spent":0', line) for line in lines]
    elif edit == "spend zeroed, rewritten longer":  # verify47 N4: the floor took only a shorter file
        kept = [json.dumps({**json.loads(line), "spent": 0}) + "\n" for line in lines]
    else:
        kept = [line for line in lines if json.loads(line)["status"] != "ok"]
    out.write_text("".join(kept))
    code, _, err = call_cli(*args, "--resume")
    said = "changed after its summary was written" if "longer" in edit else "shorter than its summary saw"
    assert code == ExitCode.BUDGET and said in err, err
    # The resume spends what the first run's summary left of the budget, whatever the file says
    # now (how much that is depends on how many worst cases were in flight at the stop).
    assert sim.stats.billed_usd <= 0.005 + 0.0001 and sim.stats.billed_usd - billed <= 0.005 - first_spent + 1e-9


FREE = "meta-llama/llama-3.3-70b-instruct:free"


def test_a_key_limit_smaller_than_the_budget_binds(tmp_path: Path) -> None:
    job = write_job(tmp_path, BUDGET_JOB)
    out = tmp_path / "k.jsonl"
    result = cli(job, "--simulate", "--sim", "key_limit=0.004", "--budget", "5", "-o", out, "-q")
    assert result.returncode == ExitCode.BUDGET
    rows = read_rows(out)
    assert sum(r["cost"] or 0 for r in rows) <= 0.004
    assert {r["reason"] for r in rows if r["status"] == "skipped"} == {"credits"}
    summary = json.loads((tmp_path / "k.summary.json").read_text())
    assert summary["stop"] == "credits" and summary["budget_usd"] == pytest.approx(0.004)


async def test_the_key_is_re_read_when_others_spend_it(tmp_path: Path, sim: Simulator) -> None:
    sim.account_key.limit = 1.0
    job = load_job(
        write_job(
            tmp_path, BUDGET_JOB.replace("run: {concurrency: 64", "run: {key_refresh_requests: 1, concurrency: 1")
        )
    )
    out = tmp_path / "s.jsonl"

    def another_shard_spends(record: dict[str, Any]) -> None:
        if sim.account_key.usage < 0.99:
            sim.account_key.usage = 0.998  # a CI shard sharing the key drains it mid-run

    report = await run_job(
        job,
        RunOptions(api_key="k", base_url=sim.base_url, output=out, clock=FakeClock()),
        on_record=another_shard_spends,
    )
    assert report.outcome.stop == "credits"
    assert 402 not in sim.stats.by_status  # the re-read /key stopped it, not the server's refusal
    rows = read_rows(out)
    assert sum(r["status"] == "ok" for r in rows) < 100
    assert {r["reason"] for r in rows if r["status"] == "skipped"} == {"credits"}


def test_an_unlimited_key_runs_everything(tmp_path: Path) -> None:
    job = write_job(tmp_path, SMALL_JOB)
    result = cli(job, "--simulate", "-o", tmp_path / "u.jsonl", "-q")
    assert result.returncode == 0
    summary = json.loads((tmp_path / "u.summary.json").read_text())
    # No budget and no per-key limit: only the account's balance (/credits, $100 in the
    # simulator, read with its management key) bounds the run.
    assert summary["budget_usd"] == pytest.approx(100.0) and summary["total"]["ok"] == 20
    assert summary["account_balance_usd"] == pytest.approx(100.0)
    assert summary["estimate_usd"] >= summary["total"]["cost_usd"] > 0


def test_an_unknown_model_is_exit_2_before_any_chat_request(tmp_path: Path, sim: Simulator) -> None:
    job = write_job(tmp_path, SMALL_JOB.replace("google/gemini-2.0-flash-001", "acme/not-a-model"))
    result = cli(job, "--base-url", sim.base_url, "-o", tmp_path / "x.jsonl", env=child_env(OPENROUTER_API_KEY="k"))
    assert result.returncode == ExitCode.USAGE
    assert result.stderr == (
        f"batchrun: {job}: model(s) not offered by the endpoint: acme/not-a-model: "
        "not listed by /models, and GET /model/acme/not-a-model answered 404\n"
    )
    assert sim.stats.chat_requests == 0 and not (tmp_path / "x.jsonl").exists()


def test_router_models_with_unknown_prices_are_refused_under_a_budget(tmp_path: Path) -> None:
    job = write_job(tmp_path, SMALL_JOB.replace("google/gemini-2.0-flash-001", "openrouter/auto"))
    result = cli(job, "--simulate", "--budget", "1", "-o", tmp_path / "x.jsonl")
    assert result.returncode == ExitCode.USAGE and "no known price for openrouter/auto" in result.stderr
    allowed = write_job(
        tmp_path,
        SMALL_JOB.replace("google/gemini-2.0-flash-001", "openrouter/auto").replace(
            "run: {", "run: {allow_unknown_prices: true, "
        ),
        "allowed.yaml",
    )
    result = cli(allowed, "--simulate", "--budget", "1", "-o", tmp_path / "y.jsonl")
    assert result.returncode == 0, result.stderr
    # break33 m5: the summary's worst case left the unknown ones out without a word, as plan does not.
    assert re.search(r"this run: worst case \$[0-9.]+\+\? \(one attempt a row\)", result.stdout), result.stdout
    summary = json.loads((tmp_path / "y.summary.json").read_text())
    assert summary["estimate_unknown"] == ["openrouter/auto"]


def test_an_endpoint_without_key_or_models_runs_with_a_notice(tmp_path: Path) -> None:
    job = write_job(tmp_path, SMALL_JOB)
    result = cli(job, "--simulate", "--sim", "account_api=false", "-o", tmp_path / "n.jsonl")
    assert result.returncode == 0
    assert "has no /models or /key: credit-limit features are off for this run" in result.stderr
    assert len(read_rows(tmp_path / "n.jsonl")) == 20


def test_plan_prices_the_worst_case_never_below_the_actual(tmp_path: Path) -> None:
    job = write_job(tmp_path, BUDGET_JOB)
    code, text, err = call_cli("plan", job, "--simulate", "--budget", "0.5")
    assert code == 0, err
    assert "job spend: 200 request(s)" in text and "anthropic/claude-3.5-haiku" in text
    worst = float(text.split("TOTAL")[1].split()[1])
    assert "budget: $0.500000 -> worst case fits" in text
    # break33 M2: "fits" is one attempt a row; retries of billed attempts come on top, said so.
    assert "worst case: one attempt a row; a retry of an attempt that may have been billed" in text
    # limit_remaining null means no limit on this key, not unlimited money (openapi /key).
    assert "key sk-or-v1-sim...acct: no per-key limit" in text and "unlimited" not in text
    assert "account balance (/credits): $100.000000 -> worst case fits" in text
    out = tmp_path / "p.jsonl"
    assert cli(job, "--simulate", "-o", out, "-q", "--sim", "cost_noise=0.08").returncode == 0
    assert sum(r["cost"] for r in read_rows(out)) <= worst


def test_plan_warns_without_max_tokens_and_reads_the_previous_run(tmp_path: Path, sim: Simulator) -> None:
    write_job(tmp_path, SMALL_JOB.replace("  params: {max_tokens: 32}\n", "  params: {temperature: 0}\n"))
    env = child_env(OPENROUTER_API_KEY="k")
    assert cli("job.yaml", "--base-url", sim.base_url, "-q", cwd=tmp_path, env=env).returncode == 0
    result = cli("plan", "job.yaml", "--base-url", sim.base_url, cwd=tmp_path, env=env)
    assert result.returncode == 0
    assert "warning: openai/gpt-4o-mini has requests without max_tokens" in result.stdout
    assert "previous run: outputs/small/" in result.stdout
    # A simulated run's made-up costs are no "previous average" for a real plan; a simulated
    # plan's is the simulated run's, not the real one's (break68 F9: it showed none at all).
    assert cli("job.yaml", "--simulate", "-q", cwd=tmp_path).returncode == 0
    simulated = cli("plan", "job.yaml", "--simulate", cwd=tmp_path)
    shown = [line for line in simulated.stdout.splitlines() if line.startswith("previous run:")]
    assert (
        simulated.returncode == 0
        and shown
        and shown != [line for line in result.stdout.splitlines() if line.startswith("previous run:")]
    )
    real = cli("plan", "job.yaml", "--base-url", sim.base_url, cwd=tmp_path, env=env)
    previous = [line for line in result.stdout.splitlines() if line.startswith("previous run:")]
    assert previous and previous == [line for line in real.stdout.splitlines() if line.startswith("previous run:")]
    free = write_job(
        tmp_path,
        SMALL_JOB.replace("google/gemini-2.0-flash-001", "meta-llama/llama-3.3-70b-instruct:free"),
        "free.yaml",
    )
    result = cli("plan", free, "--simulate", "--sim", "free_daily_cap=5", cwd=tmp_path)
    # /key documents no count of free requests left today (limits.mdx): the plan says
    # what is needed and that the pool is shared, and invents nothing.
    assert "free-model requests needed: 10, all against the account's daily cap" in result.stdout
    assert "remaining 5" not in result.stdout and ":free requests are more than" not in result.stdout
    # out-104 F7: the documented caps (limits.mdx: 50 a day on a free tier, else 1,000) were never compared.
    many = SMALL_JOB.replace("repeat: 2", "repeat: 220").replace("google/gemini-2.0-flash-001", FREE)
    result = cli("plan", write_job(tmp_path, many, "many.yaml"), "--simulate", cwd=tmp_path)
    said = "warning: 1100 :free requests are more than the 1,000 a day an account may send: those past it are not sent"
    assert said in result.stdout, result.stdout
    # out-105 F4: a :free grader draws on the same cap: 500 rows and 600 grader requests are 1,100.
    graded = judged_small_job().replace("repeat: 2", "repeat: 100").replace("openai/gpt-4o-mini}", FREE + "}")
    graded = graded.replace("google/gemini-2.0-flash-001", FREE)
    result = cli("plan", write_job(tmp_path, graded, "graded.yaml"), "--simulate", cwd=tmp_path)
    assert said in result.stdout, result.stdout


def test_plans_previous_average_counts_the_grading_too(tmp_path: Path, sim: Simulator) -> None:
    # break23 F8: the previous run's judging was left out of "prev. avg $" (its TOTAL 15x low).
    write_job(tmp_path, judged_small_job())
    env = child_env(OPENROUTER_API_KEY="k")
    assert cli("job.yaml", "--base-url", sim.base_url, "-q", cwd=tmp_path, env=env).returncode == 0
    [results] = (tmp_path / "outputs" / "small").glob("*.jsonl")
    rows = read_rows(results)
    spent = sum(r["cost"] + (r.get("judge_cost") or 0.0) for r in rows)
    assert sum(r.get("judge_cost") or 0.0 for r in rows) > 0
    result = cli("plan", "job.yaml", "--base-url", sim.base_url, cwd=tmp_path, env=env)
    total = next(line for line in result.stdout.splitlines() if line.startswith("TOTAL")).split()
    assert float(total[-1]) == pytest.approx(spent, abs=1e-6)  # printed to 6 places; the same rows again
    assert "(prev. avg: its rows' cost, their grading included)" in result.stdout


def test_a_simulated_plan_shows_the_previous_simulated_runs_average_of_the_same_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break68 F9: "prev. avg $ -" for ever on the simulator: each run recorded its random port.
    monkeypatch.chdir(tmp_path)
    write_job(tmp_path, SMALL_JOB)
    job = tmp_path / "job.yaml"
    assert call_cli(job, "--simulate", "-q", "-o", tmp_path / "outputs" / "small" / "a.jsonl")[0] == 0
    summary = json.loads((tmp_path / "outputs" / "small" / "a.summary.json").read_text())
    assert summary["endpoint"] == "simulator"
    rows = read_rows(tmp_path / "outputs" / "small" / "a.jsonl")
    mini = [r["cost"] for r in rows if r["model"] == "openai/gpt-4o-mini"]
    code, text, _ = call_cli("plan", job, "--simulate")
    line = next(line for line in text.splitlines() if line.startswith("openai/gpt-4o-mini")).split()
    assert code == 0 and float(line[-1]) == pytest.approx(sum(mini), abs=1e-6)  # the mean, for as many rows
    # Other --sim settings are another simulator: its made-up prices are not this one's.
    code, text, _ = call_cli("plan", job, "--simulate", "--sim", "accuracy.openai/gpt-4o-mini=0")
    assert next(line for line in text.splitlines() if line.startswith("openai/gpt-4o-mini")).split()[-1] == "-"


def _previous_run(tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch, **edit: Any) -> list[Any]:
    """SMALL_JOB run once into its default output, then every row of its first model but the
    first edited with `edit`; the working folder is the job's. Returns the rows as written."""
    write_job(tmp_path, SMALL_JOB)
    env = child_env(OPENROUTER_API_KEY="k")
    assert cli("job.yaml", "--base-url", sim.base_url, "-q", cwd=tmp_path, env=env).returncode == 0
    [results] = (tmp_path / "outputs" / "small").glob("*.jsonl")
    rows = read_rows(results)
    for row in [r for r in rows if r["model"] == rows[0]["model"]][1:]:
        row.update(edit)
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.chdir(tmp_path)
    return rows


def test_plans_previous_average_never_shows_an_unknown_cost_as_zero(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break-14b M10: rows of unknown cost were averaged in as $0, with no mark.
    rows = _previous_run(tmp_path, sim, monkeypatch, cost=None, cost_status="unknown")
    model = rows[0]["model"]
    mine = [r for r in rows if r["model"] == model]
    _, averages, unknown = previous_average(load_job(tmp_path / "job.yaml"), sim.base_url)
    assert unknown == ({model} if len(mine) > 1 else set())
    assert averages[model] == pytest.approx(mine[0]["cost"])  # the known row's, not diluted by $0s
    assert all(averages[m] > 0 for m in {r["model"] for r in rows})


def test_plans_previous_average_marks_a_run_whose_key_was_charged_beyond_its_records(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break47 F3: answers that said $0 while the key was charged (the summary's key_gap_usd):
    # "prev. avg $" showed 0.000000, unmarked.
    rows = _previous_run(tmp_path, sim, monkeypatch)
    [results] = (tmp_path / "outputs" / "small").glob("*.jsonl")
    summary = results.with_name(results.stem + ".summary.json")
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "key_gap_usd": 0.0016}))
    _, _, unknown = previous_average(load_job(tmp_path / "job.yaml"), sim.base_url)
    assert unknown == {r["model"] for r in rows}


def test_plans_previous_average_leaves_cache_hits_out(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break33 m4: after a run answered from the cache, "prev. avg" was $0 for every model.
    rows = _previous_run(tmp_path, sim, monkeypatch, cost=0.0, cached=True)  # as a hit records it
    model = rows[0]["model"]
    _, averages, _ = previous_average(load_job(tmp_path / "job.yaml"), sim.base_url)
    assert averages[model] == pytest.approx(rows[0]["cost"])  # the row sent, not diluted by the hits' $0


def test_a_grader_no_request_of_which_fits_the_budget_is_said_and_plan_exits_5(tmp_path: Path) -> None:
    # out-146 F3: plan exit 0; the run answered the rows, sent no grader, every judge check
    # undecided, exit 5. The least a grader request needs is with the shortest answer: the run
    # reserves for the answer it got.
    text = (
        "name: g\njudge: {model: anthropic/claude-3.5-haiku, params: {max_tokens: 300}}\n"
        "models: [openai/gpt-4o-mini]\ndefaults: {params: {max_tokens: 64}}\nprompts:\n"
        '  - {id: p, text: "Sum {{a}}.", vars: [{a: 1}, {a: 2}], checks: [{judge: "It is right."}]}\n'
        "run: {budget_usd: 0.001}\n"
    )
    job = write_job(tmp_path, text)
    said = "warning: no grading request of anthropic/claude-3.5-haiku fits the budget: the cheapest needs up to $0.0043"
    code, out, err = call_cli("plan", job, "--simulate")
    assert code == ExitCode.BUDGET and said in out, out
    assert err == "batchrun: the run would stop, exit 5: no request of 1 model(s) or grader(s) fits what it may spend\n"
    code, _, err = call_cli(job, "--simulate", "-q", "-o", tmp_path / "r.jsonl")
    assert code == ExitCode.BUDGET and err.startswith(f"batchrun: {said}"), err  # before anything is sent
    job.write_text(text.replace("budget_usd: 0.001", "budget_usd: 0.0045"))  # one fits: the run may grade them
    code, out, _ = call_cli("plan", job, "--simulate")
    assert code == ExitCode.OK and "no grading request" not in out


def test_a_batch_too_dear_is_said_of_the_rows_the_cache_leaves(tmp_path: Path) -> None:
    # out-146 F5: the two cached rows, at $0, were averaged into the batch of the other two: it
    # looked as if it fitted, and the run sent nothing of the model.
    def job(rows: str, name: str) -> Path:
        text = (
            "name: f5\ndefaults: {params: {max_tokens: 64}}\nmodels: [anthropic/claude-3.5-haiku]\nprompts:\n"
            f'  - {{id: p, text: "Sum {{{{a}}}}.", vars: [{rows}]}}\n'
            "run: {budget_usd: 0.001, batch_max_requests: 2}\n"
        )
        return write_job(tmp_path, text, name)

    cache = f"--cache={tmp_path / 'cache'}"
    assert call_cli(job("{a: 1}, {a: 2}", "warm.yaml"), "--simulate", cache, "-q", "-o", tmp_path / "w.jsonl")[0] == 0
    code, out, _ = call_cli(
        "plan", job("{a: 1}, {a: 2}, {a: 3}, {a: 4}", "job.yaml"), "--simulate", "--mode", "batch", cache
    )
    assert code == ExitCode.OK and "cache: 2 row(s) answered from it for free" in out, out
    assert "warning: no batch of anthropic/claude-3.5-haiku fits the budget: its 2 request(s) need up to $0.0014" in out


def test_a_batch_too_dear_is_said_of_the_rows_a_batch_would_hold_not_those_sent_in_sync(tmp_path: Path) -> None:
    # out-148 F1: the picture's row, sent in sync mode, was priced into "the batch": "no batch
    # fits, its 4 request(s) need up to $0.161", and the run submitted the 3 text rows, $0.012.
    image = (  # an 8x8 PNG
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAADElEQVR4nGNgGB4AAADIAAGtQHYiAAAAAElFTkSuQmCC"
    )
    text = (
        "name: pic\ndefaults: {params: {max_tokens: 100}}\nmodels: [openai/gpt-4o-mini]\nprompts:\n"
        '  - {id: capital, text: "Capital of {{c}}?", vars: [{c: France}, {c: Japan}, {c: Italy}]}\n'
        "  - id: pic\n    messages:\n      - role: user\n        content:\n"
        '          - {type: text, text: "Describe."}\n'
        f'          - {{type: image_url, image_url: {{url: "{image}"}}}}\n'
        "run: {mode: batch, batch_multimodal: sync}\n"
    )
    job = write_job(tmp_path, text)
    code, out, _ = call_cli("plan", job, "--simulate", "--sim", "price.openai/gpt-4o-mini=10,10", "--budget", "0.05")
    assert code == ExitCode.OK and "no batch of" not in out and "EXCEEDS" in out, out
    code, out, _ = call_cli("plan", job, "--simulate", "--sim", "price.openai/gpt-4o-mini=10,10", "--budget", "0.01")
    assert "warning: no batch of openai/gpt-4o-mini fits the budget: its 3 request(s) need up to $0.0122" in out, out


def test_rows_skipped_before_anything_was_sent_do_not_carry_their_bodies(tmp_path: Path) -> None:
    # break59 F5: each skipped record held its whole request body: 300 KB of input wrote 1 GB when
    # a budget too small for any row stopped the run before one request.
    big = SMALL_JOB.replace("Capital of {{country}}?", "Capital of {{country}}? " + "padding " * 25_000)
    job, out = write_job(tmp_path, big), tmp_path / "b.jsonl"
    code, _, err = call_cli(job, "--simulate", "--budget", "0.0000001", "-o", out, "-q")
    assert code == ExitCode.BUDGET, err
    rows = read_rows(out)
    assert len(rows) == 20 and {r["status"] for r in rows} == {"skipped"}
    assert not [r for r in rows if "request" in r] and out.stat().st_size < 40_000


def test_plan_takes_the_margin_off_as_the_run_does_and_a_margin_that_leaves_nothing_is_refused(tmp_path: Path) -> None:
    # break65 F1: `plan` said "worst case fits" for a budget its budget_margin_usd left nothing
    # of; the run then sent nothing, exit 5, "resumable once there is money", which none fixed.
    text = 'name: m\nmodels: [openai/gpt-4o-mini]\nprompts: [{id: p, text: "hi"}]\n'
    text += "run: {budget_usd: 1.0, budget_margin_usd: %s}\n"
    job = write_job(tmp_path, text % "0.99999")
    code, out, _ = call_cli("plan", job, "--simulate")
    assert (
        code == ExitCode.BUDGET
        and "budget: $1.000000 (less budget_margin_usd $0.999990: $0.000010) -> worst case EXCEEDS it" in out
    )
    job.write_text(text % "1.0")
    code, _, err = call_cli("validate", job)
    assert (
        code == ExitCode.USAGE and "job.yaml:4:" in err and "budget_margin_usd 1 leaves nothing of budget_usd 1" in err
    )


def test_a_budget_given_on_the_command_line_that_its_margin_leaves_nothing_of_is_refused(tmp_path: Path) -> None:
    # verify67 F3: `--budget 0.3` beside `budget_margin_usd: 0.5`: plan said EXCEEDS and exited 0,
    # and the run exited 5 having sent nothing, as did every resume.
    text = 'name: m\nmodels: [openai/gpt-4o-mini]\nprompts: [{id: p, text: "hi"}]\nrun: {budget_margin_usd: 0.5}\n'
    job = write_job(tmp_path, text)
    runs: list[list[str | Path]] = [
        ["plan", job, "--simulate", "--budget", "0.3"],
        [job, "--simulate", "--budget", "0.3"],
    ]
    for args in runs:
        code, _, err = call_cli(*args)
        assert code == ExitCode.USAGE and "--budget 0.3 leaves nothing after run.budget_margin_usd 0.5" in err, err
    assert call_cli(job, "--simulate", "--budget", "0.6", "-q", "-o", tmp_path / "r.jsonl")[0] == 0


def test_a_model_no_request_of_which_fits_the_budget_is_said_before_anything_is_spent(tmp_path: Path) -> None:
    # out-102 F9: each request of one model (no max_tokens) needed more than the whole budget: `plan`
    # said only "EXCEEDS", exit 0; the run spent on the other model, then exit 5 "resumable once
    # there is money", which --budget cannot give.
    job = write_job(
        tmp_path,
        'name: t\nmodels: [openai/gpt-4o-mini, anthropic/claude-3.5-haiku]\nprompts:\n  - id: p\n    text: "Capital '
        'of {{c}}?"\n    vars: [{c: France}, {c: Japan}]\nrun: {budget_usd: 0.1}\n',
    )
    said = "warning: no request of anthropic/claude-3.5-haiku fits the budget: the cheapest needs up to $0.14"
    code, out, err = call_cli("plan", job, "--simulate")
    assert code == ExitCode.BUDGET and said in out and "openai/gpt-4o-mini fits" not in out
    assert err == "batchrun: the run would stop, exit 5: no request of 1 model(s) or grader(s) fits what it may spend\n"
    code, _, err = call_cli(job, "--simulate", "-q", "-o", tmp_path / "r.jsonl")
    assert code == ExitCode.BUDGET and err.startswith(f"batchrun: {said}")  # under --quiet too: first
    assert "no request of openai/gpt-4o-mini" not in err and "(set params.max_tokens, or raise" in err
    # out-103 F6: plan compares what the run may spend (less budget_margin_usd), as the run does;
    # the advice names max_tokens only where it is missing; batch mode: a batch is all or nothing.
    capped = job.read_text().replace(
        "run: {budget_usd: 0.1}",
        "defaults: {params: {max_tokens: 64}}\nrun: {budget_usd: 0.0005, budget_margin_usd: 0.0003}",
    )
    job.write_text(capped)
    code, out, _ = call_cli("plan", job, "--simulate")
    assert "no request of anthropic/claude-3.5-haiku fits the budget" in out and "$0.000200 is all there is" in out
    raise_budget = "raise the budget: run.budget_usd or --budget, whichever is the smaller (it binds)"
    assert f"({raise_budget})" in out and "max_tokens, or" not in out
    # out-116 F4: a --budget above the job's own does not bind, and says so.
    code, _, err = call_cli(job, "--simulate", "-q", "-o", tmp_path / "a.jsonl", "--budget", "0.01")
    assert code == ExitCode.BUDGET and "--budget 0.01 is above the job's run.budget_usd 0.0005: the smaller" in err
    # And a re-grading's: `report --job --budget` takes the smaller too.
    code, _, err = call_cli("report", tmp_path / "a.jsonl", "--job", job, "--simulate", "--budget", "0.01")
    assert "warning: --budget 0.01 is above the job's run.budget_usd 0.0005: the smaller" in err, err
    # out-115 F1: with no run.budget_usd, --budget is the budget, and a larger one is the way on;
    # out-116 F4: so is one smaller than the job's that binds.
    for job_budget in ("", "budget_usd: 1, "):
        job.write_text(capped.replace("budget_usd: 0.0005, ", job_budget))
        results = tmp_path / f"b{len(job_budget)}.jsonl"
        code, _, err = call_cli(job, "--simulate", "-q", "-o", results, "--budget", "0.0005")
        assert code == ExitCode.BUDGET and f"$0.000200 is all there is ({raise_budget})" in err
        code, _, err = call_cli(job, "--simulate", "-q", "-o", results, "--budget", "0.01", "--resume")
        assert code == ExitCode.OK and "is above the job's" not in err, err
    # The key's credit binding, no budget helps: it says what does; and both, when both are short.
    code, _, err = call_cli(job, "--simulate", "-q", "-o", tmp_path / "k.jsonl", "--sim", "key_limit=0.0005")
    assert code == ExitCode.BUDGET and "(add credits, or raise the key's limit: they bind, not the budget)" in err
    code, out, _ = call_cli("plan", job, "--simulate", "--sim", "key_limit=0.0005")  # the plan says so too
    assert code == ExitCode.BUDGET and "(add credits, or raise the key's limit: they bind, not the budget)" in out
    code, out, _ = call_cli("plan", job, "--simulate", "--budget", "0.0012")  # each request fits: exit 0, as
    assert code == ExitCode.OK and "-> worst case EXCEEDS it" in out  # the run may well end within it
    argv = (job, "--simulate", "-q", "-o", tmp_path / "kb.jsonl", "--sim", "key_limit=0.0004", "--budget", "0.0005")
    code, _, err = call_cli(*argv)
    assert code == ExitCode.BUDGET and f"(add credits, or raise the key's limit, and {raise_budget})" in err
    job.write_text(capped.replace("budget_usd: 0.0005, budget_margin_usd: 0.0003}", "budget_usd: 0.001, mode: batch}"))
    code, out, _ = call_cli("plan", job, "--simulate")
    assert "warning: no batch of anthropic/claude-3.5-haiku fits the budget: its 2 request(s) need up to $" in out, out
    assert code == ExitCode.OK  # which rows go by batch is the run's to sort (out-146 F4: image rows go in sync)


def test_a_run_held_by_its_credit_not_a_budget_says_credit(tmp_path: Path) -> None:
    # out-152 F7: with no budget, the account's balance was shown as "budget left for this run".
    job = write_job(tmp_path, SMALL_JOB)
    code, text, err = call_cli(job, "--simulate", "--sim", "account_credits=7", "-o", tmp_path / "a.jsonl")
    assert code == ExitCode.OK, err
    assert "credit (the key's limit or the account's balance) left for this run: spent $" in text
    assert "of $7.000000" in text and "budget left" not in text
    assert json.loads((tmp_path / "a.summary.json").read_text())["budget_from"] == "credits"
    code, text, err = call_cli(job, "--simulate", "--budget", "1", "-o", tmp_path / "b.jsonl")
    assert code == ExitCode.OK and "budget left for this run: spent $" in text, err
    # No limit at all (an endpoint without /key, /models nor /credits): neither (out-153 F5).
    code, _, err = call_cli(job, "--simulate", "--sim", "account_api=false", "-o", tmp_path / "c.jsonl")
    summary = json.loads((tmp_path / "c.summary.json").read_text())
    assert summary["budget_usd"] is None and summary["budget_from"] is None, err


def test_the_page_of_a_resumed_file_sets_the_last_runs_spend_against_its_budget(tmp_path: Path) -> None:
    # out-158 F1: the page divided all runs' spend by the last run's budget (what the runs before
    # it left): "Spend $0.000601 of a $0.000349 budget (171.9%)" of a budget 70% spent.
    job, out = write_job(tmp_path, BUDGET_JOB.replace("concurrency: 64", "concurrency: 4")), tmp_path / "r.jsonl"
    assert call_cli(job, "--simulate", "-q", "-o", out, "--budget", "0.004")[0] == ExitCode.BUDGET
    assert call_cli(job, "--simulate", "-q", "-o", out, "--resume", "--budget", "0.007")[0] == ExitCode.BUDGET
    summary = json.loads(summary_path(out).read_text())
    last, budget, before = summary["spent_usd"], summary["budget_usd"], summary["spent_before_usd"]
    assert 0 < last <= budget < 0.007 and before > 0.0
    page = tmp_path / "p.html"
    assert call_cli("report", out, "--html", page)[0] == ExitCode.INCOMPLETE  # rows the budget left
    match = re.search(r'<dd id="spend">(.*?)</dd>', page.read_text(), re.S)
    assert match is not None
    said = f"the last run spent ${last:.6f} of its ${budget:.6f} budget ({last / budget * 100:.1f}%)"
    assert said in match[1] and f"the runs before it ${before:.6f}" in match[1], match[1]


def test_plan_says_the_run_stops_at_a_models_first_request_when_only_a_later_one_fits(tmp_path: Path) -> None:
    # out-146 F1: plan tested each model's cheapest request: claude's second row fit, plan exit 0,
    # and the run, whose rows go in order, stopped at claude's dearer first row: none sent, exit 5.
    pad = "x" * 400
    job = write_job(
        tmp_path,
        "name: f1\ndefaults: {params: {max_tokens: 64}}\nmodels: [openai/gpt-4o-mini, anthropic/claude-3.5-haiku]\n"
        'prompts:\n  - id: sum\n    text: "Compute {{a}} + 1. {{pad}}"\n'
        f'    vars: [{{a: 1, pad: "{pad}"}}, {{a: 2, pad: ""}}]\nrun: {{budget_usd: 0.0009}}\n',
    )
    code, out, err = call_cli("plan", job, "--simulate")
    said = "the first request of anthropic/claude-3.5-haiku (rows go in order) needs up to $0.001"
    assert code == ExitCode.BUDGET and said in out, out + err
    code, _, err = call_cli(job, "--simulate", "-q", "-o", tmp_path / "r.jsonl")
    assert code == ExitCode.BUDGET and said in err, err
    first = next(
        r for r in read_rows(tmp_path / "r.jsonl") if r["model"] == "anthropic/claude-3.5-haiku" and r["vars"]["a"] == 1
    )
    assert first["status"] == "skipped"
