"""Tool-call checks, repeats with per-item gates and flaky items, noise-aware diff, JUnit XML."""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from batchrun import ExitCode, load_job
from batchrun._answer import Answer
from batchrun._checks import run_checks
from batchrun._items import ItemGate
from batchrun._judge import GraderSettings
from batchrun._junit import write_junit
from batchrun._matrix import checks_fingerprint
from batchrun._settings import RunSettings
from batchrun._stats import wilson_interval_of

from .conftest import FAKE_KEY, SMALL_JOB, TOOLS_JOB, call_cli, child_env, cli, read_rows, write_job

JUNIT_XSD = Path(__file__).parent / "schemas" / "JUnit.xsd"


def call(name: str, arguments: Any) -> dict[str, Any]:
    return {"id": "c1", "name": name, "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)}


def tool_verdict(check: dict[str, Any], *calls: dict[str, Any]) -> tuple[bool, str]:
    [result] = run_checks([check], Answer("", 10.0, 0.0, 1, "tool_calls", tuple(calls)))
    return result["pass"], result["reason"]


# -- tool_call --------------------------------------------------------------------------------
def test_tool_call_check() -> None:
    schema = {"type": "object", "required": ["city"], "properties": {"city": {"const": "Paris"}}}
    check = {"tool_call": {"name": "get_weather", "arguments": schema}}
    assert tool_verdict(check, call("get_weather", {"city": "Paris"}))[0] is True
    assert tool_verdict(check, call("search", {}), call("get_weather", {"city": "Paris"}))[0] is True
    passed, reason = tool_verdict(check, call("get_weather", {"city": "Lyon"}))
    assert passed is False and "get_weather" in reason and "Paris" in reason
    assert tool_verdict(check, call("get_weather", "{not json"))[1].endswith("(invalid JSON arguments)")
    assert tool_verdict(check)[1] == "expected a call of get_weather with arguments matching the schema, got no tool"
    assert tool_verdict({"tool_call": "get_weather"}, call("get_weather", {}))[0] is True
    # not: true with no name passes only when no tool at all is called.
    assert tool_verdict({"tool_call": {}, "not": True})[0] is True
    assert tool_verdict({"tool_call": {}, "not": True}, call("anything", {}))[0] is False


def test_a_call_without_a_name_or_with_no_arguments_is_not_taken_for_a_valid_one() -> None:
    # break54 F8: arguments "" or missing passed `arguments: {type: object}` (read as {}), and an
    # entry that is no call (kept as {id, name, arguments} all None) was "any call".
    typed = {"tool_call": {"name": "get_weather", "arguments": {"type": "object"}}}
    for arguments in ("", None, "  "):
        entry = {"id": "c1", "name": "get_weather", "arguments": arguments}
        passed, reason = tool_verdict(typed, entry)
        assert passed is False and reason.endswith("got get_weather (invalid JSON arguments)")
    assert tool_verdict(typed, call("get_weather", {}))[0] is True
    assert tool_verdict({"tool_call": {}}, {"id": None, "name": None, "arguments": None})[0] is False


async def test_client_parses_tool_calls_and_distrusts_them() -> None:
    from batchrun import OpenRouterClient

    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "echo", "arguments": {"key": FAKE_KEY}}},
            "garbage",
            {"function": {"name": 7, "arguments": "x" * 100_000}},
        ],
    }
    reply = {"id": "gen-1", "model": "m", "choices": [{"finish_reason": "tool_calls", "message": message}], "usage": {}}
    with respx.mock(using="httpx") as mock:
        mock.post("https://openrouter.test/api/v1/chat/completions").mock(return_value=httpx.Response(200, json=reply))
        async with OpenRouterClient("https://openrouter.test/api/v1", FAKE_KEY) as client:
            result = await client.chat({"model": "m", "messages": []})
    first, echoed, garbage, huge = result.tool_calls
    assert first == {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Oslo"}'}
    assert FAKE_KEY not in json.dumps(result.tool_calls) and "[key]" in echoed["arguments"]
    assert garbage == {"id": None, "name": None, "arguments": None}
    assert huge["name"] is None and len(huge["arguments"]) == 65536
    assert result.content == "" and result.finish_reason == "tool_calls"


def test_tools_run_on_the_simulator_and_calls_are_recorded(tmp_path: Path) -> None:
    job = write_job(tmp_path, TOOLS_JOB)
    out = tmp_path / "t.jsonl"
    result = cli(job, "--simulate", "-o", out)
    rows = {(r["prompt_id"], r["vars"]["country"]): r for r in read_rows(out)}
    france = rows[("weather", "France")]
    assert france["request"]["tools"][0]["function"]["name"] == "get_weather"
    assert france["finish_reason"] == "tool_calls" and france["content"] == ""
    [made] = france["tool_calls"]
    assert made["name"] == "get_weather" and json.loads(made["arguments"]) == {"city": "Paris"}
    assert france["passed"] is True
    chat = rows[("chat", "France")]
    assert chat["tool_calls"] is None and chat["passed"] is True and chat["content"]
    assert result.returncode == ExitCode.OK, result.stdout + result.stderr


def test_streamed_tool_calls_are_joined_like_a_plain_reply(tmp_path: Path) -> None:
    """Streaming mode: tool-call deltas (name first, arguments in pieces) make the same
    record as a non-streamed answer's."""
    job = write_job(tmp_path, TOOLS_JOB)
    plain, streamed = tmp_path / "p.jsonl", tmp_path / "s.jsonl"
    assert cli(job, "--simulate", "-o", plain).returncode == ExitCode.OK
    result = cli(job, "--simulate", "--stream", "-o", streamed)
    assert result.returncode == ExitCode.OK, result.stderr
    by_id = {r["id"]: r for r in read_rows(plain)}
    rows = read_rows(streamed)
    assert sum(bool(r["tool_calls"]) for r in rows) == 2
    for row in rows:
        assert row["ttft_ms"] is not None  # it really streamed
        before = by_id[row["id"]]
        assert row["tool_calls"] == before["tool_calls"] and row["passed"] == before["passed"]
        assert row["finish_reason"] == before["finish_reason"]


def test_validate_refuses_a_bad_tool_call_check(tmp_path: Path) -> None:
    job = write_job(tmp_path, TOOLS_JOB.replace("arguments: {type: object", "arguments: {type: 12"))
    code, _, err = call_cli("validate", job)
    assert code == ExitCode.USAGE and "tool_call arguments is not a valid JSON Schema" in err


def test_a_negated_tool_call_check_of_a_function_another_prompt_offers_is_a_guard(tmp_path: Path) -> None:
    """Under `not`, only a name no tool of the job declares is refused (it could only pass); a
    guard against a function another prompt offers is kept. A row's own check is held to the same."""
    text = (
        "name: guard\nmodels: [openai/gpt-4o-mini]\nprompts:\n"
        "  - {id: a, text: hi, params: {tools: [{type: function, function: {name: delete_file}}]}}\n"
        "  - {id: b, text: hi, checks: [{tool_call: delete_file, not: true}]}\n"
    )
    code, out, err = call_cli("validate", write_job(tmp_path, text))
    assert (code, err) == (0, "") and ": ok (job guard)" in out
    code, _, err = call_cli("validate", write_job(tmp_path, text.replace("delete_file, not", "delete_files, not")))
    assert code == ExitCode.USAGE and "names function 'delete_files', which no tool of this job declares" in err
    # Declared only by default tools that every prompt's own replace: never sent, as good as none.
    unsent = text.replace("models:", "defaults: {params: {tools: [{type: function, function: {name: rm}}]}}\nmodels:")
    unsent = unsent.replace(
        "{id: b, text: hi, checks: [{tool_call: delete_file",
        "{id: b, text: hi, params: {tools: []}, checks: [{tool_call: rm",
    )
    code, _, err = call_cli("validate", write_job(tmp_path, unsent))
    assert code == ExitCode.USAGE and "names function 'rm', which no tool of this job declares (delete_file)" in err
    row = text.replace(
        "checks: [{tool_call: delete_file, not: true}]", "vars: [{checks: [{tool_call: rm, not: true}]}]"
    )
    code, _, err = call_cli("validate", write_job(tmp_path, row))
    assert code == ExitCode.USAGE and "$.prompts[1].vars[0] checks[0].tool_call: names function 'rm', which no" in err


# -- repeats ----------------------------------------------------------------------------------
REPEAT_JOB = """
name: repeated
defaults: {params: {max_tokens: 32, temperature: 0.7}}
models: [meta-llama/llama-3.1-8b-instruct]
prompts:
  - id: capital
    text: "What is the capital of {{country}}?"
    vars: [{country: France, expect: Paris}, {country: Japan, expect: Tokyo}, {country: Italy, expect: Rome},
           {country: Spain, expect: Madrid}]
    checks: [{contains: "{{expect}}"}]
repeat: 10
run: {concurrency: 4, pass_threshold: {per_item: {min: 8, of: 10}}}
"""


def test_repeats_gate_items_and_list_flaky_ones(tmp_path: Path) -> None:
    job = write_job(tmp_path, REPEAT_JOB)
    out, step = tmp_path / "r.jsonl", tmp_path / "step.md"
    result = cli(job, "--simulate", "-o", out, env=child_env(GITHUB_STEP_SUMMARY=str(step)))
    rows = read_rows(out)
    assert len(rows) == 40
    tallies: dict[str, list[int]] = {}
    for row in rows:
        tallies.setdefault(row["vars"]["country"], []).append(int(row["passed"]))
    # Sampling at temperature 0.7: the simulated model (60% right) disagrees with itself.
    flaky = {c for c, t in tallies.items() if 0 < sum(t) < len(t)}
    failing = {c for c, t in tallies.items() if sum(t) < 8}
    assert flaky and failing
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    items = summary["items"]
    assert items["count"] == 4 and items["gate"] == {"min": 8, "of": 10}
    assert items["failed"] == len(failing) and items["flaky_count"] == len(flaky)
    assert {i["vars"]["country"] for i in items["flaky"]} == flaky
    passed = sum(sum(t) for t in tallies.values())
    low, high = summary["total"]["pass_rate_ci95"]
    assert low < passed / 40 < high and summary["total"]["pass_rate"] == passed / 40
    assert result.returncode == ExitCode.QUALITY
    assert f"{len(failing)} item(s) passed fewer than 8 of 10 repeats" in result.stderr
    assert "flaky" in result.stdout and "pass [95% CI]" in result.stdout
    # The step summary carries the same interval and the flaky list.
    shown = f"{passed / 40 * 100:.1f}% [{low * 100:.1f}-{high * 100:.1f}]"
    assert shown in result.stdout and shown in step.read_text() and "flaky" in step.read_text()


def test_report_without_the_job_judges_items_by_the_runs_gate(tmp_path: Path) -> None:
    # verify23 N6: `report --junit` without the job judged items by "every repeat must pass",
    # so an item the run's per_item gate (3 of 4) passed was a red test case.
    out = synthetic(tmp_path / "r.jsonl", {"m": 1.0}, 4, seed=6, items=2)
    rows = read_rows(out)
    rows[0].update(passed=False, checks=[{"name": "c", "pass": False, "reason": "wrong", "weight": 1}], score=0.0)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))  # item 0: 3 of 4
    summary = {"job": "j", "items": {"gate": {"min": 3, "of": 4}}, "total": {"rows": len(rows)}, "output": str(out)}
    (tmp_path / "r.summary.json").write_text(json.dumps(summary))
    code, text, _ = call_cli("report", out, "--json", "--junit", tmp_path / "j.xml")
    assert code == ExitCode.OK and json.loads(text)["items"]["failed"] == 0
    assert 'failures="0"' in (tmp_path / "j.xml").read_text()
    (tmp_path / "r.summary.json").unlink()  # no gate recorded: every repeat must pass
    code, text, _ = call_cli("report", out, "--json", "--junit", tmp_path / "j.xml")
    assert json.loads(text)["items"]["failed"] == 1 and 'failures="1"' in (tmp_path / "j.xml").read_text()


def test_a_merge_judges_items_by_the_jobs_per_item_gate_or_the_one_its_shards_record(tmp_path: Path) -> None:
    # break68 F1: merge built its summary with no gate: the merged summary, its report and JUnit
    # failed items on "every repeat must pass" (141) that the job's gate passed (95 failed).
    job = write_job(tmp_path, REPEAT_JOB.replace("min: 8", "min: 5"))
    shards = [tmp_path / f"s{k}.jsonl" for k in (1, 2)]
    for k, shard in enumerate(shards, 1):
        assert call_cli(job, "--simulate", "-q", "--no-thresholds", "--shard", f"{k}/2", "-o", shard)[0] == 0
    tallies: dict[str, list[bool]] = {}
    for row in (r for shard in shards for r in read_rows(shard)):
        tallies.setdefault(row["vars"]["country"], []).append(row["passed"])
    failing = sum(sum(t) < 5 for t in tallies.values())
    assert failing < sum(not all(t) for t in tallies.values())  # the two gates tell apart here
    given: list[tuple[str, list[str | Path]]] = [("with_job.jsonl", ["--job", job]), ("from_shards.jsonl", [])]
    # One shard's summary lost: the gate the others record stands (verify69 F9: every repeat must pass).
    given.append(("one_summary_lost.jsonl", []))
    for name, extra in given:
        merged = tmp_path / name
        if name == "one_summary_lost.jsonl":
            shards[0].with_suffix(".summary.json").unlink()
            extra = ["--allow-partial"]  # no summary, no job: the merge cannot tell it whole
        assert call_cli("merge", "-q", "-o", merged, *shards, *extra)[0] == 0
        items = json.loads(merged.with_suffix(".summary.json").read_text())["items"]
        assert items["gate"] == {"min": 5, "of": 10} and items["failed"] == failing, name
        code, text, _ = call_cli("report", merged, "--json", "--junit", tmp_path / "j.xml")
        assert json.loads(text)["items"]["failed"] == failing
        assert f'failures="{failing}"' in (tmp_path / "j.xml").read_text()


def test_a_shard_holds_every_repeat_of_its_items_and_gates_them(tmp_path: Path) -> None:
    # out-136 F4: shards split by request id spread an item's repeats over every shard: each
    # shard's per-item gate was "could not be checked", exit 1, on every shard of every night.
    job = write_job(tmp_path, REPEAT_JOB.replace("min: 8", "min: 1"))
    owners: dict[str, set[int]] = {}
    for k in (1, 2):
        shard = tmp_path / f"s{k}.jsonl"
        code, _, err = call_cli(job, "--simulate", "-q", "--shard", f"{k}/2", "-o", shard)
        assert code == ExitCode.OK and "could not be checked" not in err, err
        rows = read_rows(shard)
        items = json.loads(shard.with_suffix(".summary.json").read_text())["items"]
        assert items["undecided"] == 0 and items["count"] * 10 == len(rows), items
        for row in rows:
            owners.setdefault(row["vars"]["country"], set()).add(k)
    assert len(owners) == 4 and all(len(shards) == 1 for shards in owners.values()), owners
    # A shard file whose rows are another shard's (as one an earlier batchrun wrote, which split
    # an item's repeats) is said to be so on resume, not "the job changed".
    lines = (tmp_path / "s1.jsonl").read_text().replace('"shard":"1/2"', '"shard":"2/2"')
    (tmp_path / "old.jsonl").write_text(lines)
    code, _, err = call_cli(job, "--simulate", "-q", "--shard", "2/2", "-o", tmp_path / "old.jsonl", "--resume")
    assert code == ExitCode.USAGE and "they are another shard's of this job" in err, err


def test_item_gate_with_ungraded_repeats() -> None:
    gate = ItemGate(8, 10)
    assert gate.verdict(8, 9, 10) is True  # already 8
    assert gate.verdict(6, 8, 10) is None  # 2 missing could still make 8
    assert gate.verdict(5, 8, 10) is False  # cannot reach 8
    assert gate.verdict(0, 0, 10) is None
    assert ItemGate().verdict(3, 3, 3) is True and ItemGate().verdict(2, 3, 3) is False
    # Every repeat must pass: 2 passes of 2 graded with 3 repeats not graded is not a pass
    # (break23 F2), and a graded failure fails whatever was not graded.
    assert ItemGate().verdict(2, 2, 5) is None and ItemGate().verdict(1, 2, 5) is False
    # A summary's recorded gate is read only when it is one (a hand edit, another tool's file).
    assert ItemGate.recorded({"items": {"gate": {"min": 3, "of": 4}}}) == ItemGate(3, 4)
    recorded: list[Any] = [{"min": True, "of": 4}, {"min": "3", "of": 4}, {"min": 5, "of": 4}, [3, 4], None]
    for wrong in recorded:
        assert ItemGate.recorded({"items": {"gate": wrong}}) == ItemGate(), wrong
    assert ItemGate.recorded({"items": "x"}) == ItemGate() == ItemGate.recorded({})


@pytest.mark.parametrize(
    ("gate", "repeat", "message"),
    [
        ("{min: 8, of: 12}", 10, "of 12 is more than repeat 10"),
        # break31 M5: `of` below repeat was taken and ignored: {min: 3, of: 3} passed 3 of 5.
        ("{min: 3, of: 3}", 5, "of 3 is less than repeat 5: an item is judged on all its repeats; write of: 5"),
        ("{min: 11, of: 10}", 10, "per_item min 11 is more than of 10"),
        # The message of the per_item branch, not "... is not of type 'number'" (the rate branch).
        ("{min: 0, of: 10}", 10, "$.run.pass_threshold.per_item.min 0 is less than the minimum of 1"),
        ("{min: 1.5, of: 10}", 10, "$.run.pass_threshold.per_item.min 1.5 is not of type 'integer'"),
        ("{min: 8, of: 10}", 0, "$.repeat 0 is less than the minimum of 1"),
        # break54 F7: validated, then ignored by the run (exit 0) and applied by report --job (3).
        ("{min: 1, of: 1}", 1, "per_item judges an item on its repeats: it needs repeat 2 or more"),
    ],
)
def test_validate_refuses_an_unreachable_item_gate(tmp_path: Path, gate: str, repeat: int, message: str) -> None:
    text = REPEAT_JOB.replace("{min: 8, of: 10}", gate).replace("repeat: 10", f"repeat: {repeat}")
    code, _, err = call_cli("validate", write_job(tmp_path, text))
    assert code == ExitCode.USAGE and message in err and err.count("\n") == 1, err


# -- diff -------------------------------------------------------------------------------------
def synthetic(path: Path, rates: dict[str, float], repeats: int, seed: int, items: int = 30) -> Path:
    """A results file: per model, `items` questions x `repeats`, each passing with its rate."""
    rng = random.Random(seed)
    lines = []
    for model, rate in rates.items():
        for item in range(items):
            for repeat in range(repeats):
                passed = rng.random() < rate
                record = {
                    "id": f"{model}-{item}-{repeat}",
                    "fingerprint": "f",
                    "status": "ok",
                    "reason": None,
                    "retryable": False,
                    "cost": 0.0,
                    "job": "j",
                    "model": model,
                    "prompt_id": "p",
                    "vars": {"q": item},
                    "repeat": repeat,
                    "checks": [{"name": "c", "pass": passed, "reason": "" if passed else "wrong", "weight": 1}],
                    "passed": passed,
                    "score": float(passed),
                }
                lines.append(json.dumps(record) + "\n")
    path.write_text("".join(lines))
    return path


def failing(source: Path, path: Path, fails: Callable[[int], bool]) -> Path:
    """`source`'s rows written to `path`, failing those whose question number `fails`."""
    rows = read_rows(source)
    for row in rows:
        if fails(row["vars"]["q"]):
            row["passed"] = False
            row["checks"][0]["pass"] = False
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_diff_tells_a_real_drop_from_noise(tmp_path: Path) -> None:
    before = synthetic(tmp_path / "a.jsonl", {"steady": 0.8, "broken": 0.9}, 3, seed=1)
    after = synthetic(tmp_path / "b.jsonl", {"steady": 0.8, "broken": 0.5}, 3, seed=2)
    code, text, _ = call_cli("diff", before, after, "--json", "--fail-on-regression")
    diff = json.loads(text)
    steady, broken = diff["models_pass_rate"]["steady"], diff["models_pass_rate"]["broken"]
    assert broken["significant"] is True and broken["p_value"] < 0.001
    assert steady["significant"] is False and steady["p_value"] > 0.05
    assert diff["flips"]["pass_to_fail"]  # noise flips rows of the steady model too ...
    assert not [i for i in diff["item_flips"]["pass_to_fail"] if i["model"] == "steady"]  # ... not whole items
    assert code == ExitCode.REGRESSION and diff["significant_drops"] == ["total", "model broken", "prompt p"]
    code, text, _ = call_cli("diff", before, after)
    line = next(line for line in text.splitlines() if line.startswith("model broken: "))
    assert line.endswith(", significant)") and "(paired items, p=" in line  # 3 repeats: an item is one unit
    assert broken["test"] == "exact sign test (paired items, repeats pooled)" and broken["rows_paired"] == 30


def test_repeats_of_one_item_are_one_unit_in_the_interval_and_the_diff(tmp_path: Path) -> None:
    # break61 F3: the same 10 items at temperature 0, `repeat: 10`: the interval narrowed from
    # 80% [49-94] to [71-87], and one item of ten going wrong (its 10 repeats) was "a significant
    # drop", p=0.002, exit 4, where one item is p=1. Repeats of an item are not independent rows.
    once = synthetic(tmp_path / "once.jsonl", {"m": 1.0}, 1, seed=1, items=10)
    tenfold = synthetic(tmp_path / "ten.jsonl", {"m": 1.0}, 10, seed=1, items=10)
    for path in (once, tenfold):
        failing(path, path, lambda q: q < 2)  # items 0 and 1 fail every repeat: 80%
    low, high = json.loads(call_cli("report", once, "--json")[1])["total"]["pass_rate_ci95"]
    assert (round(low, 3), round(high, 3)) == (0.49, 0.943)  # Wilson on 8 of 10
    total = json.loads(call_cli("report", tenfold, "--json")[1])["total"]
    assert total["pass_rate"] == 0.8 and total["pass_rate_ci95"] == [round(low, 6), round(high, 6)]
    worse = failing(tenfold, tmp_path / "worse.jsonl", lambda q: q < 3)  # one more item fails
    code, text, _ = call_cli("diff", tenfold, worse, "--json", "--fail-on-regression")
    diff = json.loads(text)
    rate = diff["pass_rate"]
    assert (rate["before"], rate["after"], rate["p_value"], rate["significant"]) == (0.8, 0.7, 1.0, False)
    # No significant drop, as with one repeat (one item of ten); exit 4 is the item rule's alone:
    # an item that passed every repeat and now fails every one.
    assert diff["significant_drops"] == [] and len(diff["item_flips"]["pass_to_fail"]) == 1
    assert code == ExitCode.REGRESSION
    assert call_cli("diff", once, failing(once, tmp_path / "w1.jsonl", lambda q: q < 3))[0] == ExitCode.OK
    # The trials are the items, the rate the rows' (verify65 F4: an effective number of trials
    # from the design effect read 100 of 100 as [72-100] and 99 of 100 as [94.5-99.8]).
    mixed = read_rows(synthetic(tmp_path / "mixed.jsonl", {"m": 0.8}, 10, seed=5, items=10))
    passed = sum(r["passed"] for r in mixed)
    items = [round(bound, 6) for bound in wilson_interval_of(passed / 100, 10)]
    assert json.loads(call_cli("report", tmp_path / "mixed.jsonl", "--json")[1])["total"]["pass_rate_ci95"] == items
    perfect = synthetic(tmp_path / "perfect.jsonl", {"m": 1.0}, 10, seed=1, items=10)
    rows = read_rows(perfect)
    rows[0].update(passed=False, checks=[{**rows[0]["checks"][0], "pass": False, "reason": "wrong"}])
    one_off = tmp_path / "one_off.jsonl"
    one_off.write_text("".join(json.dumps(r) + "\n" for r in rows))
    best, less = (json.loads(call_cli("report", f, "--json")[1])["total"]["pass_rate_ci95"] for f in (perfect, one_off))
    assert less[0] <= best[0] and less[1] <= best[1]  # one failing repeat never makes it surer


def test_items_in_one_run_only_are_compared_as_items_not_as_their_repeats(tmp_path: Path) -> None:
    # verify65 F3: item 9's variables renamed in the second run (a dataset row edited), passing
    # 4 of its 10 repeats: Fisher's test on its rows, 10/10 against 4/10, made p=0.02, exit 4.
    before = synthetic(tmp_path / "a.jsonl", {"m": 1.0}, 10, seed=1, items=10)
    rows = read_rows(before)
    for row in rows:
        if row["vars"]["q"] == 9:
            row.update(id="renamed-" + row["id"], vars={"q": 99})
            if row["repeat"] >= 4:
                _with_checks(row, False, False)
    after = tmp_path / "b.jsonl"
    after.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, text, _ = call_cli("diff", before, after, "--json", "--fail-on-regression")
    rate = json.loads(text)["pass_rate"]
    assert rate["test"].endswith("(items in one run only), Bonferroni") and rate["p_value"] == 1.0
    assert code == ExitCode.OK and not rate["dropped"]
    # No item in common: the two runs' items, each item once (94 of 100 rows is 9 of 10 items,
    # p=1; as rows, p=0.03).
    disjoint = [{**r, "id": "new-" + r["id"], "vars": {"q": r["vars"]["q"] + 100}} for r in rows]
    other = tmp_path / "c.jsonl"
    other.write_text("".join(json.dumps(r) + "\n" for r in disjoint))
    rate = json.loads(call_cli("diff", before, other, "--json")[1])["pass_rate"]
    assert rate["test"] == "Fisher's exact test (items, repeats pooled)" and rate["p_value"] == 1.0
    assert "(items, p=1, not significant)" in call_cli("diff", before, other)[1]


@pytest.mark.parametrize("lost", ["failed", "undecided"])
def test_repeats_without_a_verdict_count_in_the_paired_tests_own_units(tmp_path: Path, lost: str) -> None:
    # verify65 F1: six of one item's repeats failing was one item falling, p=1, exit 0; the same
    # six undecided were added, as rows, to a count of items: "a significant drop", exit 4.
    before = synthetic(tmp_path / "a.jsonl", {"m": 1.0}, 10, seed=1, items=10)
    rows = read_rows(before)
    for row in rows:
        if row["vars"]["q"] == 0 and row["repeat"] < 6:
            _with_checks(row, False if lost == "failed" else None, False if lost == "failed" else None)
    after = tmp_path / "b.jsonl"
    after.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, text, _ = call_cli("diff", before, after, "--json", "--fail-on-regression")
    diff = json.loads(text)
    assert diff["rows"]["missing_decide"] is None and diff["significant_drops"] == [], diff["rows"]
    assert code == ExitCode.OK


def test_noise_alone_is_not_a_regression_unless_strict(tmp_path: Path) -> None:
    before = synthetic(tmp_path / "a.jsonl", {"m": 0.8}, 1, seed=3)
    after = synthetic(tmp_path / "b.jsonl", {"m": 0.8}, 1, seed=4)
    code, text, _ = call_cli("diff", before, after, "--json", "--fail-on-regression")
    diff = json.loads(text)
    assert diff["flips"]["pass_to_fail"] and not diff["significant_drops"]
    assert code == ExitCode.OK
    assert call_cli("diff", before, after, "--fail-on-regression", "--strict")[0] == ExitCode.REGRESSION
    code, out, err = call_cli("diff", before, after, "--strict")  # break27 m10: taken, and nothing failed
    assert code == ExitCode.USAGE and out == "" and "--strict: only with --fail-on-regression" in err
    # A looser level can call the same change significant: the level is the user's.
    assert diff["test"]["alpha"] == 0.05 and "McNemar" in diff["test"]["name"]
    assert diff["pass_rate"]["test"] == "McNemar's exact test (paired rows)"  # the same rows in both runs


@pytest.mark.parametrize("lost", ["undecided", "skipped"])
def test_a_model_that_stopped_getting_verdicts_is_a_regression(tmp_path: Path, lost: str) -> None:
    # break23 F10: a model at 100% whose rows were all undecided (a grader outage) or all
    # skipped next time passed --fail-on-regression --strict, exit 0, the model not named.
    before = synthetic(tmp_path / "a.jsonl", {"kept": 0.9, "lost": 1.0}, 1, seed=8, items=20)
    rows = read_rows(before)
    for row in rows:
        if row["model"] != "lost":
            continue
        row["passed"] = None
        row.pop("score")
        if lost == "undecided":
            row["checks"] = [{"name": "c", "pass": None, "reason": "", "weight": 1, "error": "grader x: server_error"}]
        else:
            row.update(status="skipped", reason="crashed", checks=[])
    after = tmp_path / "b.jsonl"
    after.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, text, _ = call_cli("diff", before, after, "--json", "--fail-on-regression")
    diff = json.loads(text)
    assert code == ExitCode.REGRESSION and diff["models"]["lost"]["stopped_grading"] is True
    assert diff["models"]["kept"]["stopped_grading"] is False and not diff["significant_drops"]
    assert len(diff["flips"]["pass_to_ungraded"]) == 20 and not diff["flips"]["pass_to_fail"]
    reason = "undecided: grader x: server_error" if lost == "undecided" else "skipped: crashed"
    assert {f["why"] for f in diff["flips"]["pass_to_ungraded"]} == {reason}
    text = call_cli("diff", before, after)[1]
    assert "model lost: no passing row graded (every row that could pass undecided, errored or skipped)" in text
    assert "pass -> no verdict: 20 row(s)" in text


def test_a_grader_outage_beside_rows_that_fail_another_check_is_a_regression(tmp_path: Path) -> None:
    # verify65 F2: 3 passing rows lost their grader, 2 rows still failed another check: now
    # graded as failed, they kept the model "graded", and diff said "60.0% -> 0.0%, p=1", exit 0
    # (the same outage in a file whose rows were all undecided: "no row graded", exit 4).
    before = synthetic(tmp_path / "a.jsonl", {"m": 1.0}, 1, seed=1, items=5)
    rows = read_rows(before)
    for row in rows[:2]:
        _with_checks(row, False, False)  # failing a check in both runs
    before.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for row in rows:
        passing = row["passed"] is not False
        _with_checks(row, None if passing else False, None if passing else False, None)
    after = tmp_path / "b.jsonl"
    after.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, text, _ = call_cli("diff", before, after, "--json", "--fail-on-regression")
    diff = json.loads(text)
    assert diff["models"]["m"]["stopped_grading"] is True and code == ExitCode.REGRESSION


def test_strict_counts_a_row_that_lost_its_verdict(tmp_path: Path) -> None:
    before = synthetic(tmp_path / "a.jsonl", {"m": 1.0}, 1, seed=9, items=20)
    rows = read_rows(before)
    rows[3].update(status="error", reason="timeout", passed=None, checks=[], error={"message": "slow"})
    after = tmp_path / "b.jsonl"
    after.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert call_cli("diff", before, after, "--fail-on-regression")[0] == ExitCode.REGRESSION  # started erroring
    rows[3].update(status="skipped", reason="budget", error=None)
    after.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert call_cli("diff", before, after, "--fail-on-regression")[0] == ExitCode.OK  # one row is noise ...
    assert (
        call_cli("diff", before, after, "--fail-on-regression", "--strict")[0] == ExitCode.REGRESSION
    )  # ... not to --strict


def test_diff_pairs_the_same_rows_and_falls_back_to_fisher(tmp_path: Path) -> None:
    """The same 100 rows, 8 of the 90 passing ones now fail and none recovers: 90% -> 82%.
    Counted as unrelated samples that is noise (Fisher p ~ 0.13); row by row it is eight
    flips one way (McNemar p = 2/256), a regression. Runs with no row in common (another
    dataset) are two samples, and Fisher's test decides."""
    all_pass = synthetic(tmp_path / "all.jsonl", {"m": 1.0}, 1, seed=1, items=100)
    before = failing(all_pass, tmp_path / "a.jsonl", lambda q: q < 10)
    after = failing(before, tmp_path / "b.jsonl", lambda q: 10 <= q < 18)
    rows = read_rows(after)
    code, text, _ = call_cli("diff", before, after, "--json", "--fail-on-regression")
    diff = json.loads(text)
    total = diff["pass_rate"]
    assert (total["before"], total["after"]) == (0.9, 0.82)
    assert total["test"] == "McNemar's exact test (paired rows)" and total["p_value"] == 0.007813
    assert code == ExitCode.REGRESSION and "total" in diff["significant_drops"]
    assert "paired p=0.00781, significant" in call_cli("diff", before, after)[1]
    # One row gone from the second run: the 99 rows both graded still pair (break27 M4).
    partial = tmp_path / "c.jsonl"
    partial.write_text("".join(json.dumps(r) + "\n" for r in rows[1:]))
    code, text, _ = call_cli("diff", before, partial, "--json", "--fail-on-regression")
    diff = json.loads(text)
    assert diff["pass_rate"]["test"] == "McNemar's exact test (paired rows)"
    assert diff["pass_rate"]["rows_paired"] == 99 and diff["pass_rate"]["significant"] is True
    assert diff["rows"] == {
        "before": 100,
        "after": 99,
        "only_before": 1,
        "only_after": 0,
        "passes_without_verdict": 0,
        "requests_changed": 0,
        "job_edited": 0,
        "cached_after": 0,
        "replayed": 0,
        "missing_decide": None,
    }
    assert diff["rows_missing"] is False and code == ExitCode.REGRESSION  # the drop itself
    assert "1 only in the first run, 0 only in the second" in call_cli("diff", before, partial)[1]
    # No row in common (another dataset, run whole: its summary says so): two samples, Fisher's
    # test decides, and rows that differ on both sides are said but are no regression without
    # --strict. Without the summary the rows gone would count as lost.
    other = tmp_path / "d.jsonl"
    other.write_text("".join(json.dumps({**r, "id": r["id"][::-1]}) + "\n" for r in rows))
    (tmp_path / "d.summary.json").write_text(json.dumps({"complete": True, "shard": None, "matrix_rows": len(rows)}))
    code, text, _ = call_cli("diff", before, other, "--json", "--fail-on-regression")
    diff = json.loads(text)
    assert diff["pass_rate"]["test"] == "Fisher's exact test" and diff["pass_rate"]["significant"] is False
    assert diff["rows_missing"] is False and code == ExitCode.OK
    code, text, _ = call_cli("diff", before, other, "--json", "--fail-on-regression", "--strict")
    assert json.loads(text)["rows_missing"] is True and code == ExitCode.REGRESSION
    # break31 m4: the reason was "counted as failures they would make a significant drop".
    said = call_cli("diff", before, other, "--fail-on-regression", "--strict")[1]
    assert "with --strict, rows of the first run that the second lacks are a regression" in said
    assert "significant drop" not in said
    # break31 m3: rows asked another request (an edited prompt) were compared without a word.
    edited = tmp_path / "e.jsonl"
    edited.write_text(
        "".join(json.dumps({**r, "fingerprint": "0" * 20} if i < 30 else r) + "\n" for i, r in enumerate(rows))
    )
    code, text, _ = call_cli("diff", before, edited, "--json")
    assert json.loads(text)["rows"]["requests_changed"] == 30
    assert "30 row(s) of both runs asked another request in the second" in call_cli("diff", before, edited)[1]


@pytest.mark.parametrize("alpha", ["0", "1", "nan"])
def test_a_significance_level_outside_0_to_1_is_refused(tmp_path: Path, alpha: str) -> None:
    """`--alpha 0` would make every drop "not significant", so the gate could never fail."""
    before = synthetic(tmp_path / "a.jsonl", {"m": 0.8}, 1, seed=3)
    result = cli("diff", before, before, "--alpha", alpha, "--fail-on-regression")
    assert result.returncode == ExitCode.USAGE and result.stdout == "", result.stderr
    assert "--alpha" in result.stderr and "Traceback" not in result.stderr


def test_an_item_flip_consistent_across_repeats_fails_the_gate(tmp_path: Path) -> None:
    before = synthetic(tmp_path / "a.jsonl", {"m": 1.0}, 5, seed=5, items=40)
    # One item fails all 5 repeats now; the rate change alone is not significant.
    after = failing(before, tmp_path / "b.jsonl", lambda q: q == 7)
    code, text, _ = call_cli("diff", before, after, "--json", "--fail-on-regression")
    diff = json.loads(text)
    assert not diff["significant_drops"]
    flip = {"model": "m", "prompt_id": "p", "vars": {"q": 7}, "before": "5/5", "after": "0/5"}
    assert diff["item_flips"]["pass_to_fail"] == [flip]  # with its variables: which item (break43 F2)
    assert code == ExitCode.REGRESSION
    assert "  m / p [q=7]: 5/5 -> 0/5" in call_cli("diff", before, after)[1]
    assert "- m / p [q=7]: 5/5 -&gt; 0/5" in call_cli("diff", before, after, "--markdown")[1]  # text, not HTML


# -- JUnit ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def junit_schema() -> Any:
    """The JUnit XSD, compiled once; xmlschema (~0.3 s to import) loads only where it is used."""
    import xmlschema

    return xmlschema.XMLSchema(JUNIT_XSD)


def test_a_drop_in_rows_new_to_the_second_run_is_not_hidden_by_the_few_rows_kept(tmp_path: Path) -> None:
    # break43 F1: 16/16 -> 2/16 with 2 rows kept (passing both times) and 14 renamed (failing):
    # the paired test on the 2 kept rows gave p=1, "not significant", exit 0. With no row kept
    # the same drop was p=5e-07, exit 4.
    rows = read_rows(synthetic(tmp_path / "a.jsonl", {"m": 1.0}, 1, seed=1, items=16))
    renamed = [r if r["vars"]["q"] < 2 else {**r, "id": r["id"] + "-new"} for r in rows]
    wrong = [{"name": "c", "pass": False, "reason": "wrong", "weight": 1}]
    failing = [r if r["vars"]["q"] < 2 else {**r, "passed": False, "score": 0.0, "checks": wrong} for r in renamed]
    after = tmp_path / "b.jsonl"
    after.write_text("".join(json.dumps(r) + "\n" for r in failing))
    code, text, _ = call_cli("diff", tmp_path / "a.jsonl", after, "--json", "--fail-on-regression")
    total = json.loads(text)["pass_rate"]
    assert (total["before"], total["after"], total["rows_paired"]) == (1.0, 0.125, 2)
    assert (
        total["test"].startswith("McNemar's exact test (paired rows) and Fisher's exact test") and total["significant"]
    )
    assert code == ExitCode.REGRESSION
    assert "(paired and unpaired rows, p=" in call_cli("diff", tmp_path / "a.jsonl", after)[1]


def test_rows_new_to_the_second_run_that_do_better_never_make_a_drop_significant(tmp_path: Path) -> None:
    # verify46: 20/26 -> 28/40, the shared rows' 4 flips not significant (p=0.125, 0.25 halved),
    # the rows each run has alone 0/6 -> 12/20: better, yet they made the drop "significant", exit 4.
    def row(row_id: str, passed: bool) -> dict[str, Any]:
        checks = [{"name": "c", "pass": passed, "reason": "" if passed else "wrong", "weight": 1}]
        head = {"id": row_id, "fingerprint": "f", "status": "ok", "reason": None, "cost": 0.0, "job": "j"}
        return {**head, "model": "m", "prompt_id": "p", "vars": {"q": row_id}, "checks": checks, "passed": passed}

    before = [row(f"s{i}", True) for i in range(20)] + [row(f"a{i}", False) for i in range(6)]
    after = [row(f"s{i}", i >= 4) for i in range(20)] + [row(f"b{i}", i < 12) for i in range(20)]
    for name, rows in (("a.jsonl", before), ("b.jsonl", after)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, text, _ = call_cli("diff", tmp_path / "a.jsonl", tmp_path / "b.jsonl", "--json", "--fail-on-regression")
    total = json.loads(text)["pass_rate"]
    assert (round(total["before"], 3), total["after"], total["rows_paired"]) == (0.769, 0.7, 20)
    assert total["significant"] is False and total["p_value"] == 0.25 and code == ExitCode.OK


def test_junit_per_row_validates_against_the_schema(tmp_path: Path, junit_schema: Any) -> None:
    job = write_job(tmp_path, TOOLS_JOB)
    out = tmp_path / "t.jsonl"
    cli(job, "--simulate", "--sim", "accuracy.anthropic/claude-3.5-haiku=0", "-o", out)
    rows = read_rows(out)
    rows.append({**rows[0], "id": "e", "status": "error", "reason": "timeout", "error": {"message": "slow <&>"}})
    rows.append({**rows[0], "id": "s", "status": "skipped", "reason": "budget", "vars": {"country": "\x01Peru"}})
    (tmp_path / "all.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, _, err = call_cli("report", tmp_path / "all.jsonl", "--junit", tmp_path / "j.xml")
    assert code == ExitCode.INCOMPLETE and "junit:" in err  # a row never answered (break42 F2)
    junit_schema.validate(tmp_path / "j.xml")
    data: Any = junit_schema.to_dict(tmp_path / "j.xml")
    suites = {s["@name"]: s for s in data["testsuite"]}
    [gate] = (
        suites["tools (gate)"]["testcase"]
        if isinstance(suites["tools (gate)"]["testcase"], list)
        else [suites["tools (gate)"]["testcase"]]
    )
    assert "1 row(s) skipped, never answered (budget 1)" in gate["failure"]["@message"]
    weather = suites["tools.weather"]
    assert weather["@tests"] == 4 and weather["@errors"] == 1 and weather["@skipped"] == 1
    failures = [c for c in weather["testcase"] if "failure" in c]
    assert len(failures) == 2 and "calls-weather: expected a call of get_weather" in failures[0]["failure"]["@message"]


def test_junit_per_item_with_repeats(tmp_path: Path, junit_schema: Any) -> None:
    before = synthetic(tmp_path / "a.jsonl", {"m": 0.7}, 4, seed=6, items=5)
    path = tmp_path / "items.xml"
    counts = write_junit(iter(read_rows(before)), path, "j", ItemGate(3, 4))
    junit_schema.validate(path)
    tallies: dict[int, int] = {}
    for row in read_rows(before):
        tallies[row["vars"]["q"]] = tallies.get(row["vars"]["q"], 0) + int(row["passed"])
    assert counts["tests"] == 5 and counts["failure"] == sum(1 for t in tallies.values() if t < 3)
    text = path.read_text()
    assert "needs 3 of 4" in text or counts["failure"] == 0


def test_junit_shows_an_undecided_item_as_an_error(tmp_path: Path, junit_schema: Any) -> None:
    # break21 R26: an item whose errored repeats left it undecided was a green test case.
    before = synthetic(tmp_path / "a.jsonl", {"m": 1.0}, 4, seed=6, items=1)
    rows = read_rows(before)
    for row in rows[1:]:  # one graded pass of four; three errors: 3 of 4 can neither be met nor ruled out
        row.update(status="error", reason="timeout", passed=None, checks=[], error={"message": "slow"})
    path = tmp_path / "items.xml"
    counts = write_junit(iter(rows), path, "j", ItemGate(3, 4))
    junit_schema.validate(path)
    assert counts == {"tests": 1, "failure": 0, "error": 1, "skipped": 0}
    assert "undecided: passed 1 of 1 graded repeat(s) of 4; needs 3 of 4" in path.read_text()


def test_without_a_gate_an_item_with_ungraded_repeats_is_undecided_not_green(tmp_path: Path, junit_schema: Any) -> None:
    # break23 F2: two graded passes and three repeats whose grader failed made a green case and
    # "items: ... pass (every repeat) ... 0 undecided", though every repeat must pass.
    before = synthetic(tmp_path / "a.jsonl", {"m": 1.0}, 5, seed=6, items=1)
    rows = read_rows(before)
    for row in rows[2:]:
        row.update(passed=None, checks=[{"name": "judge", "pass": None, "reason": "", "weight": 1, "error": "boom"}])
    path = tmp_path / "items.xml"
    counts = write_junit(iter(rows), path, "j", ItemGate())
    junit_schema.validate(path)
    assert counts == {"tests": 1, "failure": 0, "error": 1, "skipped": 0}
    assert "undecided: passed 2 of 2 graded repeat(s) of 5; every repeat must pass" in path.read_text()
    (tmp_path / "u.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, text, _ = call_cli("report", tmp_path / "u.jsonl", "--json")
    assert code == 0 and json.loads(text)["items"]["undecided"] == 1 and json.loads(text)["items"]["passed"] == 0


@pytest.mark.parametrize("flag", ["--json", "--markdown"])
def test_report_shows_intervals_in_every_form(tmp_path: Path, flag: str) -> None:
    before = synthetic(tmp_path / "a.jsonl", {"m": 0.7}, 1, seed=7)
    code, text, _ = call_cli("report", before, flag)
    assert code == 0
    if flag == "--json":
        assert json.loads(text)["total"]["pass_rate_ci95"][0] < json.loads(text)["total"]["pass_rate"]
    else:
        assert "pass [95% CI]" in text and "% [" in text


def test_a_per_item_gate_that_undecided_repeats_decide_is_not_passed(tmp_path: Path) -> None:
    # break27 M2: per_item 3 of 5, three repeats ungraded (a grader's prose), two passing, and an
    # error tolerance wide enough for them: no item met the gate, exit 0. An overall threshold
    # the undecided rows decide is exit 1 ("whatever the run's share"); so is this.
    from batchrun._settings import RunSettings
    from batchrun._summary import SummaryBuilder
    from batchrun._verdict import decide

    rows = read_rows(synthetic(tmp_path / "a.jsonl", {"m": 1.0}, 5, seed=6, items=1))
    for row in rows[:3]:
        row.update(passed=None, checks=[{"name": "judge", "pass": None, "reason": "", "weight": 1, "error": "prose"}])
    gate = ItemGate(3, 5)
    settings = RunSettings(max_error_rate=1.0, pass_threshold={"per_item": {"min": 3, "of": 5}})
    summary = SummaryBuilder(gate).add_all(rows).result()
    assert summary["items"] is not None and summary["items"]["undecided"] == 1
    code, reasons = decide(summary, settings)
    assert code == ExitCode.ERRORS
    assert reasons == [
        "1 item(s) could not be checked against the per-item gate (at least 3 of 5 repeats): their ungraded or "
        "missing repeats decide it"
    ]
    for row in rows[:1]:  # three passes of three graded: the gate is met whatever the other two say
        row.update(passed=True, checks=[{"name": "judge", "pass": True, "reason": "", "weight": 1}])
    assert decide(SummaryBuilder(gate).add_all(rows).result(), settings)[0] == ExitCode.OK


def test_a_per_item_gate_missed_outright_is_a_quality_failure_whatever_the_undecided_items(tmp_path: Path) -> None:
    # break61 F5: two items passed none of 5 repeats, a third was undecided: exit 1, "their
    # ungraded or missing repeats decide it", pointing the on-call at the graders, when no
    # verdict of theirs could make the gate pass.
    from batchrun._settings import RunSettings
    from batchrun._summary import SummaryBuilder
    from batchrun._verdict import decide

    rows = read_rows(synthetic(tmp_path / "a.jsonl", {"m": 0.0}, 5, seed=6, items=3))
    for row in rows[:3]:  # item 0: two graded fails and three ungraded, neither met nor missed... yet
        row.update(passed=None, checks=[{"name": "judge", "pass": None, "reason": "", "weight": 1, "error": "prose"}])
    rows[3].update(passed=True, score=1.0, checks=[{"name": "c", "pass": True, "reason": "", "weight": 1}])
    gate = ItemGate(3, 5)
    settings = RunSettings(max_error_rate=1.0, pass_threshold={"per_item": {"min": 3, "of": 5}})
    summary = SummaryBuilder(gate).add_all(rows).result()
    assert summary["items"] is not None and (summary["items"]["undecided"], summary["items"]["failed"]) == (1, 2)
    assert decide(summary, settings) == (
        ExitCode.QUALITY,
        ["2 item(s) passed fewer than 3 of 5 repeats (1 more undecided)"],
    )


def _with_checks(row: dict[str, Any], passed: bool | None, *verdicts: bool | None) -> None:
    row.update(
        passed=passed,
        checks=[
            {"name": f"c{n}", "pass": v, "reason": "", "weight": 1}
            | ({} if v is not None else {"error": "grader down"})
            for n, v in enumerate(verdicts)
        ],
    )


def test_a_row_that_failed_a_check_is_failed_beside_a_check_its_grader_left_undecided(tmp_path: Path) -> None:
    # break61 F1: `equals: yes` failed and the judge's grader answered 500: the row was
    # undecided, out of the pass rate, and 18 passes of 20 rows read "100.0%", exit 0, with
    # no failure in the JUnit file. A file written so before is read as it was written.
    path = synthetic(tmp_path / "a.jsonl", {"m": 1.0}, 1, seed=1, items=20)
    rows = read_rows(path)
    for row in rows[:2]:
        _with_checks(row, False, False, None)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, text, err = call_cli("report", path, "--json", "--junit", tmp_path / "j.xml")
    total = json.loads(text)["total"]
    assert code == 0 and (total["passed"], total["checked"], total["undecided"]) == (18, 20, 0)
    assert "2 failed, 0 error(s)" in err and 'failures="2"' in (tmp_path / "j.xml").read_text()
    for row in rows[:2]:
        _with_checks(row, None, False, None)  # as written before: read, not set aside
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, text, err = call_cli("report", path, "--json")
    assert code == 0 and "set aside" not in err and json.loads(text)["total"]["undecided"] == 2
    _with_checks(rows[5], True, False, None)  # a verdict that disagrees is set aside, as always
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, text, err = call_cli("report", path, "--json")
    assert "a.jsonl:6: " in err and "'passed' does not agree with its checks" in err
    assert json.loads(text)["total"]["rows"] == 19


def test_diff_says_when_the_job_was_edited_while_the_requests_stayed_the_same(tmp_path: Path) -> None:
    # break61 F2: the judge's model and rubric edited, the answers the same: "a significant drop
    # of the model, p=1.9e-9", exit 4, and not a word that the grading changed.
    before = synthetic(tmp_path / "a.jsonl", {"m": 1.0}, 1, seed=1, items=30)
    rows = read_rows(before)
    for row in rows:
        row["job_fingerprint"] = "a" * 16
    before.write_text("".join(json.dumps(r) + "\n" for r in rows))
    after = failing(before, tmp_path / "b.jsonl", lambda q: q < 20)
    regraded = [{**r, "job_fingerprint": "b" * 16} for r in read_rows(after)]  # the same requests
    after.write_text("".join(json.dumps(r) + "\n" for r in regraded))
    code, text, _ = call_cli("diff", before, after, "--json", "--fail-on-regression")
    assert code == ExitCode.REGRESSION and json.loads(text)["rows"]["job_edited"] == 30
    said = call_cli("diff", before, after)[1]
    assert "the job was edited between the runs (its file's or its checks' fingerprint differs) while 30 row(s)" in said
    assert "job was edited" not in call_cli("diff", before, before)[1]


def test_diff_sees_an_edited_dataset_check_or_schema_file_the_job_files_fingerprint_does_not(tmp_path: Path) -> None:
    # verify63 F7: a dataset row's check and a json_schema file are not in the job file, so
    # editing them kept its fingerprint: `diff` blamed the model, not a word about the grading.
    (tmp_path / "rows.jsonl").write_text('{"q": "a", "checks": [{"contains": "zzz", "not": true}]}\n{"q": "b"}\n')
    (tmp_path / "s.json").write_text('{"type": "object"}')
    job = write_job(
        tmp_path,
        """
        name: t
        models: [openai/gpt-4o-mini]
        prompts: [{id: p, text: "Say {{q}}", checks: [{json_schema: s.json, name: shape}]}]
        dataset: rows.jsonl
        """,
    )
    outputs = [tmp_path / f"{n}.jsonl" for n in range(3)]
    assert call_cli(job, "--simulate", "-q", "-o", outputs[0])[0] == ExitCode.OK
    before = read_rows(outputs[0])
    assert len({r["checks_fingerprint"] for r in before}) == 2  # row a has a check of its own
    (tmp_path / "rows.jsonl").write_text('{"q": "a", "checks": [{"contains": "yyy", "not": true}]}\n{"q": "b"}\n')
    call_cli(job, "--simulate", "-q", "-o", outputs[1])
    (tmp_path / "s.json").write_text('{"type": "array"}')
    call_cli(job, "--simulate", "-q", "-o", outputs[2])
    runs = [read_rows(path) for path in outputs]
    assert {r["id"]: r["fingerprint"] for r in runs[0]} == {
        r["id"]: r["fingerprint"] for r in runs[2]
    }  # the same requests
    assert len({r["job_fingerprint"] for run in runs for r in run}) == 1  # the job file is untouched
    for pair, edited in (((0, 1), 1), ((1, 2), 2), ((0, 0), 0)):
        code, text, _ = call_cli("diff", outputs[pair[0]], outputs[pair[1]], "--json")
        assert json.loads(text)["rows"]["job_edited"] == edited, pair
    said = call_cli("diff", outputs[1], outputs[2])[1]
    assert "the job was edited between the runs (its file's or its checks' fingerprint differs) while 2 row" in said
    # A grader prompt file is in the hash of a judged row, and only of a judged one.
    judged, plain = [{"judge": "brief"}], [{"contains": "x"}]
    prompts = [GraderSettings(("g/m",), template=text) for text in ("A <answer>", "B <answer>")]
    assert checks_fingerprint(judged, prompts[0]) != checks_fingerprint(judged, prompts[1])
    assert checks_fingerprint(plain, prompts[0]) == checks_fingerprint(plain, prompts[1])


def test_a_failed_row_whose_judge_a_stop_cut_is_unfinished_work_as_an_undecided_one(tmp_path: Path) -> None:
    # verify63 F1: a row that failed a check, its judge cut by the deadline, is failed: it was not
    # counted as regradable, so the run exited 3, not 12, and `report` 0 on its file, while a
    # resume still graded it. And merging it said the night complete (F5).
    from batchrun._summary import SummaryBuilder
    from batchrun._verdict import decide

    path = synthetic(tmp_path / "a.jsonl", {"m": 1.0}, 1, seed=1, items=10)
    rows = read_rows(path)
    _with_checks(rows[3], False, False, None)
    rows[3]["checks"][1]["error"] = "not graded: the run stopped (deadline)"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = SummaryBuilder().add_all(rows).result()
    assert (summary["total"]["regradable"], summary["total"]["undecided"], summary["total"]["checked"]) == (1, 0, 10)
    assert decide(summary, RunSettings(), run=True)[0] == ExitCode.INCOMPLETE
    code, _, err = call_cli("report", path)
    assert code == ExitCode.INCOMPLETE and "1 answered row(s) not graded: a stop cut their grader off" in err


def test_a_merge_of_rows_whose_judge_a_stop_cut_is_not_complete(results: Path, tmp_path: Path) -> None:
    # verify63 F5: one shard's deadline left a judge ungraded: the merged night said `complete:
    # true` and `history` did not mark it, while `report` exits 12 on it.
    rows = read_rows(results)
    row = next(r for r in rows if r.get("checks"))
    row["checks"].append(
        {"name": "judge", "pass": None, "reason": "", "weight": 1, "error": "not graded: the run stopped"}
    )
    row["passed"] = None
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, _, err = call_cli("merge", tmp_path / "m.jsonl", cut, "--allow-partial", "-q")
    merged = json.loads((tmp_path / "m.summary.json").read_text())
    assert code == ExitCode.OK and merged["complete"] is False, err
    assert "1 answered row(s) not graded: a stop cut their grader off; --resume grades them" in merged["shortfalls"]
    assert "incomplete: a partial merge" in call_cli("history", tmp_path / "m.jsonl")[1]


def test_a_threshold_the_undecided_rows_would_meet_had_they_passed_is_not_a_quality_failure(tmp_path: Path) -> None:
    # verify63 F3: a failed check fails its row beside an undecided judge, so with the grader down
    # only failures were graded: exit 3, "pass rate 0.0% is below the threshold", for an outage.
    from batchrun._failure_text import failure_reasons
    from batchrun._summary import SummaryBuilder
    from batchrun._verdict import decide

    rows = read_rows(synthetic(tmp_path / "a.jsonl", {"m": 1.0}, 1, seed=1, items=20))
    for row in rows:
        _with_checks(row, False if row["vars"]["q"] < 10 else None, row["vars"]["q"] >= 10, None)
    settings = RunSettings(max_error_rate=1.0, pass_threshold=0.5)
    summary = SummaryBuilder().add_all(rows).result()
    assert (summary["total"]["passed"], summary["total"]["checked"], summary["total"]["undecided"]) == (0, 10, 10)
    code, reasons = decide(summary, settings)
    assert code == ExitCode.ERRORS and reasons == [
        "pass rate: its threshold could not be checked: 10 undecided row(s) decide it (0 of 10 graded passed)"
    ]
    assert decide(summary, RunSettings(max_error_rate=1.0, pass_threshold=0.6))[0] == ExitCode.QUALITY  # missed anyway
    # A row's reasons say its undecided check as undecided, not as one more failure (F4).
    assert failure_reasons(rows[0]) == ["c0: failed", "c1: undecided: grader down"]


def test_one_flip_among_rows_gone_from_the_second_run_is_not_a_significant_drop(tmp_path: Path) -> None:
    # break27 M4: 20 of a model's 21 passing rows gone, the one left now failing: compared as two
    # samples, 21/21 -> 0/1 was "significant" (p=0.045); one row, one flip, is p=1. The rows gone
    # (and none added) are what fails the gate, and `diff` says so.
    before = synthetic(tmp_path / "a.jsonl", {"m": 1.0}, 1, seed=2, items=21)
    after = failing(before, tmp_path / "b.jsonl", lambda q: q == 0)
    kept = [r for r in read_rows(after) if r["vars"]["q"] == 0]
    after.write_text("".join(json.dumps(r) + "\n" for r in kept))
    code, text, _ = call_cli("diff", before, after, "--json", "--fail-on-regression")
    diff = json.loads(text)
    rate = diff["models_pass_rate"]["m"]
    assert (rate["before"], rate["after"]) == (1.0, 0.0)
    assert rate["test"] == "McNemar's exact test (paired rows)" and rate["p_value"] == 1 and not rate["significant"]
    assert diff["significant_drops"] == [] and diff["rows_missing"] is True and code == ExitCode.REGRESSION
    _, text, _ = call_cli("diff", before, after)
    assert "rows: 21 -> 1: 20 only in the first run, 0 only in the second; 20 pass(es) of the first run" in text
    assert "counted as failures they would make a significant drop: a regression" in text


def test_a_second_run_cut_short_by_a_stop_is_a_regression(tmp_path: Path) -> None:
    # verify27 N1: a stop writes its rows `skipped`: present by id, never answered. A run its
    # deadline cut to 40 rows of 105 passed the gate; the same rows deleted failed it.
    before = synthetic(tmp_path / "a.jsonl", {"m": 0.9}, 1, seed=3, items=30)
    rows = read_rows(before)
    for row in rows[10:]:
        row.update(status="skipped", reason="deadline", passed=None, checks=[], score=None)
    after = tmp_path / "b.jsonl"
    after.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, text, _ = call_cli("diff", before, after, "--json", "--fail-on-regression")
    diff = json.loads(text)
    passes = sum(1 for r in read_rows(before)[10:] if r["passed"])
    assert diff["rows"]["passes_without_verdict"] == passes and diff["rows"]["only_before"] == 0
    assert diff["rows_missing"] is True and code == ExitCode.REGRESSION
    # Rows swapped for as many new ones (another dataset) are said, and no regression without
    # --strict; rows gone beyond the new ones count, as skipped ones do.
    swapped = tmp_path / "c.jsonl"
    swapped.write_text(
        "".join(json.dumps({**r, "id": r["id"] + "x"} if i < 5 else r) + "\n" for i, r in enumerate(read_rows(before)))
    )
    assert call_cli("diff", before, swapped, "--fail-on-regression")[0] == ExitCode.OK
    shrunk = tmp_path / "d.jsonl"
    kept = read_rows(before)[:-10]
    shrunk.write_text("".join(json.dumps(r) + "\n" for r in [*kept, {**kept[0], "id": "new"}]))
    code, text, _ = call_cli("diff", before, shrunk, "--json", "--fail-on-regression")
    assert json.loads(text)["rows"]["only_after"] == 1 and code == ExitCode.REGRESSION


def test_a_verdict_edited_against_its_checks_is_set_aside(tmp_path: Path) -> None:
    # break27 m4: `passed: true` written by hand over failed checks counted as a pass in
    # `report` (100%) and a "significant" improvement in `diff`.
    before = failing(synthetic(tmp_path / "s.jsonl", {"m": 1.0}, 1, seed=8, items=20), tmp_path / "a.jsonl", bool)
    rows = read_rows(before)
    for row in [r for r in rows if r["passed"] is False][:10]:
        row["passed"] = True  # its checks still say fail
    edited = tmp_path / "b.jsonl"
    edited.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, text, err = call_cli("report", edited, "--json")
    summary = json.loads(text)
    # With no summary to count its rows by, lines set aside may be rows missing (out-128 F4).
    assert code == ExitCode.INCOMPLETE and summary["total"]["rows"] == 10 and summary["unread_lines"] == 10
    assert "'passed' does not agree with its checks" in err
    code, text, _ = call_cli("diff", before, edited, "--json")
    assert json.loads(text)["flips"]["fail_to_pass"] == []


def test_a_smaller_job_run_whole_is_no_regression_a_file_cut_short_is(tmp_path: Path) -> None:
    # verify28 F1: fewer repeats (or dataset rows) made every gone row a loss: exit 4 with every
    # shared row the same. The second run's summary says whether it answered its whole job.
    big, small = tmp_path / "big", tmp_path / "small"
    big.mkdir()
    small.mkdir()
    before, after = big / "r.jsonl", small / "r.jsonl"
    assert call_cli(write_job(big, SMALL_JOB), "--simulate", "-o", before, "-q")[0] in (ExitCode.OK, ExitCode.QUALITY)
    smaller = write_job(small, SMALL_JOB.replace("repeat: 2", "repeat: 1"))
    assert call_cli(smaller, "--simulate", "-o", after, "-q")[0] in (ExitCode.OK, ExitCode.QUALITY)
    code, text, _ = call_cli("diff", before, after, "--json", "--fail-on-regression")
    diff = json.loads(text)
    assert diff["rows"]["only_before"] == 10 and diff["rows"]["passes_without_verdict"] == 0 and code == ExitCode.OK
    lines = after.read_text().splitlines(keepends=True)
    after.write_text("".join(lines[:3]))  # cut by hand: its summary still says 10 rows
    code, text, _ = call_cli("diff", before, after, "--json", "--fail-on-regression")
    assert json.loads(text)["rows"]["passes_without_verdict"] > 0


def test_items_of_a_prompt_without_checks_are_not_gated(tmp_path: Path) -> None:
    # break33 M1: with per_item, each item of an unchecked prompt was "undecided" and the run
    # exited 1 ("could not be checked"), every row ok.
    text = """
name: unchecked
models: [openai/gpt-4o-mini]
defaults: {params: {max_tokens: 8}}
prompts:
  - {id: free, text: "Say hi."}
  - {id: capital, text: "Capital of France?", checks: [{contains: Paris}]}
repeat: 3
run: {pass_threshold: {per_item: {min: 2, of: 3}}}
"""
    out = tmp_path / "u.jsonl"
    code, text_out, err = call_cli(write_job(tmp_path, text), "--simulate", "-o", out)
    assert code == ExitCode.OK, err
    items = json.loads(out.with_name("u.summary.json").read_text())["items"]
    assert (items["count"], items["passed"], items["undecided"], items["unchecked"]) == (2, 1, 0, 1)
    assert "1 without checks" in text_out
    # With no item but those, the gate checks nothing: refused before a row is sent (out-137 2;
    # it was run, then exit 1), and when only the run can know it, said, exit 1, never passed
    # (out-128 F1): here --mode batch, where a latency check grades nothing.
    alone = text.replace('  - {id: capital, text: "Capital of France?", checks: [{contains: Paris}]}\n', "")
    code, _, err = call_cli(write_job(tmp_path, alone, "alone.yaml"), "--simulate", "-o", tmp_path / "a.jsonl")
    assert code == ExitCode.USAGE and "per_item no prompt of the job has a check" in err, err
    assert not (tmp_path / "a.jsonl").exists()
    # Nor --pass-threshold over it: every row was paid for, then exit 1 (out-138 F2).
    loose = write_job(tmp_path, alone.replace("run: {pass_threshold: {per_item: {min: 2, of: 3}}}", ""), "loose.yaml")
    code, _, err = call_cli(loose, "--simulate", "--pass-threshold", "0.5", "-o", tmp_path / "a.jsonl")
    assert code == ExitCode.USAGE and "--pass-threshold: no prompt of the job has a check" in err, err
    assert not (tmp_path / "a.jsonl").exists()
    # Nor in a re-grading's gate, where it said "could not be checked", exit 1.
    code, _, err = call_cli(loose, "--simulate", "-o", tmp_path / "a.jsonl", "-q")
    assert code == ExitCode.OK, err
    code, _, err = call_cli("report", tmp_path / "a.jsonl", "--job", loose, "--pass-threshold", "0.5")
    assert code == ExitCode.USAGE and "--pass-threshold: no prompt of the job has a check" in err, err
    # A threshold of 0 could not fail, nor be checked: it was said to be one that "could never be met".
    code, _, err = call_cli("report", tmp_path / "a.jsonl", "--job", loose, "--pass-threshold", "0")
    assert code == ExitCode.USAGE and err.endswith("has a check: this threshold could never be checked\n"), err
    (tmp_path / "a.jsonl").unlink()
    timed = alone.replace('text: "Say hi."', 'text: "Say hi.", checks: [{max_latency_ms: 60000}]')
    job = write_job(tmp_path, timed, "timed.yaml")
    done = [f"--sim=batch_{phase}_s=0" for phase in ("validating", "in_progress", "finalizing")]
    # In batch mode, latency checks do not apply: every row was paid for, then exit 1, "the
    # per-item gate could not be checked"; refused before anything is sent, as is `plan`.
    runs: list[list[str | Path]] = [[job, "-o", tmp_path / "a.jsonl"], ["plan", job]]
    for argv in runs:
        code, _, err = call_cli(*argv, "--simulate", *done, "--mode", "batch")
        assert code == ExitCode.USAGE and not (tmp_path / "a.jsonl").exists(), err
        assert err.endswith(
            "run.pass_threshold.per_item: in batch mode it could never be checked: its rows' only "
            "checks are max_latency_ms, and a batch row has no latency; run them with --mode sync, or "
            "give them another check\n"
        ), err
    assert call_cli(job, "--simulate", "-q", "--mode", "sync", "-o", tmp_path / "a.jsonl")[0] == ExitCode.OK
    # --pass-threshold too (out-146 F7: paid, then exit 1, where the same threshold in the file was refused).
    bare = write_job(tmp_path, timed.replace("run: {pass_threshold: {per_item: {min: 2, of: 3}}}", ""), "bare.yaml")
    code, _, err = call_cli(
        bare, "--simulate", "--mode", "batch", "--pass-threshold", "0.5", "-o", tmp_path / "b.jsonl"
    )
    assert code == ExitCode.USAGE and err.startswith("batchrun: --pass-threshold: in batch mode it could never be"), err
    assert not (tmp_path / "b.jsonl").exists()
    # Under allow_unknown_prices a row of no known price goes in sync mode under a limit, timed:
    # which rows those are is known once the prices are read (out-146 F8: refused).
    unpriced = timed.replace("run: {pass_threshold:", "run: {allow_unknown_prices: true, pass_threshold:")
    code, _, err = call_cli("plan", write_job(tmp_path, unpriced, "unpriced.yaml"), "--simulate", "--mode", "batch")
    assert code == ExitCode.OK, err


def test_a_threshold_on_a_prompt_with_nothing_to_check_is_refused(tmp_path: Path) -> None:
    # verify32: it validated, and passed in silence.
    text = REPEAT_JOB.replace("repeat: 10", '  - {id: free, text: "Say hi."}\nrepeat: 10').replace(
        "pass_threshold: {per_item", "pass_threshold: {prompts: {free: 0.9}, per_item"
    )
    code, _, err = call_cli("validate", write_job(tmp_path, text))
    assert code == ExitCode.USAGE and err.count("\n") == 1, err
    assert "$.run.pass_threshold.prompts.free prompt 'free' has no checks: this threshold would never apply" in err
    # A dataset whose rows carry no checks brings none (verify34 N4: a CSV dataset's prompt
    # took a threshold that could never apply).
    (tmp_path / "rows.csv").write_text("w\nhi\n")
    csv_rows = text.replace('{id: free, text: "Say hi."}', '{id: free, text: "Say {{w}}.", dataset: rows.csv}')
    code, _, err = call_cli("validate", write_job(tmp_path, csv_rows, "csv.yaml"))
    assert code == ExitCode.USAGE and "prompt 'free' has no checks: this threshold would never apply" in err, err
    # Checks of its rows are checks: a threshold on such a prompt applies (it was refused).
    rows = text.replace(
        '{id: free, text: "Say hi."}', '{id: free, text: "Say {{w}}.", vars: [{w: hi, checks: [{contains: hi}]}]}'
    )
    assert call_cli("validate", write_job(tmp_path, rows, "rows.yaml"))[0] == ExitCode.OK
    # In batch mode too: which rows go by batch (not $0 ones, nor non-text ones under
    # batch_multimodal: sync) is known only when the run prices them (out-138 F3: refused).
    batch = rows.replace("run: {", "run: {mode: batch, ")
    timed = batch.replace("checks: [{contains: hi}]", "checks: [{max_latency_ms: 900}]")
    assert call_cli("validate", write_job(tmp_path, timed, "timed.yaml"))[0] == ExitCode.OK


def test_the_graded_examples_comment_says_its_own_per_item_gate() -> None:
    # break65 F9: the comment said "at least four" of five repeats; the job's gate is 3 of 5.
    text = (Path(__file__).parent.parent / "jobs" / "graded.yaml").read_text()
    words = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
    gate = load_job(Path(__file__).parent.parent / "jobs" / "graded.yaml").run.pass_threshold
    assert isinstance(gate, dict)
    per_item = gate["per_item"]
    assert f"must pass at least {words[per_item['min']]} of them" in text


def test_diff_warns_when_its_files_are_given_in_the_other_order(tmp_path: Path) -> None:
    # break65 F10: `diff new old` read a regression as a significant improvement, exit 0, no word.
    job, old, new = write_job(tmp_path, SMALL_JOB), tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    for path in (old, new):
        assert call_cli(job, "--simulate", "-q", "-o", path)[0] == 0
    assert "ran after" not in call_cli("diff", old, new)[2]
    said = call_cli("diff", new, old)[2]
    assert f"warning: {new} ran after {old}" in said and "warning: warning" not in said  # out-108 F5


def test_server_tools_other_than_the_chat_apis_documented_ones_are_let_through(tmp_path: Path) -> None:
    # Only a near miss of a documented one is a typo: OpenRouter adds server tools, and names
    # some for its other APIs (file_search was read as a typo of web_search past "openrouter:").
    kinds = ["openrouter:web_search", "openrouter:file_search", "openrouter:web_crawl", "openrouter:image_gen"]
    kinds += ["web_search_2025_08_26", "openrouter:experimental__search_models"]
    # Two edits or more are a name of its own, not a typo (out-140 F2: these were refused).
    kinds += ["openrouter:web_search_v2", "openrouter:web_searches", "openrouter:image_generation_v2"]
    # A short name one letter from another is a name of its own unless its letters are swapped (out-146 F9).
    kinds += ["openrouter:hash", "openrouter:spell", "openrouter:map", "openrouter:acp"]
    tools = ", ".join(f"{{type: {kind}}}" for kind in kinds)
    job = write_job(
        tmp_path, f"name: t\nmodels: [m/x]\nprompts:\n  - {{id: p, text: hi, params: {{tools: [{tools}]}}}}\n"
    )
    code, out, err = call_cli("validate", job)
    assert (code, err) == (ExitCode.OK, ""), err
    assert "ok (job t)" in out


def test_junit_keeps_of_each_answer_only_what_a_case_shows(tmp_path: Path, junit_schema: Any) -> None:
    # out-158 F2: every row's whole answer was kept until the end: 40 answers of 10 MB held 496 MB
    # (the text report of the same file: 86 MB), where a case shows 4,000 characters of one.
    import tracemalloc

    base = read_rows(synthetic(tmp_path / "a.jsonl", {"m": 0.5}, 1, seed=6, items=30))
    big = 2_000_000

    def rows() -> Any:
        for row in base:  # each answer made as it is read, as the reader hands them over
            vars_ = {**row["vars"], "doc": "v" * big}  # out-159 F5: 6 MB of variables a row
            checks = [{**c, "reason": "r" * big} for c in row.get("checks") or []]
            yield {**row, "content": "x" * big, "error": {"message": "y" * big}, "vars": vars_, "checks": checks}

    path = tmp_path / "big.xml"
    tracemalloc.start()
    try:
        counts = write_junit(rows(), path, "j", ItemGate(1, 1))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    junit_schema.validate(path)
    assert counts["tests"] == 30 and peak < 20 * big  # a row or two at a time (each 4+ big strings), not 30 rows
    assert max(len(case.text or "") for case in ET.parse(path).iter("failure")) <= 4000
