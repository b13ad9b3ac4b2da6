"""HTML pages: `report --html` and `history` (text, Markdown, --html), then both pages in Chromium.

The runs are the example job (jobs/eval.yaml) on the simulator: one plain run, one where a
model got worse (lower accuracy), one where the endpoint rejects some requests (HTTP 400).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchrun import ExitCode
from batchrun._exceptions import ResultsError
from batchrun._history import build_history, render_history_text
from batchrun._history_marks import MARKER_DROP, change_markers
from batchrun._output_paths import summary_path
from batchrun._report_data import ROW_CAP
from batchrun._stats import wilson_interval
from batchrun.simulator import SimConfig, Simulator

from .conftest import FAKE_KEY, call_cli, child_env, cli, read_rows

EXAMPLE_JOB = Path(__file__).resolve().parents[1] / "jobs" / "eval.yaml"
WORSE_MODEL = "meta-llama/llama-3.1-8b-instruct"
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# One xdist worker draws every page: it bundles Vega once (seconds of CPU, once per process)
# and builds the module's runs and browser once.
pytestmark = pytest.mark.xdist_group("html")


def _failing(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["status"] == "error" or r.get("passed") is False]


def _run_on(config: SimConfig, out: Path) -> None:
    simulator = Simulator(config)
    with simulator.serve_in_thread():
        result = cli(
            EXAMPLE_JOB, "--base-url", simulator.base_url, "-o", out, "-q", env=child_env(OPENROUTER_API_KEY="k")
        )
    assert result.returncode in (0, 1, 3), result.stderr


@pytest.fixture(scope="module")
def history_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("history")
    result = cli(EXAMPLE_JOB, "--simulate", "-o", folder / "run1.jsonl", "-q")
    assert result.returncode == 0, result.stderr
    worse = SimConfig()
    worse.accuracy[WORSE_MODEL] = 0.1
    _run_on(worse, folder / "run2.jsonl")
    faulty = SimConfig(seed=5)
    faulty.accuracy[WORSE_MODEL] = 0.1
    faulty.faults = {"400": 0.15}
    _run_on(faulty, folder / "run3.jsonl")
    return folder


@pytest.fixture(scope="module")
def hostile_results(tmp_path_factory: pytest.TempPathFactory, history_dir: Path) -> Path:
    """The first run with one answer, its variables and its check reason turned into markup."""
    path = tmp_path_factory.mktemp("hostile") / "hostile.jsonl"
    rows = read_rows(history_dir / "run1.jsonl")
    victim = next(r for r in rows if r.get("passed") is False)
    victim["content"] = HOSTILE
    victim["vars"] = {**victim["vars"], "country": HOSTILE}
    victim["checks"] = [{**c, "reason": HOSTILE} if not c["pass"] else c for c in victim["checks"]]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def _chart_data(page: Path, chart: str) -> list[dict[str, Any]]:
    found = re.search(r'id="chart-specs">(.*?)</script>', page.read_text(), re.S)
    assert found is not None
    rows: list[dict[str, Any]] = json.loads(found.group(1))[chart]["datasets"]["rows"]
    return rows


def test_an_unknown_cost_is_charted_as_what_is_held_for_it_never_as_zero(history_dir: Path, tmp_path: Path) -> None:
    # break25 F5: the cost charts drew an unknown cost as a $0 bar, tooltip $0.000000, beside a
    # table saying "0.000000+? (held $0.000212)".
    rows = read_rows(history_dir / "run1.jsonl")
    for row in rows[:3]:
        row.update(cost=None, cost_status="unknown", cost_unknown=True, cost_held=0.001, cost_known=0.0, spent=0.001)
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    for command, chart, key in (("report", "cost-by-model", "model"), ("history", "history-cost", "run")):
        page = tmp_path / f"{command}.html"
        assert call_cli(command, unknown, "--html", page)[0] == ExitCode.OK
        held = [part for part in _chart_data(page, chart) if part["part"].startswith("held")]
        assert sum(part["usd"] for part in held) == pytest.approx(0.003) and sum(p["unknown_rows"] for p in held) == 3
        billed = {part[key] for part in _chart_data(page, chart) if part["part"] == "billed"}
        assert {part[key] for part in held} <= billed  # beside what was billed, not instead of it


def test_wilson_interval_known_values() -> None:
    low, high = wilson_interval(0, 10) or (None, None)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(10, 10) or (None, None)
    assert high == pytest.approx(1.0) and low == pytest.approx(0.7225, abs=1e-4)
    low, high = wilson_interval(5, 10) or (None, None)  # the textbook 0.237 .. 0.763
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    assert wilson_interval(0, 0) is None


def test_report_html_is_one_self_contained_file(tmp_path: Path, history_dir: Path) -> None:
    results = history_dir / "run1.jsonl"
    page = tmp_path / "report.html"
    code, text, err = call_cli("report", results, "--html", page)
    assert code == 0 and "TOTAL" in text and err == ""
    html = page.read_text(encoding="utf-8")
    assert "<script src" not in html and "<link" not in html and "@import" not in html
    assert "default-src 'none'" in html  # the page's CSP forbids any fetch
    assert 'id="chart-pass-by-model"' in html and 'id="chart-latency-distribution"' in html
    assert html.count('<tr class="kind-') == len(_failing(read_rows(results)))
    assert "exit 0 (ok)" in html and "of a $0.500000 budget" in html
    assert "report without --job: no threshold is gated, only rows never answered (exit 12)" in html
    assert oct(page.stat().st_mode & 0o777) == "0o644"


def test_the_page_without_a_job_says_the_reports_own_verdict(tmp_path: Path, history_dir: Path) -> None:
    # break62 F3: without --job the page decided by default thresholds (no error tolerated): a
    # night with rows in error within the job's tolerance showed "exit 1 (errors)" beside
    # `report` exiting 0 and a green JUnit gate case; three verdicts from one command.
    results = history_dir / "run3.jsonl"  # rows in error (its simulator's 400s)
    assert any(r["status"] == "error" for r in read_rows(results))
    page, junit = tmp_path / "p.html", tmp_path / "j.xml"
    code, _, err = call_cli("report", results, "--html", page, "--junit", junit)
    assert code == ExitCode.OK, err
    html = page.read_text(encoding="utf-8")
    verdict = html.split('id="verdict">')[1].split("</dd>")[0]
    assert verdict.startswith("exit 0 (ok)") and "(errors)" not in verdict.split('id="run-exit"')[0]
    # What the run itself gave is said apart, as its summary keeps it (out-152 F2).
    ran = json.loads(summary_path(results).read_text())
    assert f'id="run-exit">its last run exited {ran["exit_code"]} (' in verdict
    assert 'name="exit code"' in (gate := junit.read_text()) and "<failure" not in gate.split('name="exit code"')[1]


def test_the_page_of_a_partial_merge_is_not_ok(tmp_path: Path, small_job: Path) -> None:
    # break31 m2: a merge of 1 of 2 shards (--allow-partial) made a page saying "exit 0 (ok)".
    shard = tmp_path / "s1.jsonl"
    assert call_cli(small_job, "--simulate", "--shard", "1/2", "-o", shard, "-q")[0] == ExitCode.OK
    merged = tmp_path / "m.jsonl"
    assert call_cli("merge", merged, shard, "--allow-partial")[0] == ExitCode.OK
    page = tmp_path / "m.html"
    assert call_cli("report", merged, "--html", page)[0] == ExitCode.INCOMPLETE  # as the page says (break53 F5)
    html = page.read_text(encoding="utf-8")
    assert "exit 12 (incomplete)" in html and "shard(s) 2 of 2 are missing" in html


def test_report_html_escapes_answers_prompts_and_reasons(tmp_path: Path, hostile_results: Path) -> None:
    page = tmp_path / "hostile.html"
    assert call_cli("report", hostile_results, "--html", page)[0] == 0
    html = page.read_text(encoding="utf-8")
    assert "window.__pwned" in html  # the text is there ...
    assert "<script>window.__pwned" not in html and "<img src=x" not in html  # ... never as markup
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in html


def test_pages_and_junit_never_hold_the_environments_key(tmp_path: Path, history_dir: Path) -> None:
    # break23 F4: a results file that holds the key (edited, or written by another tool) put it
    # whole into both pages, while the terminal, --json and --markdown showed `[key]`.
    rows = read_rows(history_dir / "run1.jsonl")
    victim = next(r for r in rows if r.get("passed") is False)
    victim["content"] = f"the key {FAKE_KEY}"
    victim["vars"] = {**victim["vars"], "country": FAKE_KEY}
    victim["provider"] = FAKE_KEY.upper()  # as a proxy that upper-cases what it echoes
    victim["checks"] = [{**c, "reason": f"because {FAKE_KEY[5:40]}"} if not c["pass"] else c for c in victim["checks"]]
    keyed = tmp_path / "keyed.jsonl"
    keyed.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    env = child_env(OPENROUTER_API_KEY=FAKE_KEY)
    page, history, junit = tmp_path / "r.html", tmp_path / "h.html", tmp_path / "j.xml"
    assert cli("report", keyed, "--html", page, "--junit", junit, env=env).returncode == 0
    assert cli("history", history_dir / "run1.jsonl", keyed, "--html", history, env=env).returncode == 0
    for written in (page, history, junit):
        text = written.read_text(encoding="utf-8")
        assert "[key]" in text, written.name  # the rows are there, masked ...
        assert FAKE_KEY[9:25] not in text.lower() and FAKE_KEY[9:25].upper() not in text, written.name


def test_report_html_with_the_job_gates_and_says_so(tmp_path: Path, history_dir: Path) -> None:
    page = tmp_path / "r3.html"
    code, _, err = call_cli("report", history_dir / "run3.jsonl", "--job", EXAMPLE_JOB, "--html", page)
    assert code == 1 and "ended in error" in err
    html = page.read_text(encoding="utf-8")
    assert "exit 1 (errors)" in html and "by the job&#39;s thresholds" in html


def _big_results(path: Path, rows: int) -> Path:
    """`rows` records over 5 models and 60 prompts; every 7th fails its check."""
    models = [f"vendor/model-{i}" for i in range(5)]
    with path.open("wb") as out:
        for i in range(rows):
            passed = i % 7 != 0
            out.write(
                orjson.dumps(
                    {
                        "id": f"{i:020x}",
                        "status": "ok",
                        "cost": 1e-6,
                        "job": "big",
                        "model": models[i % 5],
                        "prompt_id": f"p{i % 60}",
                        "vars": {"n": i},
                        "content": "answer " * 20,
                        "latency_ms": float(i % 997),
                        "checks": [{"name": "c", "pass": passed, "reason": "" if passed else "wrong", "weight": 1}],
                        "passed": passed,
                        "score": float(passed),
                        "started_at": "2026-11-01T00:00:00Z",
                    }
                )
                + b"\n"
            )
    return path


def test_report_html_of_many_rows_is_capped_and_says_so(tmp_path: Path) -> None:
    # Twice the rows, the same page: what grows with the run is aggregated or capped. (Both
    # runs have more failing rows than the cap; 100k rows took most of a minute and showed
    # nothing more: the page's size is measured against a run of half the size instead.)
    pages = []
    for rows, failing in ((7_700, "1,100"), (15_400, "2,200")):
        results = _big_results(tmp_path / f"big-{rows}.jsonl", rows)
        page = tmp_path / f"big-{rows}.html"
        assert call_cli("report", results, "--html", page, "--json")[0] == 0
        html = page.read_text(encoding="utf-8")
        assert html.count('<tr class="kind-') == ROW_CAP
        assert f"Showing the first {ROW_CAP:,} of {failing} failing, undecided and error rows" in html
        # Not `report --json`, which lists 10 of them (out-158 F4).
        assert f"The results file, <code>{results}</code>, has them all" in html and "--json</code>" not in html
        assert "The per-prompt charts show the 40 worst of 60 prompts." in html
        pages.append(html)
    assert len(pages[1]) < 3_000_000  # about the size of a small run's page plus the capped table
    assert abs(len(pages[1]) - len(pages[0])) < 2_000  # figures change, not the amount of data


def test_missing_report_extra_is_one_line_exit_2(tmp_path: Path, history_dir: Path, monkeypatch: Any) -> None:
    monkeypatch.setitem(sys.modules, "vl_convert", None)  # import vl_convert now raises ImportError
    code, out, err = call_cli("report", history_dir / "run1.jsonl", "--html", tmp_path / "x.html")
    assert code == 2 and out == "" and not (tmp_path / "x.html").exists()
    assert err.count("\n") == 1 and "pip install 'batchrun[report]'" in err and "vl_convert" in err


def test_history_orders_runs_and_marks_changes(history_dir: Path) -> None:
    history = build_history([history_dir])
    assert [Path(run["file"]).name for run in history["runs"]] == ["run1.jsonl", "run2.jsonl", "run3.jsonl"]
    kinds = {(Path(m["file"]).name, m["kind"], m["model"]) for m in history["markers"]}
    assert ("run2.jsonl", "failing", WORSE_MODEL) in kinds
    assert not any(m["kind"] == "erroring" for m in history["markers"] if m["file"].endswith("run2.jsonl"))
    assert any(name == "run3.jsonl" and kind == "erroring" for name, kind, _ in kinds)
    before, after = (history["runs"][i]["models"][WORSE_MODEL]["pass_rate"] for i in (0, 1))
    assert before - after >= MARKER_DROP
    # Flips since the previous run, checked against the files themselves.
    two = {r["id"]: r for r in read_rows(history_dir / "run2.jsonl")}
    three = {r["id"]: r for r in read_rows(history_dir / "run3.jsonl")}

    def state(r: dict[str, Any]) -> str:
        return r["status"] if r["status"] != "ok" else "pass" if r["passed"] else "fail"

    expected = sum(1 for i, r in three.items() if state(r) != state(two[i]))
    assert expected > 0 and history["flips"]["total"] == expected == len(history["flips"]["rows"])


def test_runs_that_started_in_the_same_second_are_told_apart(tmp_path: Path, history_dir: Path) -> None:
    # The label keys the change markers, the tables' columns and the charts' points: two runs
    # under one label were counted and drawn as one (a marker lost).
    folder = tmp_path / "runs"
    folder.mkdir()
    for name in ("run1.jsonl", "run2.jsonl", "run3.jsonl"):
        rows = read_rows(history_dir / name)
        for row in rows:
            row["started_at"] = "2026-11-29T10:00:00.250Z"  # all three in one second
        (folder / name).write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    history = build_history([folder])
    labels = [run["label"] for run in history["runs"]]
    assert labels == [f"2026-11-29 10:00:00 (run{k}.jsonl)" for k in (1, 2, 3)]
    assert {m["run"] for m in history["markers"]} == {labels[1], labels[2]}
    text = render_history_text(history)
    assert all(f"change at {label}:" in text for label in labels[1:])


def test_history_of_a_folder_skips_a_crash_journal(tmp_path: Path, history_dir: Path) -> None:
    # break14c N19: X.attempts.jsonl, left beside X.jsonl by a kill -9, made `history DIR` exit 2.
    folder = tmp_path / "runs"
    folder.mkdir()
    for name in ("run1.jsonl", "run2.jsonl"):
        (folder / name).write_bytes((history_dir / name).read_bytes())
    journal = b'{"row": "r1", "usd": 0.02, "sent_at": "2026-11-29T01:00:00.000Z"}\n'
    (folder / "run2.attempts.jsonl").write_bytes(journal)
    history = build_history([folder])
    assert [Path(run["file"]).name for run in history["runs"]] == ["run1.jsonl", "run2.jsonl"]


def test_history_of_a_folder_leaves_out_a_stray_file_and_says_so(tmp_path: Path, history_dir: Path) -> None:
    # break23: one stray `x.jsonl` (not a results file) ended the whole history, exit 2.
    folder = tmp_path / "runs"
    folder.mkdir()
    for name in ("run1.jsonl", "run2.jsonl"):
        (folder / name).write_bytes((history_dir / name).read_bytes())
    (folder / "x.jsonl").write_bytes(b"\x00\x01 not a results file\n")
    warnings: list[str] = []
    history = build_history([folder], warnings.append)
    assert [Path(run["file"]).name for run in history["runs"]] == ["run1.jsonl", "run2.jsonl"]
    assert any("x.jsonl" in w and w.endswith(": left out of the history") for w in warnings), warnings
    with pytest.raises(ResultsError):  # named on its own, it is still an error
        build_history([folder / "run1.jsonl", folder / "x.jsonl"])


def test_history_says_when_a_model_lost_its_verdicts(tmp_path: Path, history_dir: Path) -> None:
    # break23: 100% -> "-" (every row undecided) was no change, and a pass that lost its
    # verdict flipped "pass -> ok".
    folder = tmp_path / "runs"
    folder.mkdir()
    rows = read_rows(history_dir / "run1.jsonl")
    earlier = [{**r, "started_at": "2020-01-01T00:00:00.000Z"} for r in rows]
    (folder / "a.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in earlier))
    model = rows[0]["model"]
    for row in rows:
        if row["model"] == model and row["status"] == "ok":
            row["passed"] = None
            row.pop("score", None)
            row["checks"] = [{**c, "pass": None, "error": "grader g: down"} for c in row["checks"]]
    (folder / "b.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    history = build_history([folder])
    assert any(m["kind"] == "ungraded" and m["model"] == model for m in history["markers"])
    flipped = {row["before"] + " -> " + row["after"] for row in history["flips"]["rows"]}
    assert "pass -> undecided" in flipped and "pass -> ok" not in flipped
    assert all("grader g: down" in row["why"] for row in history["flips"]["rows"] if row["after"] == "undecided")


def test_a_run_stamped_ahead_of_now_is_the_oldest_in_the_history(tmp_path: Path, history_dir: Path) -> None:
    # break62 F7: a night stamped 2030 by a fast clock was "the latest run" for ever: every later
    # night's changes and flips were measured against it, and a real recovery never shown.
    folder = tmp_path / "runs"
    folder.mkdir()
    fast = [{**r, "started_at": "2099-01-01T00:00:00.000Z"} for r in read_rows(history_dir / "run1.jsonl")]
    (folder / "fast.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in fast))
    for name in ("run1", "run2"):  # a night, then a worse one
        shutil.copy(history_dir / f"{name}.jsonl", folder / f"{name}.jsonl")
    said: list[str] = []
    history = build_history([folder], said.append)
    assert [Path(run["file"]).name for run in history["runs"]] == ["fast.jsonl", "run1.jsonl", "run2.jsonl"]
    assert said == [
        f"{folder / 'fast.jsonl'}: its rows are stamped 2099-01-01 00:00:00, ahead of this machine's clock: "
        "shown as the oldest"
    ]
    # The last two nights are compared, not a real one against the one from the future.
    assert (history["flips"]["before"], history["flips"]["after"]) == tuple(r["label"] for r in history["runs"][1:])
    assert history["flips"]["total"] > 0


def test_history_merged_shards_count_as_one_run(tmp_path: Path, history_dir: Path) -> None:
    folder = tmp_path / "runs"
    folder.mkdir()
    for k in (1, 2):
        shard = folder / f"shard{k}.jsonl"
        assert cli(EXAMPLE_JOB, "--simulate", "--shard", f"{k}/2", "-o", shard, "-q").returncode == 0
    assert call_cli("merge", folder / "nightly.jsonl", folder / "shard1.jsonl", folder / "shard2.jsonl")[0] == 0
    shutil.copy(history_dir / "run1.jsonl", folder / "earlier.jsonl")
    history = build_history([folder])
    assert [Path(r["file"]).name for r in history["runs"]] == ["earlier.jsonl", "nightly.jsonl"]
    assert history["runs"][1]["rows"] == 105


def test_history_markdown_and_step_summary(tmp_path: Path, history_dir: Path, monkeypatch: Any) -> None:
    step = tmp_path / "step.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    code, text, _ = call_cli("history", history_dir, "--markdown")
    assert code == 0 and text.startswith("### batchrun history: nightly-eval")
    assert "| run (UTC) | rows | pass | errors | skipped | cost \\$ | p95 ms | changes |" in text
    assert f"{WORSE_MODEL} pass rate fell" in text and "started erroring" in text
    assert "since the previous run" in text and "| change | model | prompt | variables | why |" in text
    assert step.read_text(encoding="utf-8") == text + "\n"
    # break42 F7: a night with rows never answered read "no row changed state", 0 errors.
    folder = tmp_path / "nights"
    folder.mkdir()
    rows = read_rows(history_dir / "run1.jsonl")
    (folder / "a.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    cut = [{**r, "status": "skipped", "reason": "budget"} if r["model"] == WORSE_MODEL else r for r in rows]
    (folder / "b.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in cut))
    skipped = sum(1 for r in cut if r["status"] == "skipped")
    code, text, _ = call_cli("history", folder / "a.jsonl", folder / "b.jsonl", "--markdown")
    assert code == 0 and f"| 0.0% | {skipped} |" in text
    assert f"; {skipped} row(s) of the last run never answered (skipped)" in text


def test_history_of_other_jobs_or_no_runs_is_one_line_exit_2(tmp_path: Path, history_dir: Path) -> None:
    other = tmp_path / "other.jsonl"
    rows = read_rows(history_dir / "run1.jsonl")[:3]
    other.write_text("".join(json.dumps({**r, "job": "another"}) + "\n" for r in rows))
    code, _, err = call_cli("history", history_dir / "run1.jsonl", other)
    assert code == 2 and "different jobs" in err and err.count("\n") == 1
    assert f"another ({other})" in err  # the file to move away, not the jobs alone (break33 m7)
    code, _, err = call_cli("history", tmp_path / "empty-folder-that-is-missing")
    assert code == 2 and "no such results file or folder" in err
    # verify63 F9: the last good page stood beside a history that failed, read as today's.
    page, mine = tmp_path / "history.html", tmp_path / "mine.html"
    made = call_cli("history", history_dir, "--html", page)
    assert made[0] == 0 and "vega" in page.read_text(), made
    mine.write_text("<html>a page of the user's own</html>")
    code, _, err = call_cli("history", history_dir / "run1.jsonl", other, "--html", page)
    assert code == 2 and "different jobs" in err and err.count("\n") == 1
    # A page of another's is not written over, whatever the inputs hold (out-125 F5).
    code, _, err = call_cli("history", history_dir / "run1.jsonl", other, "--html", mine)
    assert code == 2 and f"{mine}: neither empty nor a page batchrun made" in err and err.count("\n") == 1
    now = page.read_text()
    assert "No history: " in now and "different jobs" in now and "vega" not in now
    assert mine.read_text() == "<html>a page of the user's own</html>"


# -- in a real browser ---------------------------------------------------------------------------
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium): the pages are not opened in a browser")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a fresh user-data-dir
            executable_path=os.path.realpath(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
        )
        try:
            yield context
        finally:
            context.close()


def _open(browser: Any, page_file: Path) -> tuple[Any, list[str]]:
    """Open a page; return it and every console error, page error and network request it made."""
    problems: list[str] = []
    page = browser.new_page()
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: None if r.url.startswith("file:") else problems.append(f"request: {r.url}"))
    page.goto(page_file.as_uri())
    page.wait_for_selector("body[data-charts-drawn]", timeout=15_000)
    return page, problems


def _drawn_charts(page: Any) -> dict[str, int]:
    """Chart id -> the number of data marks (bars, lines, points, rules, labels) drawn in its Vega view;
    axes, grids and legends are other roles and do not count."""
    counts: dict[str, int] = page.eval_on_selector_all(
        ".vega",
        "els => Object.fromEntries(els.map(e => [e.dataset.chart, "
        "e.querySelectorAll('svg .role-mark path, svg .role-mark line, svg .role-mark text').length]))",
    )
    return counts


# The pages' fixtures come before `browser` in each signature: Playwright's sync API leaves its
# event loop marked running in this thread, so a fixture that runs the CLI (asyncio.run) after
# it fails ("asyncio.run() cannot be called from a running event loop") when a worker happens
# to reach a browser test first.
def test_report_page_in_chromium(hostile_results: Path, tmp_path: Path, browser: Any) -> None:
    page_file = tmp_path / "report.html"
    assert call_cli("report", hostile_results, "--html", page_file)[0] == 0
    page, problems = _open(browser, page_file)
    charts = _drawn_charts(page)
    assert page.get_attribute("body", "data-charts-drawn") == str(len(charts)) == "7"
    assert all(marks > 0 for marks in charts.values()), charts
    failing = _failing(read_rows(hostile_results))
    assert page.locator("#failing tbody tr").count() == len(failing)
    # The hostile answer is text in its cell, and none of it ran.
    assert page.evaluate("window.__pwned") is None
    assert HOSTILE in page.locator("#failing .answer").all_inner_texts()
    # The filters: one model, then a search word.
    page.select_option(".filter-model", WORSE_MODEL)
    visible = page.locator("#failing tbody tr:not([hidden])")
    assert visible.count() == sum(1 for r in failing if r["model"] == WORSE_MODEL) > 0
    page.fill(".filter-search", "no-such-word-anywhere")
    assert visible.count() == 0 and "0 of" in page.inner_text(".filter-count")
    assert problems == []
    page.close()


def test_history_page_in_chromium(history_dir: Path, tmp_path: Path, browser: Any) -> None:
    page_file = tmp_path / "history.html"
    code, _, _ = call_cli("history", history_dir, "--html", page_file)
    assert code == 0
    history = build_history([history_dir])
    page, problems = _open(browser, page_file)
    charts = _drawn_charts(page)
    assert set(charts) == {"history-pass-rate", "history-cost", "history-latency", "history-errors"}
    assert all(marks > 0 for marks in charts.values()), charts
    # The change markers are drawn as rules on the pass-rate chart, one per run that changed.
    rules = page.locator("#chart-history-pass-rate svg .mark-rule.role-mark line").count()
    # Runs 2 and 3 both changed (a worse model, then faults); runs that started in the same
    # second are told apart by their file names, so there are always two.
    assert rules == len({m["run"] for m in history["markers"]}) == 2
    assert page.locator("#runs tbody tr").count() == 3
    assert page.locator("#flips tbody tr").count() == history["flips"]["total"] > 0
    assert problems == []
    page.close()


def test_history_reports_set_aside_lines_and_goes_on(tmp_path: Path, history_dir: Path) -> None:
    folder = tmp_path / "runs"
    folder.mkdir()
    shutil.copy(history_dir / "run1.jsonl", folder / "a.jsonl")
    lines = (history_dir / "run2.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "b.jsonl").write_text("".join([*lines[:5], "{not json\n", *lines[5:]]), encoding="utf-8")
    code, text, err = call_cli("history", folder)
    assert code == 0 and "2 run(s)" in text
    assert err.count("b.jsonl:6") == 1  # once, naming the line, though b is read twice
    # And the night is said to be incomplete (break62 F1): a row may be missing from it.
    assert err.count("\n") == 2 and "b.jsonl: an incomplete run: 1 line(s) set aside or cut" in err
    assert "change at" in text and "incomplete: 1 line(s) set aside" in text


def _night(pass_rate: float, checked: int, undecided: int = 0) -> dict[str, Any]:
    model: dict[str, Any] = {"pass_rate": pass_rate, "checked": checked, "undecided": undecided}
    model.update(passed=round(pass_rate * checked), error=0, answered_by=["p"])
    return {"label": "n", "file": "f", "job_fingerprint": "j", "models": {"m": model}}


@pytest.mark.parametrize(("before", "after"), [(0.95, 0.90), (0.85, 0.80), (0.50, 0.45), (0.30, 0.25), (0.90, 0.85)])
def test_a_five_point_drop_is_marked_whatever_the_rounding(before: float, after: float) -> None:
    # out-101 F3: 0.95 - 0.90 is 0.04999999999999993: 50 of the 96 whole-percent 5-point drops unmarked.
    [mark] = change_markers(_night(before, 20), _night(after, 20))
    assert mark["kind"] == "failing" and "pass rate fell" in mark["what"]
    assert change_markers(_night(before, 20), _night(before - 0.04, 20)) == []


def test_a_night_whose_verdicts_went_missing_is_marked() -> None:
    # out-101 F2: 5 of 8 rows undecided read 100% in the history, with no marker.
    [mark] = change_markers(_night(1.0, 8), _night(1.0, 3, undecided=5))
    assert mark["kind"] == "ungraded" and mark["what"] == "m: 5 row(s) undecided (a grader failed)"
    assert change_markers(_night(1.0, 3, undecided=5), _night(1.0, 3, undecided=5)) == []  # not news twice
    # out-103 F5: 15 of 25 after a night with 5 of 25 was no change; one more of 100 after one is none.
    [mark] = change_markers(_night(1.0, 20, undecided=5), _night(1.0, 10, undecided=15))
    assert mark["what"] == "m: 15 row(s) undecided (a grader failed)"
    assert change_markers(_night(1.0, 99, undecided=1), _night(1.0, 98, undecided=2)) == []
    # out-105 F6: the first one after a night with none is news (its run exited 1 for it).
    [mark] = change_markers(_night(1.0, 40), _night(1.0, 39, undecided=1))
    assert mark["what"] == "m: 1 row(s) undecided (a grader failed)"
