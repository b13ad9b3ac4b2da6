"""The CLI against the simulator on loopback: in process, as a subprocess for the quick start and the pty."""

from __future__ import annotations

import errno
import gc
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from batchrun import ExitCode, load_job, matrix_requests
from batchrun._console import Console, append_step_summary
from batchrun._formats import md_text
from batchrun._matrix import Shard, run_size_problem
from batchrun._scrub import environment_keys
from batchrun.cli import main
from batchrun.simulator import Simulator

from .conftest import FAKE_KEY, SMALL_JOB, call_cli, child_env, cli, exec_cli, read_rows, write_job
from .forked import ForkedCli, run_forked

REPO = Path(__file__).resolve().parent.parent
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def test_eval_job_on_the_simulator_writes_one_valid_line_per_row(tmp_path: Path) -> None:
    out = tmp_path / "eval.jsonl"
    result = exec_cli(REPO / "jobs" / "eval.yaml", "--simulate", "-o", out)
    assert result.returncode in (ExitCode.OK, ExitCode.QUALITY), result.stderr
    lines = out.read_text().splitlines()
    expected = list(matrix_requests(load_job(REPO / "jobs" / "eval.yaml")))
    assert len(lines) == len(expected) == 105
    rows = [json.loads(line) for line in lines]
    assert [r["id"] for r in rows] != [] and {r["id"] for r in rows} == {r.id for r in expected}
    for row in rows:
        assert row["status"] == "ok" and row["usage"]["total_tokens"] > 0 and row["cost"] > 0
        assert row["generation_id"].startswith("gen-") and row["provider"] == "SimCloud"
        assert row["request"]["messages"][-1]["role"] == "user" and row["request"]["max_tokens"] == 64
        assert row["request"]["model"] == row["model"]
    summary = json.loads((tmp_path / "eval.summary.json").read_text())
    assert summary["total"]["ok"] == 105 and summary["complete"] is True


def test_ids_are_unique_and_stable_across_two_runs(tmp_path: Path, small_job: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert cli(small_job, "--simulate", "-o", first, "-q").returncode == 0
    assert cli(small_job, "--simulate", "-o", second, "-q").returncode == 0
    ids_a = sorted(r["id"] for r in read_rows(first))
    ids_b = sorted(r["id"] for r in read_rows(second))
    assert ids_a == ids_b and len(set(ids_a)) == len(ids_a) == 20


def test_default_output_goes_under_outputs(tmp_path: Path) -> None:
    write_job(tmp_path, SMALL_JOB)
    result = cli("job.yaml", "--simulate", "-q", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""  # silent when all is well
    files = list((tmp_path / "outputs" / "small").glob("*.jsonl"))
    assert len(files) == 1 and re.fullmatch(r"\d{8}T\d{6}\.\d{3}Z\.jsonl", files[0].name)


def test_the_key_never_appears_in_any_output(tmp_path: Path, small_job: Path, sim: Simulator) -> None:
    step = tmp_path / "step.md"
    out = tmp_path / "k.jsonl"
    env = child_env(OPENROUTER_API_KEY=FAKE_KEY, GITHUB_STEP_SUMMARY=str(step))
    sim.config.faults = {"400": 0.5}  # error rows carry messages too
    result = cli(small_job, "--base-url", sim.base_url, "-o", out, env=env)
    assert result.returncode == ExitCode.ERRORS
    assert sim.stats.chat_requests >= 20  # the key was really used
    for text in (
        out.read_text(),
        (tmp_path / "k.summary.json").read_text(),
        step.read_text(),
        result.stdout,
        result.stderr,
    ):
        assert FAKE_KEY not in text and FAKE_KEY[10:30] not in text


def test_a_run_without_a_key_stops_before_any_request_naming_the_variable(tmp_path: Path, small_job: Path) -> None:
    result = cli(small_job, "--base-url", "http://127.0.0.1:9/api/v1", "-o", tmp_path / "x.jsonl")
    assert result.returncode == ExitCode.USAGE
    assert result.stderr == "batchrun: no API key: set $OPENROUTER_API_KEY (or use --simulate)\n"
    assert not (tmp_path / "x.jsonl").exists()


def test_simulator_answers_401_without_bearer(web: httpx.Client, sim: Simulator) -> None:
    response = web.post(f"{sim.base_url}/chat/completions", json={"model": "openai/gpt-4o-mini", "messages": []})
    assert response.status_code == 401 and response.json()["error"]["code"] == 401


def test_non_tty_progress_has_no_control_characters(tmp_path: Path) -> None:
    job = write_job(
        tmp_path,
        SMALL_JOB.replace(
            "run: {concurrency: 4, timeout_s: 5, max_attempts: 8, max_wait_s: 5}",
            "run: {concurrency: 2, progress_every_s: 0.01}",
        ).replace("repeat: 2", "repeat: 3"),
    )
    result = cli(job, "--simulate", "--sim", "latency_ms=20", "-o", tmp_path / "p.jsonl")
    assert result.returncode == 0
    assert "progress " in result.stderr  # lines, not a bar
    assert not CONTROL.search(result.stdout + result.stderr)
    quiet = cli(job, "--simulate", "-o", tmp_path / "q.jsonl", "-q")
    assert quiet.stdout == quiet.stderr == ""


def test_github_step_summary_is_written(tmp_path: Path, small_job: Path) -> None:
    step = tmp_path / "summary.md"
    result = cli(
        small_job, "--simulate", "-o", tmp_path / "g.jsonl", "-q", env=child_env(GITHUB_STEP_SUMMARY=str(step))
    )
    assert result.returncode == 0
    text = step.read_text()
    assert text.startswith("### batchrun: small") and "| openai/gpt-4o-mini | 10 | 0 | 0 |" in text


def test_report_prints_the_summary_of_a_results_file(tmp_path: Path, small_job: Path) -> None:
    out = tmp_path / "r.jsonl"
    assert cli(small_job, "--simulate", "-o", out, "-q").returncode == 0
    code, text, _ = call_cli("report", out)
    assert code == 0 and "TOTAL" in text and re.search(r"TOTAL\s+20\s+0\s+0", text)
    code, text, _ = call_cli("report", out, "--json")
    assert json.loads(text)["total"]["ok"] == 20


def test_plan_offline_counts_the_matrix(small_job: Path) -> None:
    code, text, _ = call_cli("plan", small_job)
    assert code == 0
    assert "job small: 20 request(s)" in text and "capital 6, sum 4" in text
    assert "= 2 model(s) x 5 row(s) of 2 prompt(s) x repeat 2" in text  # a number, not "x rows"


def test_help_lists_exit_codes_and_version() -> None:
    result = cli("--help")
    assert result.returncode == 0 and "exit codes:" in result.stdout and "7  interrupted" in result.stdout
    assert cli("--version").stdout.startswith("batchrun ")


@pytest.mark.parametrize(
    ("command", "fragments"),
    [
        (["run", "--help"], ["--concurrency N", "1..4096", "--max-attempts N", "1..100"]),
        (["validate", "--help"], ["JOB.yaml", "job files to check", "--quiet"]),
        (["diff", "--help"], ["print the changes as JSON", "as Markdown", "disappeared"]),
        (["simulate", "--help"], ["default 127.0.0.1", "default 8199"]),
        (["report", "--help"], ["--allow-partial", "exit 12"]),
    ],
)
def test_every_option_has_help(command: list[str], fragments: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from batchrun.cli import main

    with pytest.raises(SystemExit) as exited:
        main(command)
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for fragment in fragments:
        assert fragment in text


@pytest.mark.parametrize("args", [["run"], ["nope.yaml"], ["run", "x.yaml", "--concurrency", "0"], ["report"]])
def test_bad_usage_exits_2(args: list[str]) -> None:
    result = cli(*args)
    assert result.returncode == ExitCode.USAGE and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--versoin"], "unrecognized arguments: --versoin"),  # break57 F7: "arguments are required: job"
        (["-v"], "unrecognized arguments: -v"),
        (["validate", "--bogus"], "unrecognized arguments: --bogus"),
        (["run", "--deadline", "5", "--pass-threshold", "-0"], "the following arguments are required: job"),
        (["report"], "the following arguments are required: results"),
        # out-144 F8: int() reads other scripts' digits; --timeout (float) already refused them.
        (["x.yaml", "--concurrency", "٤"], "argument --concurrency: expected a whole number, got '٤'"),
        (["x.yaml", "--max-attempts", "４"], "argument --max-attempts: expected a whole number, got '４'"),
        # A second, other value of a money or gate setting won in silence (out-143: `--budget 1 --budget 100`).
        (["run", "x.yaml", "--budget", "1", "--budget", "100"], "--budget: given twice, 1 and 100: give it once"),
        (
            ["report", "r.jsonl", "--pass-threshold", ".5", "--pass-threshold", ".9"],
            "--pass-threshold: given twice, 0.5 and 0.9: give it once",
        ),
        (
            ["x.yaml", "--max-error-rate", "0", "--max-error-rate", "0.1"],
            "--max-error-rate: given twice, 0 and 0.1: give it once",
        ),
        # out-157 F5: the last shard ran, and the first one's rows never did.
        (["x.yaml", "--shard", "1/4", "--shard", "2/4"], "--shard: given twice, 1/4 and 2/4: give it once"),
        # out-173 F4: `--alpha 0.05 --alpha 1e-9` decided the regression gate in silence.
        (
            ["diff", "a", "b", "--alpha", "0.05", "--alpha", "1e-9"],
            "--alpha: given twice, 0.05 and 1e-09: give it once",
        ),
        # out-176 F3: any option of one value: `--deadline 5 --deadline 99999` dropped the deadline,
        # `--mode sync --mode batch` ran batch mode, exit 0, not a word (the same value twice is one).
        (["x.yaml", "--deadline", "5", "--deadline", "99999"], "--deadline: given twice, 5 and 99999: give it once"),
        (["x.yaml", "--mode", "sync", "-q", "--mode", "batch"], "--mode: given twice, sync and batch: give it once"),
        (
            ["x.yaml", "--concurrency", "1", "--concurrency", "4000"],
            "--concurrency: given twice, 1 and 4000: give it once",
        ),
        (["simulate", "--port", "0", "--port", "1"], "--port: given twice, 0 and 1: give it once"),
        (["x.yaml", "--stream", "--no-stream"], "--stream and --no-stream: both given: give one"),  # out-178 F7
        (["report", "r.jsonl", "--deadline", "5", "--deadline=6"], "--deadline: given twice, 5 and 6: give it once"),
        # out-143 F11: `--sim` read as --simulate took the job as its K=V, and the message named neither.
        (
            ["--sim", "jobs/eval.yaml"],
            "the following arguments are required: job (jobs/eval.yaml was taken as --sim's K=V: --sim sets the "
            "simulator, --simulate picks it)",
        ),
    ],
)
def test_a_mistyped_option_with_no_file_is_named(args: list[str], said: str) -> None:
    code, out, err = call_cli(*args)
    assert (code, out, err) == (ExitCode.USAGE, "", f"batchrun: error: {said}\n")


def test_an_existing_results_file_is_not_appended_to_without_resume(tmp_path: Path, small_job: Path) -> None:
    out = tmp_path / "once.jsonl"
    assert cli(small_job, "--simulate", "-o", out, "-q").returncode == 0
    before = out.read_bytes()
    again = cli(small_job, "--simulate", "-o", out, "-q")
    assert again.returncode == ExitCode.USAGE
    assert again.stderr == (
        f"batchrun: {out} already holds results of small: add --resume to continue that run, or give another --output\n"
    )
    assert out.read_bytes() == before


def _on_a_terminal(tmp_path: Path, *extra: str) -> tuple[int, str]:
    """Run the small job with stderr on a pty; its exit code and what the terminal showed."""
    import os
    import pty
    import subprocess

    job = write_job(tmp_path, SMALL_JOB)
    leader, follower = pty.openpty()
    process = ForkedCli(
        [job, "--simulate", "-o", tmp_path / "tty.jsonl", *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=follower,
        env=child_env(),
    )
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        seen += chunk
    process.wait(60)
    os.close(leader)
    return process.returncode, seen.decode(errors="replace")


def test_a_terminal_gets_a_live_progress_bar(tmp_path: Path) -> None:
    code, text = _on_a_terminal(tmp_path)
    assert code == 0
    assert "20/20" in text and "100%" in text  # tqdm's counter
    assert "\r" in text and "ok 20 err 0 skip 0" in text  # redrawn in place, with the counts and spend
    assert "progress " not in text  # no cron-style lines on a terminal


def test_quiet_on_a_terminal_draws_nothing(tmp_path: Path) -> None:
    assert _on_a_terminal(tmp_path, "--quiet") == (0, "")


def test_an_output_that_cannot_be_written_is_one_line_exit_2(tmp_path: Path, small_job: Path) -> None:
    (tmp_path / "plain-file").write_text("not a folder")
    result = cli(small_job, "--simulate", "-o", tmp_path / "plain-file" / "out.jsonl")
    assert result.returncode == ExitCode.USAGE and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "plain-file" in result.stderr


def test_report_and_diff_of_unreadable_results_are_one_line_exit_2(tmp_path: Path) -> None:
    code, _, err = call_cli("report", tmp_path / "missing.jsonl")
    assert code == ExitCode.USAGE and err == f"batchrun: {tmp_path / 'missing.jsonl'}: no such results file\n"
    broken = tmp_path / "broken.jsonl"
    broken.write_text("not json at all\n")
    code, _, err = call_cli("diff", broken, broken)
    assert code == ExitCode.USAGE and err == f"batchrun: {broken}:1: not a batchrun results file (not JSON)\n"


def test_whatever_the_cli_prints_is_scrubbed_of_the_environment_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key can reach a message from anywhere (a path the user typed, a decoded reason): the
    console and the step summary mask the environment's keys last."""
    key, management = "sk-or-v1-" + "ab12" * 12, "sk-or-v1-" + "cd34" * 12
    monkeypatch.setenv("OPENROUTER_API_KEY", key)
    monkeypatch.setenv("OPENROUTER_MANAGEMENT_KEY", management)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "step.md"))
    out, err = io.StringIO(), io.StringIO()
    console = Console(out, err)
    console.warn(f"response cache off for this run: /tmp/x/{key}/cache: cannot create the cache folder")
    console.out.write(f"reason: {management}\n")
    assert append_step_summary(f"| {key} |") is None
    printed = err.getvalue() + out.getvalue() + (tmp_path / "step.md").read_text()
    assert key[:20] not in printed and management[:20] not in printed
    # A message's key-like text is hidden as it is written (verify20 V6); the streams mask the rest.
    assert printed.count("[key]") == 2 and printed.count("sk-or-...(hidden)") == 1


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("API_KEYS", True),
        ("MY_TOKEN_2", True),
        ("DB_PASSWD", True),
        ("GH_PAT", True),
        ("SECRET_KEY_BASE", True),
        ("MY_CREDENTIALS", True),
        ("PWD", False),
        ("PATH", False),
        ("KEYBOARD_LAYOUT", False),
    ],
)
def test_the_environments_secrets_are_known_by_their_usual_names(
    monkeypatch: pytest.MonkeyPatch, name: str, secret: bool
) -> None:
    # out-183 F10: plural, numbered and CI's other usual names of secrets were not masked.
    value = "Zq7xWm2pLk9vRt4nBc8h"
    monkeypatch.setenv(name, value)
    assert (value in environment_keys()) == secret


def test_only_the_console_script_tunes_the_gc(tmp_path: Path) -> None:
    # The console script collects less often and freezes what it loaded before the run (the
    # collections then skip it: bench/README.md); a caller of main() keeps its GC untouched.
    job = write_job(tmp_path, SMALL_JOB)
    suite_frozen = gc.get_freeze_count()
    gc.unfreeze()  # the suite's own freeze (conftest): a frozen object that dies would move the count
    before, threshold = gc.get_freeze_count(), gc.get_threshold()
    try:
        code, _, err = call_cli(job, "--simulate", "-q", "-o", tmp_path / "a.jsonl")
        assert code == ExitCode.OK, err
        assert gc.get_freeze_count() == before and gc.get_threshold() == threshold
        out, errors = io.StringIO(), io.StringIO()
        code = main([str(job), "--simulate", "-q", "-o", str(tmp_path / "b.jsonl")], out, errors, own_process=True)
        assert code == ExitCode.OK, errors.getvalue()
        assert gc.get_freeze_count() > before and gc.get_threshold()[0] == 10_000 > threshold[0]
        assert len(read_rows(tmp_path / "b.jsonl")) == len(read_rows(tmp_path / "a.jsonl")) == 20
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
        if suite_frozen:  # the suite's own start-up, frozen again
            gc.collect()
            gc.freeze()


def test_files_named_like_a_key_are_hidden_on_the_ok_and_results_lines(tmp_path: Path) -> None:
    # verify20 V7: a key pasted into a file name was printed whole on stdout.
    named = "sk-or-v1-" + "9f" * 32
    job = write_job(tmp_path, SMALL_JOB, f"{named}.yaml")
    code, out, err = call_cli("validate", job)
    assert code == 0 and err == "" and out == f"{tmp_path}/sk-or-...(hidden).yaml: ok (job small)\n"
    code, out, err = call_cli(job, "--simulate", "-o", tmp_path / f"{named}.jsonl")
    assert code == 0 and named[:16] not in out + err
    assert f"results: {tmp_path}/sk-or-...(hidden).jsonl" in out


def test_a_base_url_with_credentials_is_a_usage_error(tmp_path: Path) -> None:
    # verify21 V22: a Python error at the first request, exit 1 ("rows ended in error").
    job = write_job(tmp_path, SMALL_JOB)
    code, _, err = call_cli(job, "--base-url", f"http://u:{FAKE_KEY}@127.0.0.1:9/api/v1")
    assert code == 2 and "a URL with credentials (user:password@)" in err and FAKE_KEY[:20] not in err


def test_a_misread_command_line_is_named_not_taken_as_something_else(tmp_path: Path, small_job: Path) -> None:
    # break23 F9: `batchrun reprot X` was "unrecognized arguments: X"; `report X --simulate`
    # (no --job) exited 0 with the option unused; `cache prune --older-than 30` passed where
    # no cache was yet, and failed once one existed.
    code, _, err = call_cli("reprot", "x.jsonl")
    assert code == ExitCode.USAGE and err.count("\n") == 1
    assert "'reprot' is neither a command nor a job file (did you mean 'report'?" in err
    code, _, err = call_cli("compare", "a.jsonl", "b.jsonl")
    assert code == ExitCode.USAGE and "'compare' is neither a command nor a job file (commands: " in err
    # verify23 N7: an option before the command read the command as the job file.
    code, _, err = call_cli("--json", "report", "x.jsonl")
    assert (code, err) == (ExitCode.USAGE, "batchrun: options go after the command: batchrun report --json ...\n")
    code, _, err = call_cli("--job=x.yaml", "merge", "m.jsonl", "x.jsonl")
    assert code == ExitCode.USAGE and "batchrun merge --job=x.yaml ..." in err
    # out-152 F3: `run` named, it was read as the job file: "unrecognized arguments: job.yaml".
    code, _, err = call_cli("--quiet", "run", "job.yaml")
    assert (code, err) == (ExitCode.USAGE, "batchrun: options go after the command: batchrun run --quiet ...\n")
    code, _, err = call_cli("-o", "run", "job.yaml")  # a file named `run`: the run says what is wrong
    assert code == ExitCode.USAGE and "options go after" not in err
    # out-153 F7: `--cache run JOB.yaml` ran the job with ./run as its cache; F6: `cache prune`'s own
    # --quiet was "not an option of `batchrun cache`".
    code, _, err = call_cli("--cache", "run", "job.yaml")
    assert (code, err) == (ExitCode.USAGE, "batchrun: options go after the command: batchrun run --cache ...\n")
    code, _, err = call_cli("--quiet", "cache", "prune", "--older-than", "30d")
    assert code == ExitCode.USAGE and "options go after the command: batchrun cache prune --quiet ..." in err, err
    # out-155 F6: abbreviated, as argparse takes it, `--cach run JOB` ran with ./run as its cache.
    code, _, err = call_cli("--cach", "run", "job.yaml")
    assert (code, err) == (ExitCode.USAGE, "batchrun: options go after the command: batchrun run --cach ...\n")
    # An option that takes a value, before `run`: "unrecognized arguments: job.yaml" (out-155 F6).
    for words in (["--budget", "1"], ["--budget=1"], ["-o", "x.jsonl"]):
        code, _, err = call_cli(*words, "run", "job.yaml")
        assert (code, err) == (ExitCode.USAGE, f"batchrun: options go after the command: batchrun run {words[0]} ...\n")
    # ...and an option the command does not have is said so, not advised (verify25 N4).
    code, _, err = call_cli("--quiet", "report", "x.jsonl")
    assert err == "batchrun: --quiet is not an option of `batchrun report` (see batchrun report --help)\n"
    out = tmp_path / "r.jsonl"
    assert call_cli(small_job, "--simulate", "-o", out, "-q")[0] == ExitCode.OK
    for extra, named in (
        (["--simulate"], "--simulate"),
        (["--budget", "1", "--allow-partial"], "--budget, --allow-partial"),
        (["--pass-threshold", "0.9", "--max-error-rate", "0"], "--pass-threshold, --max-error-rate"),
    ):
        code, text, err = call_cli("report", out, *extra)
        assert code == ExitCode.USAGE and text == "", err
        assert err == f"batchrun: {named}: only with --job JOB.yaml (they apply to its re-grading and gate)\n"
    code, _, err = call_cli("cache", "prune", "--older-than", "30", "--dir", tmp_path / "no-cache-here")
    assert code == ExitCode.USAGE and "--older-than: not a duration: '30' (give a unit" in err
    assert not (tmp_path / "no-cache-here").exists()


def test_report_files_never_make_a_dangling_links_folders_nor_take_a_lock_files_name(
    tmp_path: Path, small_job: Path
) -> None:
    # break23: --html through a dangling link made /nonexistent/dir/; --junit X.jsonl.lock
    # wrote over the lock file of a run on X.jsonl.
    out = tmp_path / "r.jsonl"
    assert call_cli(small_job, "--simulate", "-o", out, "-q")[0] == ExitCode.OK
    link = tmp_path / "page.html"
    link.symlink_to(tmp_path / "nowhere" / "deeper" / "page.html")
    code, _, err = call_cli("report", out, "--html", link)
    assert code == ExitCode.IO and "its link leads into" in err and "which does not exist" in err
    assert not (tmp_path / "nowhere").exists()
    # Nor a run's -o (a leftover of break23): the folders made are those of the path given.
    (tmp_path / "run.jsonl").symlink_to(tmp_path / "nowhere" / "deeper" / "run.jsonl")
    code, _, err = call_cli(small_job, "--simulate", "-o", tmp_path / "run.jsonl", "-q")
    assert code == ExitCode.USAGE and "its link leads into" in err and "which does not exist" in err
    assert not (tmp_path / "nowhere").exists()
    code, _, err = call_cli("report", out, "--junit", tmp_path / "r.jsonl.lock")
    assert code == ExitCode.USAGE and "that is the name of the lock file batchrun writes beside r.jsonl" in err
    assert not (tmp_path / "r.jsonl.lock").exists()


def test_a_page_or_junit_link_leading_outside_the_working_folder_is_refused(
    tmp_path: Path, small_job: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break59 F9: a link checked in with a pull request (results/junit.xml -> a runner's config
    # file) had its target overwritten by `report --junit`. Inside the folder, a link is followed.
    workspace, outside = tmp_path / "ws", tmp_path / "outside"
    (workspace / "results").mkdir(parents=True)
    outside.mkdir()
    (outside / "important.conf").write_text("precious")
    monkeypatch.chdir(workspace)
    out = workspace / "r.jsonl"
    assert call_cli(small_job, "--simulate", "-o", out, "-q")[0] == ExitCode.OK
    Path("results/junit.xml").symlink_to(outside / "important.conf")
    code, _, err = call_cli("report", out, "--junit", "results/junit.xml")
    assert code == ExitCode.USAGE and "its link leads to" in err and "outside the folder batchrun runs in" in err
    assert (outside / "important.conf").read_text() == "precious"
    # verify60 F5: a folder link on the way is a link too.
    Path("hist").symlink_to(outside)
    code, _, err = call_cli("report", out, "--html", "hist/report.html")
    assert code == ExitCode.USAGE and "outside the folder batchrun runs in" in err
    assert not (outside / "report.html").exists()
    # verify60 F9: /dev/stderr is written where it is, whatever it leads to; /dev/stdout is where
    # the report goes, and both in one stream could be read as neither (out-143 F8).
    assert call_cli("report", out, "--junit", "/dev/stderr")[0] == ExitCode.OK
    code, _, err = call_cli("report", out, "--json", "--junit", "/dev/stdout")
    assert code == ExitCode.USAGE and "not written over this command's standard output, where its report" in err
    Path("results/latest.html").symlink_to(workspace / "results" / "page.html")
    assert call_cli("report", out, "--html", "results/latest.html")[0] == ExitCode.OK
    assert Path("results/latest.html").is_symlink() and "<html" in (workspace / "results" / "page.html").read_text()


def test_a_matrix_too_large_for_one_run_is_refused_before_anything(tmp_path: Path) -> None:
    # break24 F4: 3 models x 1,000 rows x repeat 100,000 (an 8-line job): pre-flight priced it row
    # by row for 11 minutes, deaf to --deadline and to SIGTERM; plan --simulate the same.
    (tmp_path / "k.jsonl").write_text("".join(f'{{"country": "C{i}"}}\n' for i in range(1000)))
    job = write_job(
        tmp_path,
        "name: blow\ndefaults:\n  params: {max_tokens: 16}\n"
        "models: [openai/gpt-4o-mini, google/gemini-2.0-flash-001, meta-llama/llama-3.1-8b-instruct]\n"
        'prompts:\n  - id: capital\n    text: "Capital of {{country}}?"\n    dataset: k.jsonl\nrepeat: 100000\n',
    )
    said = "the job's matrix is 300,000,000 request(s), 300,000,000 for this run: over the 1,000,000 a run may send"
    commands: list[list[str | Path]] = [[job, "--simulate", "--deadline", "5"], ["plan", job, "--simulate"]]
    for args in commands:
        code, _, err = call_cli(*args)
        assert code == ExitCode.USAGE and said in err and "--shard K/N (N of 300 or more)" in err, err
    assert list(tmp_path.glob("outputs/**/*.jsonl")) == []
    loaded = load_job(job)
    assert run_size_problem(loaded, Shard(1, 300)) is None  # a shard of it may run
    assert "about 1,500,000 for this run" in (run_size_problem(loaded, Shard(1, 200)) or "")
    code, text, err = call_cli("plan", job)  # counting alone is quick, and said; then refused (break44 F8)
    assert code == ExitCode.USAGE and "300000000 request(s)" in text and said in err
    # out-143 F10: validate said "ok" alone; valid it is (shards may run it), and it says what a run would refuse.
    code, text, err = call_cli("validate", job)
    assert (code, text) == (ExitCode.OK, f"{job}: ok (job blow)\n")
    advice = "split it with --shard K/N (N of 300 or more) or lower `repeat` or the dataset"
    assert err == f"batchrun: warning: {job}: {said}; {advice}\n"


def test_a_key_in_a_variable_of_the_jobs_own_naming_is_scrubbed_by_every_reader(
    tmp_path: Path, small_job: Path
) -> None:
    # verify23 N8: a job's `api_key_env` naming another variable (a key not like sk-or-...):
    # the run scrubbed it, `report` (which knows no job) showed it whole.
    secret = "corp-gateway-3b8f1c27d9e04a6fb5c2"
    out = tmp_path / "r.jsonl"
    assert call_cli(small_job, "--simulate", "-o", out, "-q")[0] == ExitCode.OK
    rows = read_rows(out)
    failing = next(r for r in rows if r["checks"])
    failing["passed"] = False
    failing["checks"] = [{**failing["checks"][0], "pass": False, "reason": f"echoed {secret}"}]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out.with_name("r.summary.json").unlink()  # edited: the run's summary would say so, exit 12 (out-149 F1)
    env = child_env(GATEWAY_API_KEY=secret)
    readers: list[list[str | Path]] = [["report", out], ["report", out, "--json"], ["report", out, "--markdown"]]
    for args in readers:
        shown = cli(*args, env=env)
        assert shown.returncode == ExitCode.OK and "echoed [key]" in shown.stdout, args
        assert secret[8:24] not in shown.stdout + shown.stderr, args
    assert f"echoed {secret}" in cli("report", out).stdout  # a variable not named as a secret is not one


def test_a_small_cap_on_answers_does_not_cap_the_model_list(tmp_path: Path) -> None:
    # break28 m9: --max-response-bytes 2048 capped GET /models too (5 KB on the simulator,
    # megabytes on OpenRouter): every run ended "the endpoint failed before the run started".
    job = write_job(tmp_path, SMALL_JOB)
    code, _, err = call_cli(job, "--simulate", "--max-response-bytes", "2048", "-o", tmp_path / "o.jsonl", "-q")
    assert code == ExitCode.OK and err == ""
    assert len(read_rows(tmp_path / "o.jsonl")) == 20


def test_an_account_read_past_its_own_cap_names_that_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # verify29 n2: a /models past the 32 MiB account cap was said to pass run.max_response_bytes.
    import batchrun._client as client

    monkeypatch.setattr(client, "ACCOUNT_MAX_BYTES", 2048)  # the simulator's list is ~5 KB
    job = write_job(tmp_path, SMALL_JOB)
    code, _, err = call_cli(job, "--simulate", "--max-response-bytes", "1024", "-o", tmp_path / "o.jsonl", "-q")
    assert code == ExitCode.ERRORS and "over the 2,048-byte cap (a cap of this endpoint's own)" in err, err


def test_a_run_that_ends_before_its_summary_says_its_exit_in_the_step_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break42 F8: no key (2), the key refused (9), the endpoint down (1): no step summary, so
    # the Actions page showed no verdict for the step.
    step = tmp_path / "step.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    job = write_job(tmp_path, SMALL_JOB)
    code, _, err = call_cli(job, "--base-url", "http://127.0.0.1:9/api/v1", "-o", tmp_path / "a.jsonl")
    said = err.removeprefix("batchrun: ").strip()
    # out-102 F12: a section of its own, or it ran into the section before it (a list's last bullet).
    assert (
        code == ExitCode.USAGE
        and step.read_text() == f"\n### batchrun run {md_text(str(job))}\n\n**Exit 2:** {md_text(said)}\n"
    )
    monkeypatch.setenv("OPENROUTER_API_KEY", FAKE_KEY)
    code, _, _ = call_cli(
        job, "--base-url", "http://127.0.0.1:9/api/v1", "-o", tmp_path / "b.jsonl", "--max-attempts", "1"
    )
    assert (
        code == ExitCode.ERRORS
        and "**Exit 1:** the endpoint failed before the run started: connect" in step.read_text()
    )
    code, _, _ = call_cli(job, "--simulate", "--sim", "require_key=true", "-o", tmp_path / "c.jsonl")
    assert code == ExitCode.AUTH and "**Exit 9:** the API key was refused" in step.read_text()
    assert FAKE_KEY not in step.read_text()
    # verify45 N4: a usage error of a run, found by the parser, is its verdict too.
    step.unlink()
    code, _, err = call_cli(job, "--concurrency", "0")
    assert code == ExitCode.USAGE and step.read_text().endswith(
        f"\n\n**Exit 2:** {md_text(err.removeprefix('batchrun: error: ').strip())}\n"
    )
    step.unlink()
    bogus = call_cli("report", tmp_path / "a.jsonl", "--bogus")[0]
    assert bogus == ExitCode.USAGE and not step.exists()  # a reader's: none
    # out-149 F7: a gate refused before its verdict (its results not there) wrote nothing there.
    code, _, err = call_cli("report", tmp_path / "gone.jsonl", "--job", job)
    assert code == ExitCode.USAGE and step.read_text() == (
        f"\n### batchrun report {md_text(str(tmp_path / 'gone.jsonl'))}\n\n"
        f"**Exit 2:** {md_text(err.removeprefix('batchrun: ').strip())}\n"
    )
    step.unlink()
    # The console script, its stderr a log file (its early look at argv parses it too): said once.
    with open(tmp_path / "cron.log", "wb") as log:
        env = child_env(GITHUB_STEP_SUMMARY=str(step))
        result = run_forked([job, "--concurrency", "0"], 60, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
    assert result.returncode == ExitCode.USAGE and step.read_text().count("**Exit 2:**") == 1
    # verify45 N4: refused in silence with stderr appended to the results: CI still sees why.
    step.unlink()
    out = tmp_path / "r.jsonl"
    out.write_bytes(b"")
    with open(out, "ab") as results:
        result = run_forked([job, "-o", out], 60, env=env, stdout=subprocess.DEVNULL, stderr=results, text=True)
    assert result.returncode == ExitCode.USAGE and out.read_bytes() == b""
    assert step.read_text() == "\n### batchrun run\n\n**Exit 2:** refused: stderr is appended to a results file\n"


def test_the_step_summary_says_what_the_text_summary_says_and_the_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break35 F2: a budget-stopped run below its threshold, and then its gate, showed a table:
    # no skipped rows, no spend, no pass rate by prompt, and no word of why the step was red.
    step = tmp_path / "step.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    job = write_job(tmp_path, SMALL_JOB)
    out = tmp_path / "r.jsonl"
    code, _, _ = call_cli(job, "--simulate", "-o", out, "-q", "--budget", "0.0001", "--pass-threshold", "0.99")
    assert code == ExitCode.BUDGET
    text = step.read_text()
    assert "**Exit 5:** " in text and "- pass rate by prompt: capital " in text and "- skipped: budget " in text
    assert "- budget left for this run: spent \\$" in text  # `$...$` is math on GitHub
    # Every bold note a paragraph of its own: after a list item it read as part of the item.
    lines = text.splitlines()
    assert all(lines[i - 1] == "" for i, line in enumerate(lines) if line.startswith("**"))
    step.unlink()
    code, _, _ = call_cli("report", out, "--job", job)
    assert code == ExitCode.INCOMPLETE
    assert "**Exit 12:** " in step.read_text() and "(--allow-partial accepts them)" in step.read_text()


class _FullDisk(io.StringIO):
    """A stdout redirected to a full disk: every write fails."""

    def __init__(self, error: int) -> None:
        super().__init__()
        self.error = error

    def write(self, text: str) -> int:
        raise OSError(self.error, os.strerror(self.error))


def test_a_readers_output_that_cannot_be_written_is_exit_11_and_a_gone_reader_is_quiet(tmp_path: Path) -> None:
    # verify35 m2: `report --json > report.json` on a full disk left an empty file, exit 0.
    job = write_job(tmp_path, SMALL_JOB)
    out = tmp_path / "r.jsonl"
    assert call_cli(job, "--simulate", "-o", out, "-q")[0] == ExitCode.OK
    err = io.StringIO()
    assert main(["report", str(out), "--json"], out=_FullDisk(errno.ENOSPC), err=err) == ExitCode.IO
    assert err.getvalue() == "batchrun: stdout: the output could not be written: No space left on device\n"
    err = io.StringIO()  # the text report: said, and the code is the command's own
    assert main(["report", str(out)], out=_FullDisk(errno.ENOSPC), err=err) == ExitCode.OK
    assert "warning: stdout: the output could not be written" in err.getvalue()
    err = io.StringIO()  # `| head`: the reader went away, as Unix tools do
    assert main(["report", str(out)], out=_FullDisk(errno.EPIPE), err=err) == ExitCode.OK and err.getvalue() == ""


def test_markdown_redirected_into_the_step_summary_is_written_there_once(results: Path, tmp_path: Path) -> None:
    # break62 F9: `--markdown >> "$GITHUB_STEP_SUMMARY"` (GitHub's own idiom) wrote every table
    # twice, batchrun appending the same Markdown by itself. Other output still goes there.
    step = tmp_path / "step.md"
    env = child_env(GITHUB_STEP_SUMMARY=str(step))
    with step.open("a") as handle:
        done = run_forked(["report", results, "--markdown"], env=env, stdout=handle, stderr=subprocess.PIPE, text=True)
    assert done.returncode == 0 and done.stderr == ""
    assert step.read_text().count("| TOTAL |") == 1
    assert run_forked(["report", results], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE).returncode == 0
    assert step.read_text().count("| TOTAL |") == 2  # text on stdout: the Markdown appended, as before


@pytest.mark.parametrize(
    ("option", "value", "said"),
    [
        ("--grace", "30000", "--grace: must be at most 600 seconds, as run.grace_s, got 30000"),
        ("--grace", "600.5", "--grace: must be at most 600 seconds"),
        ("--timeout", "1e9", "--timeout: must be at most 3600 seconds, as run.timeout_s, got 1e9"),
        ("--timeout", "0", "--timeout: must be above 0"),
    ],
)
def test_grace_and_timeout_options_have_the_job_files_bounds(
    small_job: Path, tmp_path: Path, option: str, value: str, said: str
) -> None:
    # break60 F3: `--grace 30000` (milliseconds, meant) and `--timeout 1e9` were taken, and held a
    # run past `--deadline 3` (killed at 150 s), where the same values in the job file are exit 2.
    out = tmp_path / "o.jsonl"
    code, _, err = call_cli(small_job, "--simulate", option, value, "--deadline", "3", "-o", out)
    assert code == ExitCode.USAGE and said in err and not out.exists()


def test_the_options_bounds_are_the_schemas() -> None:
    from batchrun._argtypes import MAX_CONCURRENCY, MAX_GRACE_S, MAX_TIMEOUT_S
    from batchrun._jobfile import job_schema

    run = job_schema()["properties"]["run"]["properties"]
    assert (run["grace_s"]["maximum"], run["timeout_s"]["maximum"]) == (MAX_GRACE_S, MAX_TIMEOUT_S)
    assert run["concurrency"]["maximum"] == MAX_CONCURRENCY
    assert call_cli("--simulate", "--grace", "600", "--timeout", "3600", "--help")[0] == ExitCode.OK


def test_a_command_never_prints_into_a_file_it_reads(tmp_path: Path, results: Path) -> None:
    # out-143 F7: `report r.jsonl --json >> r.jsonl` (">>" typed for ">") appended the report to
    # the records it read, exit 0; so did `diff A B >> B` and `history r.jsonl >> r.jsonl`.
    other = tmp_path / "other.jsonl"
    other.write_bytes(results.read_bytes())
    commands: list[tuple[str | Path, ...]] = [
        ("report", results, "--json"),
        ("report", results),
        ("diff", other, results),
        ("history", results, "--markdown"),
    ]
    # out-144 F3, F8: nor into the summary every reader reads beside it, a run in a folder
    # history reads, a shard merge reads, or the job a run, plan or validate reads.
    summary = results.with_name("done.summary.json")
    job = results.with_name("job.yaml")
    commands += [("history", tmp_path), ("merge", tmp_path / "m.jsonl", results)]
    into = [(command, results) for command in commands]
    into += [(("report", results), summary), (("diff", other, results), summary)]
    into += [((job, "--simulate", "-o", tmp_path / "n.jsonl"), job), (("validate", job), job), (("plan", job), job)]
    saved = os.dup(1)
    try:
        for command, target in into:
            before = target.read_bytes()
            with open(target, "ab") as appended:
                os.dup2(appended.fileno(), 1)  # the process's stdout is the file, as `>>` makes it
            code, _, err = call_cli(*command)
            os.dup2(saved, 1)
            assert code == ExitCode.USAGE and f"{target}: is this command's standard output too" in err, command
            assert target.read_bytes() == before
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    assert call_cli("report", results, "--json")[0] == ExitCode.OK  # stdout elsewhere: as before


def test_a_junit_file_to_a_deleted_stderr_goes_into_it_not_beside_it(tmp_path: Path, small_job: Path) -> None:
    # out-154 F2: stderr a log deleted since it was opened (`exec 2>log; rm log`, as pytest's own
    # capture file is): `--junit /dev/stderr` made a new file named "log (deleted)" beside it.
    out = tmp_path / "r.jsonl"
    assert call_cli(small_job, "--simulate", "-o", out, "-q")[0] == ExitCode.OK
    log = tmp_path / "log"
    with open(log, "w+b") as handle:
        log.unlink()
        result = run_forked(["report", out, "--junit", "/dev/stderr"], stdout=subprocess.DEVNULL, stderr=handle)
        handle.seek(0)
        written = handle.read()
    assert result.returncode == ExitCode.OK and b"<testsuites" in written
    assert not [p.name for p in tmp_path.iterdir() if "deleted" in p.name]


def test_a_junit_file_through_a_link_to_stderr_or_into_a_socket_is_written_into_it(
    tmp_path: Path, small_job: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # out-155 F2: `junit.xml -> /dev/stderr`, stderr a pipe (as CI reads it), was refused as a link
    # "outside the folder"; F3: stderr a socket (a journal, a log driver) was "a FIFO that nobody reads".
    import socket

    out = tmp_path / "r.jsonl"
    assert call_cli(small_job, "--simulate", "-o", out, "-q")[0] == ExitCode.OK
    monkeypatch.chdir(tmp_path)
    Path("junit.xml").symlink_to("/dev/stderr")
    piped = run_forked(
        ["report", out, "--junit", "junit.xml"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert piped.returncode == ExitCode.OK and "<testsuites" in piped.stderr, piped.stderr
    ours, theirs = socket.socketpair()
    with ours, theirs:
        result = run_forked(["report", out, "--junit", "/dev/stderr"], stdout=subprocess.DEVNULL, stderr=theirs)
        theirs.close()
        received = b"".join(iter(lambda: ours.recv(65536), b""))
    assert result.returncode == ExitCode.OK and b"<testsuites" in received, received[-300:]


def test_a_stops_way_on_is_a_command_to_paste() -> None:
    # out-155 F4, F5: a shard's needs its --shard, and a name with a space or `$` its quotes.
    from batchrun._summary_text import _stop_line

    line = _stop_line({"stop": "interrupted", "output": "night $1.jsonl", "shard": "2/4"})  # type: ignore[typeddict-item]
    assert line == "stopped: interrupted (--resume -o 'night $1.jsonl' --shard 2/4 runs the rows it did not answer)"


def test_a_report_file_on_a_descriptor_closed_at_start_is_refused(tmp_path: Path, small_job: Path) -> None:
    # out-155 F7: `--junit /dev/stdout >&-`: written into the /dev/null the CLI opened in its
    # place, "junit: 106 test case(s)", exit 0: nothing was written anywhere.
    out = tmp_path / "r.jsonl"
    assert call_cli(small_job, "--simulate", "-o", out, "-q")[0] == ExitCode.OK
    # A process started with its stdout closed: what the process boundary is (_entry opens /dev/null there).
    argv = ["sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-m", "batchrun", "report", str(out), "--junit"]
    result = subprocess.run(
        [*argv, "/dev/stdout"], env=child_env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "/dev/stdout: descriptor 1 was closed when batchrun started: a JUnit file would go nowhere" in result.stderr
