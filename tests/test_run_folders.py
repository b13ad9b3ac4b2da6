"""A job's folder after months of nightly runs: which run `--resume` and `plan` take, and what
`history` counts as a run, when the folder holds more than timestamped files (break52)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from batchrun import ExitCode
from batchrun._journal_file import journal_path
from batchrun._lock import OutputLock
from batchrun.simulator import Simulator

from .conftest import SMALL_JOB, call_cli, write_job

FOLDER = Path("outputs/small")


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api_key_env: None) -> Path:
    monkeypatch.chdir(tmp_path)
    write_job(tmp_path, SMALL_JOB)
    return tmp_path


def night(*options: str) -> Path:
    """One run of the job on the simulator; its results file."""
    before = set(FOLDER.glob("*.jsonl")) if FOLDER.is_dir() else set()
    code, _, err = call_cli("job.yaml", "--simulate", "-q", *options)
    assert code == ExitCode.OK, err
    [made] = set(FOLDER.glob("*.jsonl")) - before if "-o" not in options else [Path(options[options.index("-o") + 1])]
    return made


def killed(results: Path) -> Path:
    """The run as a kill leaves it: no summary (its rows all written, so a resume sends none)."""
    results.with_name(results.stem + ".summary.json").unlink()
    return results


def resumed() -> str:
    code, _, err = call_cli("job.yaml", "--simulate", "--resume")
    assert code == ExitCode.OK, err
    return err


def test_resume_takes_the_run_that_began_last_not_the_last_name(in_tmp: Path) -> None:
    # break52 F1: named by hand, an old run sorted after every UTC stamp: resumed for ever as
    # "the most recent incomplete run", tonight's stopped run never.
    killed(night("-o", str(FOLDER / "adhoc.jsonl")))
    tonight = killed(night())
    assert f"resuming {tonight}, the most recent incomplete run of small" in resumed()


def test_a_link_to_a_run_in_its_folder_is_not_a_run_of_its_own(in_tmp: Path) -> None:
    # break52 F1: `latest.jsonl` -> a complete run had no summary beside it, so it was "incomplete"
    # and resumed on every tick (exit 0, nothing sent), and the run really stopped never was.
    complete = night()
    stopped = killed(night())
    (FOLDER / "latest.jsonl").symlink_to(complete.name)
    assert f"resuming {stopped}, the most recent incomplete run of small" in resumed()
    code, out, err = call_cli("history", FOLDER, "--json")
    assert code == ExitCode.OK, err
    assert sorted(Path(run["file"]).name for run in json.loads(out)["runs"]) == sorted([complete.name, stopped.name])


def test_readers_through_a_link_see_the_runs_files_beside_its_target(in_tmp: Path) -> None:
    # out-149 F4: a night with records removed was exit 12 by its own name and exit 0 through a
    # `latest.jsonl` link (its summary, journal and batch record are beside the target, not the
    # link); `history` of the link did not mark it, and `merge` of a link took an edited shard.
    night_file = night()
    lines = night_file.read_text().splitlines(keepends=True)
    night_file.write_text("".join(lines[: len(lines) // 2]))
    link = in_tmp / "latest.jsonl"
    link.symlink_to(night_file.resolve())
    for path in (night_file, link):
        code, _, err = call_cli("report", path)
        assert code == ExitCode.INCOMPLETE and "row(s) its summary counts have no readable record" in err, err
    code, out, err = call_cli("history", link, "--json")
    assert code == ExitCode.OK and json.loads(out)["runs"][0]["incomplete"], out
    code, _, err = call_cli("merge", in_tmp / "m.jsonl", link)
    assert code == ExitCode.USAGE and "shorter than when its summary was written" in err, err


def test_plan_averages_the_run_that_began_last(in_tmp: Path, sim: Simulator) -> None:
    # break52 F1: "prev. avg $" came from a 90-day-old hand-named file.
    old = FOLDER / "zz-old-manual.jsonl"
    for output in (["-o", str(old)], list[str]()):  # against the same endpoint: a simulated run's prices are not its
        code, _, err = call_cli("job.yaml", "--base-url", sim.base_url, "-q", *output)
        assert code == ExitCode.OK, err
    [newest] = set(FOLDER.glob("2*.jsonl"))
    os.utime(old, (0, 0))  # its time on disk says nothing: the runs' own times do
    code, out, err = call_cli("plan", "job.yaml", "--base-url", sim.base_url)
    assert code == ExitCode.OK, err
    assert f"previous run: {newest} " in out


def test_whole_runs_merged_into_the_folder_stay_runs_of_the_history(in_tmp: Path, sim: Simulator) -> None:
    # break52 F2: 6 nights merged into month.jsonl were left out of the history as if shards (one
    # run left), and plan's previous average read the month's folded costs: 6x a night's.
    nights = []
    for _ in range(3):
        code, _, err = call_cli("job.yaml", "--base-url", sim.base_url, "-q")
        assert code == ExitCode.OK, err
        nights = sorted(FOLDER.glob("2*.jsonl"))
    code, _, err = call_cli("merge", FOLDER / "month.jsonl", *nights, "--job", "job.yaml")
    assert code == ExitCode.OK and "in more than one file" in err
    code, out, err = call_cli("history", FOLDER, "--json")
    assert code == ExitCode.OK, err
    assert sorted(Path(run["file"]).name for run in json.loads(out)["runs"]) == sorted(
        [n.name for n in nights] + ["month.jsonl"]
    )
    code, out, err = call_cli("plan", "job.yaml", "--base-url", sim.base_url)
    assert code == ExitCode.OK and f"previous run: {nights[-1]} " in out, out + err
    # verify52 F7: without the merge's summary, the month's folded costs were the average again.
    (FOLDER / "month.summary.json").unlink()
    code, out, err = call_cli("plan", "job.yaml", "--base-url", sim.base_url)
    assert code == ExitCode.OK and f"previous run: {nights[-1]} " in out, out + err


def test_a_summary_of_another_file_is_left_out_by_the_readers_and_said(in_tmp: Path) -> None:
    # break52 F5 (a): a copy of a.jsonl beside another run's summary showed that run's key gap as
    # its own, with no word; only the resume refused it.
    a, b = night("-o", "a.jsonl"), night("-o", "b.jsonl")
    summary = json.loads(b.with_name("b.summary.json").read_text())
    Path("a2.jsonl").write_bytes(a.read_bytes())
    Path("a2.summary.json").write_text(json.dumps({**summary, "key_gap_usd": 0.5}))
    code, out, err = call_cli("report", "a2.jsonl")
    assert code == ExitCode.OK and "0.5" not in out
    assert err == (
        "batchrun: warning: a2.summary.json: the summary of b.jsonl, not of a2.jsonl: left out (rows never "
        "written cannot be counted)\n"
    )
    code, out, err = call_cli("history", "a2.jsonl", "b.jsonl")
    assert code == ExitCode.OK and "spent beyond the records" not in out, err


def test_two_runs_put_together_in_one_file_are_said_to_be(in_tmp: Path) -> None:
    # break52 F5 (b): `cat` of two runs with the first's summary: exit 0, no word, both runs'
    # money as one run's.
    a = night("-o", "a.jsonl")
    b = night("-o", "b.jsonl")
    size = a.stat().st_size
    with a.open("ab") as handle:
        handle.write(b.read_bytes())
    code, _, err = call_cli("report", a)
    assert f"a.jsonl: {b.stat().st_size:,} byte(s) appended since its summary was written, with no run since" in err
    assert a.stat().st_size == size + b.stat().st_size and code == ExitCode.INCOMPLETE, err
    # Lines that are no record (a note, NULs a crash left) supersede nothing: only said.
    b.write_bytes(b.read_bytes() + b"# a note\n" + b"\0" * 64)
    code, _, err = call_cli("report", b)
    assert "73 byte(s) longer than when its summary was written, with no run since" in err, err
    assert code in (ExitCode.OK, ExitCode.QUALITY), err


def test_a_file_of_another_job_in_the_folder_is_left_out_of_its_history(in_tmp: Path) -> None:
    # break52 F6: an ad hoc test written into the nightly folder with -o ended `history` of the
    # folder (exit 2), where a garbage file there was a warning.
    nights = [night(), night()]
    write_job(in_tmp, SMALL_JOB.replace("name: small", "name: adhoc"), "adhoc.yaml")
    code, _, err = call_cli("adhoc.yaml", "--simulate", "-q", "-o", FOLDER / "adhoc-try.jsonl")
    assert code == ExitCode.OK, err
    code, out, err = call_cli("history", FOLDER, "--json")
    assert code == ExitCode.OK
    adhoc = FOLDER / "adhoc-try.jsonl"
    assert f"batchrun: warning: {adhoc}: a run of job adhoc, not of small: left out of the history\n" in err
    # The newest run, left out: said once more, as it may be a renamed job's (out-149 F5).
    assert err.count("\n") == 2 and f"the newest run, {adhoc}, is of job adhoc, not of small" in err, err
    assert sorted(Path(run["file"]).name for run in json.loads(out)["runs"]) == sorted(n.name for n in nights)
    code, _, err = call_cli("history", nights[0], FOLDER / "adhoc-try.jsonl")  # named: the user's choice
    assert code == ExitCode.USAGE and "these files belong to different jobs" in err


def test_history_after_a_rename_says_the_newest_run_is_left_out_and_job_shows_it(in_tmp: Path) -> None:
    # out-149 F5: after the job's `name:` changed, every new night was left out of the folder's
    # history (its job: that of most runs) for up to 45 nights, one warning per night on stderr.
    nights = [night(), night()]
    write_job(in_tmp, SMALL_JOB.replace("name: small", "name: renamed"), "renamed.yaml")
    tonight = FOLDER / "tonight.jsonl"
    assert call_cli("renamed.yaml", "--simulate", "-q", "-o", tonight)[0] == ExitCode.OK
    code, out, err = call_cli("history", FOLDER, "--json")
    assert code == ExitCode.OK and sorted(Path(r["file"]).name for r in json.loads(out)["runs"]) == sorted(
        n.name for n in nights
    )
    assert f"the newest run, {tonight}, is of job renamed, not of small (most of the runs): left out; give --job" in err
    code, out, err = call_cli("history", FOLDER, "--json", "--job", "renamed.yaml")
    assert code == ExitCode.OK and [Path(r["file"]).name for r in json.loads(out)["runs"]] == [tonight.name], err
    assert err.count("left out of the history") == 2, err
    code, _, err = call_cli("history", FOLDER, "--job", "job.yaml")
    assert code == ExitCode.OK and "left out of the history" in err and "the newest run" not in err
    write_job(in_tmp, SMALL_JOB.replace("name: small", "name: none-here"), "none.yaml")
    code, _, err = call_cli("history", FOLDER, "--job", "none.yaml")
    assert code == ExitCode.USAGE and "no run of job none-here there (its runs are of renamed, small)" in err, err


def test_history_follows_links_in_a_folder_and_job_picks_its_folder(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # out-151 F1: a folder's link to a killed run elsewhere read its summary beside the link: a
    # whole run. F4: `history --job` without a folder refused once outputs/ held two jobs' folders.
    # F5: with --job, a file named of another job was left out, exit 0. F6: `report` exit 12 wrote
    # a whole-looking table to the step summary, with no exit line.
    elsewhere = in_tmp / "elsewhere"
    elsewhere.mkdir()
    killed_run = killed(night("-o", str(elsewhere / "k.jsonl")))
    journal_path(killed_run).write_text("")  # a kill -9 leaves its journal
    links = in_tmp / "links"
    links.mkdir()
    (links / "k.jsonl").symlink_to(killed_run)
    (links / "gone.jsonl").symlink_to(elsewhere / "deleted.jsonl")  # out-153 F8: left out without a word
    code, out, err = call_cli("history", links, "--json")
    assert code == ExitCode.OK and json.loads(out)["runs"][0]["incomplete"], out + err
    assert f"{links / 'gone.jsonl'}: not a regular file (a link to nothing, a FIFO, a device): left out" in err
    # out-173 F5: a folder so named was left out without a word, and one with no runs, named
    # beside a run, dropped a night from the trend (exit 0).
    (links / "night.jsonl").mkdir()
    code, out, err = call_cli("history", links, "--json")
    assert code == ExitCode.OK and f"{links / 'night.jsonl'}: a folder: left out of the history" in err
    code, out, err = call_cli("history", killed_run, links / "night.jsonl")
    assert code == ExitCode.USAGE and f"{links / 'night.jsonl'}: a folder with no results files (*.jsonl) in it" in err
    write_job(in_tmp, SMALL_JOB.replace("name: small", "name: renamed"), "renamed.yaml")
    assert call_cli("renamed.yaml", "--simulate", "-q")[0] == ExitCode.OK  # outputs/renamed beside outputs/small
    code, out, err = call_cli("history", "--job", "renamed.yaml", "--json")
    assert code == ExitCode.OK and {Path(r["file"]).parent.name for r in json.loads(out)["runs"]} == {"renamed"}, err
    [new] = Path("outputs/renamed").glob("*.jsonl")
    code, _, err = call_cli("history", new, killed_run, "--job", "renamed.yaml")
    assert code == ExitCode.USAGE and f"{killed_run}: a run of job small, not of renamed (--job)" in err, err
    cut = night("-o", str(elsewhere / "cut.jsonl"))
    cut.write_text("".join(cut.read_text().splitlines(keepends=True)[:3]))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(in_tmp / "step.md"))
    code, _, _ = call_cli("report", cut)
    assert code == ExitCode.INCOMPLETE and "**Exit 12:** " in (in_tmp / "step.md").read_text()


def test_shards_side_by_side_with_default_outputs_each_run_and_one_shard_runs_once(in_tmp: Path) -> None:
    # break51 F8: four shards started together without -o shared the job's lock: three exited 8.
    # Each shard now has a lock and default names of its own; a second tick of a shard still waits.
    FOLDER.mkdir(parents=True)
    other_shard = OutputLock(FOLDER / ".batchrun-shard1of2", "held by the test")
    other_shard.acquire()
    try:
        code, _, err = call_cli("job.yaml", "--simulate", "--shard", "2/2", "--no-thresholds", "-q")
        assert code == ExitCode.OK, err
        [made] = FOLDER.glob("*.jsonl")
        assert made.name.endswith("Z-shard2of2.jsonl")
        assert {json.loads(line)["shard"] for line in made.read_text().splitlines()} == {"2/2"}
    finally:
        other_shard.release()
    same_shard = OutputLock(FOLDER / ".batchrun-shard2of2", "held by the test")
    same_shard.acquire()
    try:
        code, _, err = call_cli("job.yaml", "--simulate", "--shard", "2/2", "--no-thresholds")
    finally:
        same_shard.release()
    assert code == ExitCode.LOCKED
    assert err.startswith("batchrun: job small shard 2/2 is being run by another")
    code, _, err = call_cli("job.yaml", "--simulate", "--shard", "1/2", "--no-thresholds", "-q")
    assert code == ExitCode.OK, err
    code, _, err = call_cli("merge", "m.jsonl", *sorted(FOLDER.glob("*.jsonl")), "-q")
    assert code == ExitCode.OK, err


def test_report_of_a_partial_merge_is_incomplete_and_its_junit_fails(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break53 F5: one shard of two merged with --allow-partial: report exit 0 and a green JUnit
    # gate case, while the page it wrote said exit 12 and the merge's summary knew 10 rows missing.
    code, _, err = call_cli("job.yaml", "--simulate", "--shard", "1/2", "--no-thresholds", "-q", "-o", "s1.jsonl")
    assert code == ExitCode.OK, err
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(in_tmp / "step.md"))
    code, _, err = call_cli("merge", "m.jsonl", "s1.jsonl", "--allow-partial", "-q")
    # Said on stderr and in the step summary: it was a table of half the rows that looked whole (out-149 F6).
    accepted = "accepted with --allow-partial: shard(s) 2 of 2 are missing"
    assert code == ExitCode.OK and accepted in err, err
    assert f"**Exit 0:** {accepted}" in (in_tmp / "step.md").read_text()
    code, _, err = call_cli("report", "m.jsonl", "--junit", "m.xml")
    assert code == ExitCode.INCOMPLETE and "m.jsonl: a partial merge: shard(s) 2 of 2 are missing" in err
    assert '<failure message="exit 12: m.jsonl: a partial merge' in Path("m.xml").read_text()


def test_junit_cases_whose_names_collide_are_told_apart_by_their_rows_id(in_tmp: Path) -> None:
    # break53 F6: rows whose variables share their first 80 characters, or differ as 1 and 1.0,
    # had one test-case name, one passing and one failing: a CI tracking tests by name merged them.
    context = "You are a helpful geography assistant. Please answer briefly and precisely, " * 2
    write_job(
        in_tmp,
        f"""
name: dup
models: [openai/gpt-4o-mini]
prompts:
  - id: capital
    text: "{{{{context}}}} Capital of {{{{country}}}}?"
    vars: [{{context: "{context}", country: France}}, {{context: "{context}", country: Japan}},
           {{context: a, country: 1}}, {{context: a, country: 1.0}}]
    checks: [{{contains: Paris}}]
""",
        "dup.yaml",
    )
    code, _, err = call_cli("dup.yaml", "--simulate", "-q", "--no-thresholds", "-o", "d.jsonl")
    assert code == ExitCode.OK, err
    call_cli("report", "d.jsonl", "--junit", "d.xml")
    names = re.findall(r'<testcase name="([^"]*)"', Path("d.xml").read_text())
    assert len(names) == 5 and len(set(names)) == 5, names  # 4 rows and the gate's case
    rows = list(map(json.loads, Path("d.jsonl").read_text().splitlines()))
    long_ones = {row["id"][:8] for row in rows if row["vars"]["context"] == context}  # alike in their first 80
    assert {name.rsplit(" [", 1)[-1].rstrip("]") for name in names if "geography" in name} == long_ones, names
    assert "openai/gpt-4o-mini [context=a, country=1]" in names, names  # told apart by their values alone
    assert "openai/gpt-4o-mini [context=a, country=1.0]" in names, names


def test_a_link_to_a_run_outside_the_folder_is_read_by_its_files_summary(in_tmp: Path) -> None:
    # verify52 F3: `latest.jsonl` -> an archived complete run elsewhere had no summary beside the
    # link: "resumed" on every tick (exit 0), its summary rewritten each time.
    archived = night("-o", "archive/done.jsonl")
    FOLDER.mkdir(parents=True, exist_ok=True)
    (FOLDER / "latest.jsonl").symlink_to(archived.resolve())
    before = archived.with_name("done.summary.json").read_bytes()
    code, _, err = call_cli("job.yaml", "--simulate", "--resume")
    assert code == ExitCode.USAGE and "no incomplete run of 'small' was found" in err, err
    assert archived.with_name("done.summary.json").read_bytes() == before


def sharded_night(endpoint: tuple[str, ...], name: str, shards: int = 2) -> list[Path]:
    """One night run as `shards` shards side by side, each with its own -o in the folder."""
    files = [FOLDER / f"{name}-s{k}.jsonl" for k in range(1, shards + 1)]
    for k, file in enumerate(files, 1):
        shard = ("--shard", f"{k}/{shards}", "--no-thresholds", "-o", str(file))
        code, _, err = call_cli("job.yaml", *endpoint, "-q", *shard)
        assert code == ExitCode.OK, err
    return files


def test_a_night_run_as_shards_stays_a_run_when_a_month_is_merged(in_tmp: Path) -> None:
    # verify52 F4: a merged file listing a shard hid it from the history, though the merge was a
    # month of nights (night 2 vanished, the month in its place); only a shards' own merge is their run.
    first = night()
    shards = sharded_night(("--simulate",), "n2")
    last = night()
    code, _, err = call_cli("merge", FOLDER / "month.jsonl", first, *shards, last, "--job", "job.yaml")
    assert code == ExitCode.OK and "in more than one file" in err
    # verify58 F4: without --job, whole runs and shards "disagreed on the shard count": exit 12.
    code, _, err = call_cli("merge", "month2.jsonl", first, *shards, last, "-q")
    assert code == ExitCode.OK, err
    assert json.loads(Path("month2.summary.json").read_text())["matrix_rows"] == 20
    code, out, err = call_cli("history", FOLDER, "--json")
    assert code == ExitCode.OK, err
    runs = sorted(Path(run["file"]).name for run in json.loads(out)["runs"])
    assert runs == sorted([first.name, *(s.name for s in shards), last.name, "month.jsonl"])


def test_plan_averages_the_merged_run_not_its_last_shard(in_tmp: Path, sim: Simulator) -> None:
    # verify52 F7: shards beside their merged file (the CI layout): the last shard to start was
    # "the previous run", one shard's rows averaged, its missing model without a figure.
    code, _, err = call_cli("job.yaml", "--base-url", sim.base_url, "-q")
    assert code == ExitCode.OK, err
    shards = sharded_night(("--base-url", sim.base_url), "tonight", shards=3)
    code, _, err = call_cli("merge", FOLDER / "merged.jsonl", *shards, "-q")
    assert code == ExitCode.OK, err
    code, out, err = call_cli("plan", "job.yaml", "--base-url", sim.base_url)
    assert code == ExitCode.OK and f"previous run: {FOLDER / 'merged.jsonl'} " in out, out + err


def test_a_run_stamped_ahead_of_now_is_never_the_most_recent(in_tmp: Path) -> None:
    # verify52 F8: a run written while the clock was 30 days fast was "the most recent incomplete
    # run" for 30 days: tonight's stopped run was never resumed.
    fast = killed(night("-o", str(FOLDER / "fast.jsonl")))
    text = fast.read_text()
    stamp = json.loads(text.splitlines()[0])["started_at"]
    fast.write_text(text.replace(stamp, "2099" + stamp[4:]))
    tonight = killed(night())
    assert f"resuming {tonight}, the most recent incomplete run of small" in resumed()


def test_a_complete_merged_file_keeps_the_matrix_and_the_spend_and_merges_again(in_tmp: Path) -> None:
    # break56 F5: its summary had no matrix_rows nor spent_usd: merged again (to fold a shard run
    # again into a night), the complete file was "no usable summary", exit 12.
    shards = sharded_night(("--simulate",), "n")
    spent = sum(json.loads(s.with_name(s.stem + ".summary.json").read_text())["spent_usd"] for s in shards)
    for how in (["--job", "job.yaml"], []):
        merged = FOLDER / f"m{len(how)}.jsonl"
        assert call_cli("merge", merged, *shards, *how, "-q")[0] == ExitCode.OK
        summary = json.loads(merged.with_name(merged.stem + ".summary.json").read_text())
        assert summary["matrix_rows"] == 20 and summary["complete"] is True
        assert summary["spent_usd"] == pytest.approx(spent, abs=1e-12)
        code, _, err = call_cli("merge", FOLDER / f"again{len(how)}.jsonl", merged, "-q")
        assert code == ExitCode.OK, err


def test_shards_resumed_after_an_edit_merge_as_the_job_now_is(in_tmp: Path) -> None:
    # break57 F2: resumed after a prompt was edited (the README's way to bring a run up to date),
    # each shard held rows of both versions: merge refused it for ever, "different jobs or job
    # versions", even with --job and alone; the only way out was to pay for every row again.
    shards = sharded_night(("--simulate",), "n")
    job = Path("job.yaml")
    job.write_text(job.read_text().replace("What is {{a}} + 1?", "What is {{a}} plus 1?"))
    for k, shard in enumerate(shards, 1):
        code, _, err = call_cli(
            "job.yaml", "--simulate", "-q", "--shard", f"{k}/2", "--no-thresholds", "-o", shard, "--resume"
        )
        assert code == ExitCode.OK, err
    code, _, err = call_cli("merge", "m.jsonl", *shards, "--job", "job.yaml", "-q")
    assert code == ExitCode.OK, err
    assert call_cli("report", "m.jsonl", "--job", "job.yaml")[0] == ExitCode.OK
    assert call_cli("merge", "alone.jsonl", shards[0], "-q", "--allow-partial")[0] == ExitCode.OK
    # Files whose newest rows answer different versions, without --job to judge them: refused.
    code, _, err = call_cli("job.yaml", "--simulate", "-q", "--shard", "2/2", "--no-thresholds", "-o", "old2.jsonl")
    job.write_text(job.read_text().replace("plus 1", "+ 1"))
    code, _, err = call_cli("job.yaml", "--simulate", "-q", "--shard", "1/2", "--no-thresholds", "-o", "new1.jsonl")
    code, _, err = call_cli("merge", "mixed.jsonl", "new1.jsonl", "old2.jsonl", "-q")
    assert code == ExitCode.USAGE and "the files come from different versions of job small" in err
    assert "give --job JOB.yaml" in err and not Path("mixed.jsonl").exists()


def test_a_killed_shard_is_resumed_by_its_own_shard_not_the_newest(in_tmp: Path) -> None:
    # verify58 F3: shards side by side with default outputs, both killed: `--resume --shard 2/2`
    # took shard 1's newer file (its records and no summary), and was refused, exit 2, every tick.
    files = []
    for shard in ("2/2", "1/2"):
        before = set(FOLDER.glob("*.jsonl")) if FOLDER.is_dir() else set()
        assert call_cli("job.yaml", "--simulate", "-q", "--shard", shard, "--no-thresholds")[0] == ExitCode.OK
        [made] = set(FOLDER.glob("*.jsonl")) - before
        files.append(killed(made))
    for shard, file in zip(("2/2", "1/2"), files, strict=True):
        code, _, err = call_cli("job.yaml", "--simulate", "--resume", "--shard", shard, "--no-thresholds")
        assert (
            code == ExitCode.OK and f"resuming {file}, the most recent incomplete run of small (shard {shard})" in err
        )
    assert call_cli("job.yaml", "--simulate", "--resume")[0] == ExitCode.USAGE  # no whole run to resume


def test_history_compares_a_shard_only_with_the_same_shard_and_a_whole_run_with_a_whole_one(in_tmp: Path) -> None:
    # verify58 F5: a night run as shards, kept as runs in a month's folder, was read against the
    # whole night before it: "pass rate fell 50.0% → 25.0%" for a shard holding a quarter of the rows.
    job = Path("job.yaml")
    job.write_text(job.read_text().replace("{country: Italy, expect: Rome}", "{country: Italy, expect: Milan}"))
    night()
    sharded_night(("--simulate",), "n2")
    job.write_text(job.read_text().replace("expect: Tokyo", "expect: Kyoto"))  # worse: a real fall
    last = night()
    code, out, err = call_cli("history", FOLDER, "--json")
    assert code == ExitCode.OK, err
    history = json.loads(out)
    shards = {run["label"] for run in history["runs"] if run["shard"]}
    assert len(shards) == 2 and not [m for m in history["markers"] if m["run"] in shards]
    falls = [m for m in history["markers"] if m["kind"] == "failing"]
    assert falls and {m["file"] for m in falls} == {str(last)}


def test_history_marks_a_night_that_is_not_whole(tmp_path: Path, small_job: Path) -> None:
    # break62 F1: a night merged from 1 of 2 shards, one whose failing records were deleted and
    # one killed before its summary read as normal nights (the second as a perfect one), exit 0
    # and no word, while `report` exits 12 on each. Each is now a change, said on stderr too.
    from batchrun._journal_file import journal_path

    nights = tmp_path / "nights"
    nights.mkdir()
    for name in ("a", "b", "d"):
        assert call_cli(small_job, "--simulate", "-o", nights / f"{name}.jsonl", "-q")[0] == ExitCode.OK
    lines = (nights / "b.jsonl").read_text().splitlines(keepends=True)
    (nights / "b.jsonl").write_text("".join(lines[3:]))  # three records deleted
    shard = tmp_path / "s1.jsonl"
    assert call_cli(small_job, "--simulate", "--shard", "1/2", "-o", shard, "-q")[0] == ExitCode.OK
    assert call_cli("merge", nights / "c.jsonl", shard, "--allow-partial", "-q")[0] == ExitCode.OK
    (nights / "d.summary.json").unlink()  # killed: no summary, its attempt journal left beside it
    journal_path(nights / "d.jsonl").write_bytes(b"")
    code, text, err = call_cli("history", nights)
    assert code == ExitCode.OK
    said = {line.split(": an incomplete run: ")[0].rsplit("/")[-1] for line in err.splitlines() if "incomplete" in line}
    assert said == {"b.jsonl", "c.jsonl", "d.jsonl"}, err
    assert "3 of the 20 row(s) its summary counts have no readable record" in text
    assert "a partial merge" in text and "killed before its summary" in text
    assert "a.jsonl" not in err
    # A stray line set aside in a night whose summary counts every row there is no missing row
    # (verify63 F8: "incomplete ... a row may be missing").
    with (nights / "a.jsonl").open("a") as night:
        night.write("{not a record\n")
    code, text, err = call_cli("history", nights)
    assert "a.jsonl:21: set aside" in err and "a.jsonl: an incomplete run" not in err
    # out-132 F4: a summary there that cannot be read, which `report` exits 12 on, was a normal night.
    (nights / "a.summary.json").write_text("{}")
    code, text, err = call_cli("history", nights)
    assert "a.jsonl: an incomplete run: not a summary (no run's counts (`total.rows`) in it)" in err, err
    # out-135 F2: a summary that names no file vouched for one with rows removed, not a word;
    # F1: one of another job's run read as a normal night, though `report` exits 12 on it.
    summary = json.loads((nights / "b.summary.json").read_text())
    del summary["output"]
    (nights / "a.summary.json").write_text(json.dumps(summary))
    summary = json.loads((nights / "b.summary.json").read_text())
    (nights / "b.summary.json").write_text(json.dumps({**summary, "job": "another"}))
    code, text, err = call_cli("history", nights)
    assert "a.jsonl: an incomplete run: not a summary (no `output` naming the file it was written for)" in err, err
    assert "b.jsonl: an incomplete run: its summary is of a run of job 'another'" in err, err
    for name in ("a", "b"):
        assert call_cli("report", nights / f"{name}.jsonl")[0] == ExitCode.INCOMPLETE


def test_a_resume_without_shard_names_the_shard_whose_run_is_incomplete(in_tmp: Path) -> None:
    # verify68 F7: "no incomplete run of 'small' was found; give --output", one there (shard 2/2).
    night("--shard", "1/2")
    code, _, err = call_cli("job.yaml", "--simulate", "-q", "--shard", "2/2", "--budget", "0.00002")
    assert code == ExitCode.BUDGET, err
    code, _, err = call_cli("job.yaml", "--simulate", "--resume")
    assert code == ExitCode.USAGE
    said = "no incomplete run of 'small' was found in outputs/small; shard run(s) 2/2 are: give --shard 2/2"
    assert f"{said}; or give --output" in err
    code, _, err = call_cli("job.yaml", "--simulate", "-q", "--resume", "--shard", "2/2")
    assert code == ExitCode.OK, err


def test_an_output_pattern_on_the_command_line_is_run_outputs(in_tmp: Path) -> None:
    # out-102 F4: `-o 'results/{name}-{timestamp}.jsonl'` was a file of that very name, and the
    # second night exit 2 on it; `{date}` was taken too, where run.output refuses it.
    pattern = "results/{name}-{timestamp}.jsonl"
    for _ in range(2):
        assert call_cli("job.yaml", "--simulate", "-q", "-o", pattern)[0] == ExitCode.OK
    made = sorted(p.name for p in Path("results").glob("*.jsonl"))
    assert len(made) == 2 and all(re.fullmatch(r"small-\d{8}T\d{6}\.\d{3}Z\.jsonl", name) for name in made)
    killed(Path("results") / made[-1])
    code, _, err = call_cli("job.yaml", "--simulate", "-o", pattern, "--resume")
    assert code == ExitCode.OK and f"resuming results/{made[-1]}, the most recent incomplete run" in err, err
    code, _, err = call_cli("job.yaml", "--simulate", "-q", "-o", "results/{date}.jsonl")
    assert code == ExitCode.USAGE and "the only placeholders are {name} and {timestamp}" in err
    assert len(err.splitlines()) == 1 and not list(Path("results").glob("{*"))


def test_a_tilde_on_the_command_line_is_the_home_folder_wherever_it_is(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # out-102 F3: `--output=~/r.jsonl` (no shell expansion after `=`) made a folder named `~`
    # here; `cache prune --dir=~/c` found no cache where `--cache=~/c` had written one, exit 0.
    home = in_tmp / "home"
    monkeypatch.setenv("HOME", str(home))
    assert call_cli("job.yaml", "--simulate", "-q", "--output=~/r.jsonl", "--cache=~/c")[0] == ExitCode.OK
    assert (home / "r.jsonl").is_file() and not Path("~").exists()
    code, out, _ = call_cli("cache", "stats", "--dir=~/c")
    assert code == ExitCode.OK and "entries: 20," in out, out
    code, out, _ = call_cli("report", "~/r.jsonl")
    assert code == ExitCode.OK and "TOTAL" in out
    # out-103 F3: `~name` of no user stays as typed, as the shell leaves it: it was a RuntimeError
    # traceback, exit 1, and a file named `~draft.jsonl` could not be named at all.
    Path("~draft.jsonl").write_bytes((home / "r.jsonl").read_bytes())
    code, out, err = call_cli("report", "~draft.jsonl")
    assert code == ExitCode.OK and "TOTAL" in out, err
    for args in (["validate", "~nosuchuser/j.yaml"], ["job.yaml", "--simulate", "--cache=~nosuchuser/c", "-q"]):
        code, _, err = call_cli(*args)
        assert "Traceback" not in err and "RuntimeError" not in err and code in (ExitCode.OK, ExitCode.USAGE), err


def test_retry_errors_without_output_takes_the_latest_run_though_it_is_complete(in_tmp: Path) -> None:
    # out-102 F8: a nightly whose rows ended in retryable errors (exit 1) is complete, so the
    # README's `--resume --retry-errors` found "no incomplete run", exit 2.
    code, _, err = call_cli("job.yaml", "--simulate", "-q", "--sim", "fault.500=0.5", "--max-attempts", "1")
    assert code == ExitCode.ERRORS, err
    [night] = FOLDER.glob("*.jsonl")
    assert json.loads(night.with_name(night.stem + ".summary.json").read_text())["complete"] is True
    # out-103 F2: nor a newer run answered otherwise (a try-out on another endpoint), nor a merge's output.
    assert call_cli("job.yaml", "--simulate", "-q")[0] == ExitCode.OK
    [tryout] = set(FOLDER.glob("*.jsonl")) - {night}
    summary = tryout.with_name(tryout.stem + ".summary.json")
    summary.write_text(
        summary.read_text().replace('"endpoint": "simulator"', '"endpoint": "https://openrouter.ai/api/v1"')
    )
    assert call_cli("merge", FOLDER / "zz-merged.jsonl", night, "-q")[0] == ExitCode.OK
    code, _, err = call_cli("job.yaml", "--simulate", "--resume", "--retry-errors")
    assert code == ExitCode.OK and f"resuming {night}, the most recent run of small" in err, err
    assert json.loads(night.with_name(night.stem + ".summary.json").read_text())["total"]["error"] == 0
    assert call_cli("job.yaml", "--simulate", "-q", "--resume")[0] == ExitCode.USAGE  # without: an incomplete one
    # out-105 F1: a newer clean run of the same endpoint is the latest: an older run's errors (a 400
    # no retry mends) were resumed every night, exit 1, "the most recent run".
    assert call_cli("job.yaml", "--simulate", "-q")[0] == ExitCode.OK
    [newest] = set(FOLDER.glob("*.jsonl")) - {night, tryout, FOLDER / "zz-merged.jsonl"}
    code, _, err = call_cli("job.yaml", "--simulate", "--resume", "--retry-errors")
    assert code == ExitCode.OK and f"resuming {newest}, the most recent run of small" in err, err


def test_resume_passes_over_a_run_answered_by_another_endpoint(in_tmp: Path) -> None:
    # out-106 F1: a --simulate try-out stopped before its end was "the most recent incomplete run",
    # finished against the endpoint, its made-up answers kept and its summary naming the endpoint.
    nightly = killed(night())
    summary = nightly.with_name(nightly.stem + ".summary.json")
    assert call_cli("job.yaml", "--simulate", "-q", "-o", nightly, "--resume")[0] == ExitCode.OK  # a summary again
    text = summary.read_text().replace('"complete": true', '"complete": false')
    summary.write_text(text.replace('"endpoint": "simulator"', '"endpoint": "https://openrouter.ai/api/v1"'))
    code, _, err = call_cli("job.yaml", "--simulate", "--resume")
    assert code == ExitCode.USAGE and "no incomplete run of 'small' was found" in err, err


@pytest.mark.parametrize("link", ["outputs", "run.output", "run.cache.dir"])
def test_a_jobs_paths_through_a_link_out_of_the_folder_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api_key_env: None, link: str
) -> None:
    # out-110 F1, out-108 F2: a pull request's links (the outputs folder, run.output, run.cache.dir)
    # sent the results, summary and cache anywhere the runner may write, exit 0, while pages
    # through such links were refused. A path named on the command line is the caller's.
    elsewhere, here = tmp_path / "elsewhere", tmp_path / "pr"
    elsewhere.mkdir()
    here.mkdir()
    monkeypatch.chdir(here)
    run = {"outputs": "", "run.output": "\nrun: {output: notes.jsonl}", "run.cache.dir": "\nrun: {cache: {dir: c}}"}
    write_job(here, SMALL_JOB.replace("\nrun: {", "\nrun_: {").split("\nrun_:")[0] + run[link])
    named = {"outputs": "outputs", "run.output": "notes.jsonl", "run.cache.dir": "c"}[link]
    os.symlink(elsewhere if link != "run.output" else elsewhere / "planted.jsonl", named)
    code, out, err = call_cli("job.yaml", "--simulate", "-q")
    assert code == ExitCode.USAGE and "outside the folder batchrun runs in" in err and not out
    assert not list(elsewhere.iterdir())  # nothing there, not even a lock
    own = ("--cache=mine",) if link == "run.cache.dir" else ("-o", "mine.jsonl")
    code, _, err = call_cli("job.yaml", "--simulate", "-q", *own)
    assert code == ExitCode.OK, err


def test_a_run_output_that_is_a_link_in_the_folder_keeps_its_files_beside_its_file(in_tmp: Path) -> None:
    # out-108 F1: the first run wrote its summary beside the link, the resume beside the file (and
    # took its lock there): the stale summary said "stopped (deadline)" after a clean resume.
    Path("real").mkdir()
    os.symlink("real/night.jsonl", "night.jsonl")
    job = Path("job.yaml").read_text().replace("run: {", "run: {output: night.jsonl, ")
    Path("job.yaml").write_text(job)
    code, _, err = call_cli("job.yaml", "--simulate", "-q")
    assert code == ExitCode.OK, err
    assert Path("real/night.summary.json").is_file() and not Path("night.summary.json").exists()
    code, _, err = call_cli("job.yaml", "--simulate", "-q", "--resume", "--retry-errors")
    assert code == ExitCode.OK, err
    assert not Path("night.summary.json").exists() and len(Path("real/night.jsonl").read_text().splitlines()) == 20


def test_a_new_run_beside_a_killed_one_says_so(in_tmp: Path) -> None:
    # out-108 F6: the next night after a kill -9 ran, exit 0, silent under --quiet, its killed
    # run's journal of attempts (maybe paid, recorded nowhere) beside it; only `history` said.
    first = killed(night())
    journal_path(first).write_text("")  # what a kill leaves: the journal a whole run removes
    code, _, err = call_cli("job.yaml", "--simulate", "-q")
    assert code == ExitCode.OK and err == (
        f"batchrun: warning: {first}: an earlier run of small left attempts no record holds (killed, or its "
        "writes failed; its attempt journal is there): --resume finishes it\n"
    )
    assert call_cli("job.yaml", "--simulate", "-q", "-o", "other.jsonl")[2] == ""  # its own file: no word


def test_a_run_refused_before_it_wrote_anything_leaves_no_folder_it_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # out-130 F11: an unknown model, exit 2, left `outputs/<job>/` behind, empty.
    monkeypatch.chdir(tmp_path)
    job = write_job(tmp_path, SMALL_JOB.replace("google/gemini-2.0-flash-001", "acme/not-a-model"))
    for output in ((), ("-o", "new/deeper/r.jsonl")):
        code, _, err = call_cli(job, "--simulate", "-q", *output)
        assert code == ExitCode.USAGE and "model(s) not offered by the endpoint" in err
        assert sorted(path.name for path in tmp_path.iterdir()) == ["job.yaml"]
    # A folder that was there stays, and one a run wrote into.
    (tmp_path / "kept").mkdir()
    assert call_cli(job, "--simulate", "-q", "-o", "kept/r.jsonl")[0] == ExitCode.USAGE and (tmp_path / "kept").is_dir()
    good = write_job(tmp_path, SMALL_JOB)
    assert call_cli(good, "--simulate", "-q")[0] == ExitCode.OK and any((tmp_path / "outputs").rglob("*.jsonl"))
