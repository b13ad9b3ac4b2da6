"""Inputs that read as cheaper or fewer than they are (break14e): a /models reasoning flag of the
wrong type (E17), and duplicate rows of variables that share one row id (E14)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batchrun import ExitCode
from batchrun._account_reply import model_info
from batchrun._scrub import Scrubber

from .bound_server import JOB, MODEL, Billing, model_entry, run, server
from .conftest import call_cli, write_job
from .hostile import HostileServer

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
      - {a: '1'}
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
    chats: list[bytes] = []
    hostile = HostileServer(chat=lambda request: chats.append(request.body) or b"")
    job = write_job(tmp_path, DUPLICATE_VARS)
    code, _, err = call_cli("validate", job)
    _refused(code, err, "job.yaml:13:", "prompts[0].vars[4]", "the same variables as vars[0] (line 9)", "repeat:")
    out = tmp_path / "out.jsonl"
    with hostile.running():
        code, _, err = call_cli(job, "--base-url", hostile.base_url, "-o", out)
    _refused(code, err, "vars[4]", "vars[0]")
    assert chats == [] and not out.exists()


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
        ("rows.jsonl", '{"a": 1}\n{"a": 1.0}\n{"a": "1"}\n{"a": 1}\n', 4, 1),
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


def test_distinct_rows_are_still_accepted(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text('{"a": 1}\n{"a": 1.0}\n{"a": "1"}\n{"a": 1, "b": null}\n', encoding="utf-8")
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
