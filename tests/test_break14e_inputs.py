"""Inputs that read as cheaper or fewer than they are (break14e): a /models reasoning flag of the
wrong type (E17), and duplicate rows of variables that share one row id (E14)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from batchrun import ExitCode
from batchrun._account_reply import model_info
from batchrun._scrub import Scrubber

from .bound_server import COMPLETION, JOB, MODEL, PROMPT, Billing, model_entry, plan, run, server
from .conftest import call_cli, write_job
from .hostile import RawRequest, chat_payload, json_answer

pytestmark = pytest.mark.usefixtures("api_key_env")

REASONING_TOKENS = 1024  # what a model that reasons by default bills at least (reasoning-tokens.mdx)


# -- E17: a flag that is present and not `false` counts as reasoning on ------------------------
@pytest.mark.parametrize(
    ("flags", "default"),
    [
        ({"mandatory": "true"}, "mandatory"),
        ({"mandatory": 1}, "mandatory"),
        ({"mandatory": "false"}, "mandatory"),  # a string cannot be believed to mean off
        ({"mandatory": [True]}, "mandatory"),
        ({"default_enabled": "yes"}, "enabled"),
        ({"default_enabled": 1, "mandatory": False}, "enabled"),
        ({"default_enabled": False, "mandatory": False}, None),
        ({"default_enabled": None, "mandatory": None}, None),
        ({}, None),
    ],
)
def test_a_reasoning_flag_of_the_wrong_type_is_read_as_on(flags: dict[str, Any], default: str | None) -> None:
    entry = {"id": "g/flash", "pricing": {"prompt": "0.000001", "completion": "0.000002"}, "reasoning": flags}
    info = model_info(entry, Scrubber())
    assert info is not None and info.reasoning_default == default


@pytest.mark.parametrize("flag", ["true", 1])
def test_a_model_whose_mandatory_flag_is_a_string_cannot_spend_past_the_budget(tmp_path: Path, flag: Any) -> None:
    # The server lists `mandatory: "true"` and bills the reasoning it then does, as the docs
    # say such a model does: read as false, each row was reserved for 2 completion tokens and
    # billed 1,026 (break14e E17: $0.82 against $0.50).
    billing = Billing(completion=2 + REASONING_TOKENS)
    listed = [model_entry(reasoning={"mandatory": flag, "default_enabled": flag})]
    budget = 0.5
    code, _, err, rows = run(server(billing, listed, key_usage=True), tmp_path, JOB, "--budget", str(budget))
    assert billing.chats >= 1, err
    assert billing.total <= budget, f"billed {billing.total} past the budget {budget}: {err}"
    assert code in (ExitCode.OK, ExitCode.BUDGET), err
    assert all(r["status"] in ("ok", "skipped") for r in rows)


# -- E14: rows of one prompt with the same variables are one row id: refused at load ----------
DUPLICATE_VARS = """
name: dup
defaults:
  params: {max_tokens: 2}
models: [acme/cheap]
prompts:
  - id: p
    text: "hi {{a}}"
    vars:
      - {a: 1}
      - {a: 1.0}
      - {a: 'one'}
      - {a: 1, b: 2}
      - {a: 1}
"""


def _refused(code: int, err: str, *fragments: str) -> None:
    assert code == ExitCode.USAGE, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("batchrun: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


def test_duplicate_vars_rows_are_refused_before_anything_is_sent(tmp_path: Path) -> None:
    # They were sent and paid twice, then counted as one row: report 4 of 5, merge exit 12.
    billing = Billing()
    hostile = server(billing)
    job = write_job(tmp_path, DUPLICATE_VARS)
    code, _, err = call_cli("validate", job)
    _refused(code, err, "job.yaml:13:", "prompts[0].vars[4]", "the same variables as vars[0] (line 9)", "repeat:")
    out = tmp_path / "out.jsonl"
    with hostile.running():
        code, _, err = call_cli(job, "--base-url", hostile.base_url, "-o", out)
    _refused(code, err, "vars[4]", "vars[0]")
    assert billing.chats == 0 and not out.exists()


def test_rows_that_differ_only_in_their_own_checks_are_the_same_row(tmp_path: Path) -> None:
    text = DUPLICATE_VARS.replace("- {a: 1, b: 2}\n      - {a: 1}", "- {a: 2, checks: [{contains: x}]}\n      - {a: 2}")
    code, _, err = call_cli("validate", write_job(tmp_path, text))
    _refused(code, err, "prompts[0].vars[4]", "the same variables as vars[3]")


def test_the_same_variables_under_two_prompts_are_two_rows(tmp_path: Path) -> None:
    text = DUPLICATE_VARS.replace("      - {a: 1}\n", "", 1) + '  - id: q\n    text: "ho {{a}}"\n    vars: [{a: 1}]\n'
    code, _, err = call_cli("validate", write_job(tmp_path, text))
    assert code == ExitCode.OK, err


@pytest.mark.parametrize(
    ("name", "content", "line", "first"),
    [
        ("rows.jsonl", '{"a": 1}\n{"a": 2}\n\n{"b": 0, "a": 1}\n{"a": 1, "b": 0}\n', 5, 4),
        ("rows.jsonl", '{"a": 1}\n{"a": 1.0}\n{"a": "one"}\n{"a": 1}\n', 4, 1),
        # Apart in JSON, alike as a prompt writes them: one request sent twice, under two ids (out-110 F8).
        ("rows.jsonl", '{"a": 1}\n{"a": "1"}\n', 2, 1),
        ("rows.jsonl", '{"a": true, "b": null}\n{"a": "true", "b": ""}\n', 2, 1),
        ("rows.csv", "a,b\n1,x\n2,x\n1,x\n", 4, 2),
    ],
)
def test_duplicate_dataset_rows_are_refused_naming_both_lines(
    tmp_path: Path, name: str, content: str, line: int, first: int
) -> None:
    (tmp_path / name).write_text(content, encoding="utf-8")
    text = f"""
name: ds
dataset: {name}
models: [{MODEL}]
prompts:
  - id: p
    text: "hi {{{{a}}}}"
"""
    code, _, err = call_cli("validate", write_job(tmp_path, text))
    _refused(code, err, f"{name}:{line}:", f"the same variables as line {first}", "repeat:")


def test_every_duplicate_dataset_row_is_named_up_to_a_screenful(tmp_path: Path) -> None:
    # Only the first had been named; the next was found on the next run (break65 F6).
    (tmp_path / "rows.csv").write_text("a,b\n1,x\n2,x\n1,x\n3,x\n2,x\n1,x\n", encoding="utf-8")
    rows = "".join(f'{{"a": {n % 2}}}\n' for n in range(40))
    (tmp_path / "many.jsonl").write_text(rows, encoding="utf-8")
    for name, expected in (
        ("rows.csv", [(4, 2), (6, 3), (7, 2)]),
        ("many.jsonl", [(n, 1 + (n - 1) % 2) for n in range(3, 23)]),
    ):
        text = f'name: ds\ndataset: {name}\nmodels: [{MODEL}]\nprompts:\n  - id: p\n    text: "hi {{{{a}}}}"\n'
        code, _, err = call_cli("validate", write_job(tmp_path, text))
        assert code == ExitCode.USAGE, err
        lines = err.strip().splitlines()
        named = [line.split(", as a prompt writes them")[0] for line in lines if "the same variables as line" in line]
        assert named == [f"batchrun: {tmp_path / name}:{n}: the same variables as line {f}" for n, f in expected], err
        assert ("and more rows like these" in err) == (name == "many.jsonl"), err


def test_distinct_rows_are_still_accepted(tmp_path: Path) -> None:
    rows = '{"a": 1}\n{"a": 1.0}\n{"a": "1.00"}\n{"a": 1, "b": null}\n{"a": false}\n'
    (tmp_path / "rows.jsonl").write_text(rows, encoding="utf-8")
    text = f"""
name: ds
dataset: rows.jsonl
models: [{MODEL}]
prompts:
  - id: p
    text: "hi {{{{a}}}}"
"""
    code, _, err = call_cli("validate", write_job(tmp_path, text))
    assert code == ExitCode.OK, err


def test_rows_alike_as_a_prompt_writes_them_are_the_same_row(tmp_path: Path) -> None:
    # out-110 F8: `1` and `"1"`, `true` and `"true"`, an unused null and "" were two rows, two ids,
    # and one request paid twice.
    text = DUPLICATE_VARS.replace("- {a: 1, b: 2}\n      - {a: 1}", "- {a: true, b: null}\n      - {a: 'true', b: ''}")
    code, _, err = call_cli("validate", write_job(tmp_path, text))
    _refused(code, err, "prompts[0].vars[4]", "the same variables as vars[3] (line 12), as a prompt writes them")
    code, _, err = call_cli("validate", write_job(tmp_path, DUPLICATE_VARS.replace("{a: 'one'}", "{a: '1'}")))
    assert code == ExitCode.USAGE and "prompts[0].vars[2] the same variables as vars[0] (line 9)" in err, err


@pytest.mark.parametrize(
    ("rows", "fragment"),
    [
        (
            "    vars: [{a: x}, {a: null}]\n",
            "job.yaml:6:20: at $.prompts[0].vars[1] variable 'a' is null, used by the prompt",
        ),
        (
            "    dataset: rows.jsonl\n",
            "rows.jsonl:2: variable 'a' is null, used by prompt 'p': it would be written as nothing; write \"\" for",
        ),
        (
            "    checks: [{contains: '{{b}}'}]\n    vars: [{a: x, b: null}, {a: y, b: null}]\n",
            "variable 'b' is null, used by the prompt",
        ),
        (
            "    vars: [{a: x, checks: [{contains: '{{b}}'}], b: null}]\n",
            "variable 'b' is null, used by this check",
        ),
    ],
)
def test_a_null_a_template_would_write_is_refused(tmp_path: Path, rows: str, fragment: str) -> None:
    # out-110 F8: null was written as nothing, and the prompt sent with a hole in it, silently.
    (tmp_path / "rows.jsonl").write_text('{"a": "x"}\n{"a": null}\n', encoding="utf-8")
    text = f'name: nul\nmodels: [{MODEL}]\nprompts:\n  - id: p\n    text: "hi {{{{a}}}}"\n{rows}'
    code, _, err = call_cli("validate", write_job(tmp_path, text))
    assert code == ExitCode.USAGE and fragment in err, err
    assert len(err.strip().splitlines()) == 1 + (" b: null}, {a: y" in rows), err


def test_a_null_no_template_writes_is_a_rows_value_still(tmp_path: Path) -> None:
    rows = "    vars: [{a: x, note: null}]\n"
    text = f'name: nul\nmodels: [{MODEL}]\nprompts:\n  - id: p\n    text: "hi {{{{a}}}}"\n{rows}'
    code, _, err = call_cli("validate", write_job(tmp_path, text))
    assert code == ExitCode.OK, err


# -- E13: an audio part's tokens follow its duration, which its bytes do not bound -------------
SILENT_HOUR = 115_200  # Gemini's 32 tokens a second, for the hour a 6 KB FLAC of silence decodes to


def _flac_silence_header() -> str:
    """A FLAC STREAMINFO of one hour at 8 kHz (the frames of digital silence add ~13 bytes per 8 s)."""
    info = (65535).to_bytes(2, "big") * 2 + bytes(6) + ((8000 << 44) | (15 << 36) | 3600 * 8000).to_bytes(8, "big")
    return base64.b64encode(b"fLaC\x80" + len(info + bytes(16)).to_bytes(3, "big") + info + bytes(16)).decode()


AUDIO_JOB = f"""
name: audio
defaults:
  params: {{max_tokens: 2}}
models: [{MODEL}]
prompts:
  - id: p
    messages:
      - role: user
        content:
          - {{type: text, text: "Transcribe {{{{n}}}}"}}
          - {{type: input_audio, input_audio: {{data: "{_flac_silence_header()}", format: flac}}}}
    vars: [{{n: 1}}, {{n: 2}}, {{n: 3}}]
run: {{concurrency: 1, timeout_s: 10, max_attempts: 1}}
"""


class AudioBilling(Billing):
    """Bills an audio part by the duration it decodes to, as the docs say (overview.mdx: "priced
    as input tokens based on duration"), not by its bytes."""

    def chat(self, request: RawRequest) -> bytes:
        prompt = len(request.body) + SILENT_HOUR
        bill = prompt * PROMPT + self.completion * COMPLETION
        self.total += bill
        self.chats += 1
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": self.completion,
            "total_tokens": prompt + self.completion,
            "cost": bill,
            "prompt_tokens_details": {"audio_tokens": SILENT_HOUR},
        }
        return json_answer(200, chat_payload("42", model=MODEL, usage=usage, id=f"gen-{self.chats}"))


@pytest.mark.parametrize("fmt", ["flac", "wav"])
def test_an_audio_part_has_no_known_worst_case_under_a_budget(tmp_path: Path, fmt: str) -> None:
    # A few KB reserved as a few KB of prompt was billed $11.52 against a $5 budget (break14e E13).
    billing = AudioBilling()
    job = AUDIO_JOB.replace("format: flac", f"format: {fmt}")
    code, _, err, rows = run(server(billing, key_usage=True), tmp_path, job, "--budget", "5")
    assert code == ExitCode.USAGE and "an audio part" in err and "duration" in err, err
    assert billing.chats == 0 and billing.total == 0 and rows == []
    code, stdout, err = plan(server(AudioBilling()), tmp_path, job, "--budget", "5")
    assert code == ExitCode.USAGE and "an audio part" in stdout + err


def test_an_audio_part_runs_when_unknown_prices_are_allowed(tmp_path: Path) -> None:
    job = AUDIO_JOB.replace("max_attempts: 1}", "max_attempts: 1, allow_unknown_prices: true}")
    billing = AudioBilling()
    code, _, err, rows = run(server(billing, key_usage=True), tmp_path, job, "--budget", "50")
    assert code == ExitCode.OK, err
    assert billing.chats == 3 and len(rows) == 3 and "an audio part" in err
