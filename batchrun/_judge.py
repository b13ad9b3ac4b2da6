"""Model-graded (`judge`) checks: the grader's settings, its prompt, and its verdict.

A judge check sends the answer under test to one or more grader models through a prompt
template (shipped as `templates/grader.txt`, replaceable per job with `judge.prompt`). The
grader must answer in structured output (`response_format: json_schema`) with `pass`,
`score` in [0, 1] and `reason`.

Injection: the question, rubric and answer are each put between tags that carry a nonce,
a hash of all three. An answer cannot close its block or open a fake rubric without
knowing that hash, which depends on the answer itself. The verdict is read only from the
grader's reply, and only as JSON valid against the verdict schema, so text in the answer
that looks like a verdict is just more text to grade.

This module is pure (no I/O beyond reading the template): the runner and `report --job`
send the requests, through the same throttle, ledger and retries as every row.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from ._files import read_regular_text
from ._json_text import parse_json
from ._limits import MAX_RENDERED_BYTES
from ._request_body import request_body
from ._scrub import KEY_LIKE
from ._template import PLACEHOLDER, Template
from ._template import template_problems as malformed_placeholders

VERDICT_SCHEMA_NAME = "batchrun_verdict"
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "pass": {"type": "boolean"},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "reason": {"type": "string"},
    },
    "required": ["pass", "score", "reason"],
    "additionalProperties": False,
}
RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": VERDICT_SCHEMA_NAME, "strict": True, "schema": VERDICT_SCHEMA},
}
# Reproducible by default: greedy decoding, a fixed seed, and no silent switch to another
# provider (allow_fallbacks: false keeps the primary one; require_parameters refuses
# providers that would ignore response_format or seed). Add provider.order to pin a named
# provider. See /work/ordocs/guides/routing/provider-selection.mdx.
DEFAULT_PARAMS: dict[str, Any] = {
    "temperature": 0,
    "seed": 0,
    "max_tokens": 300,
    "provider": {"allow_fallbacks": False, "require_parameters": True},
}
MAX_USES = 8  # of a row's text ({{question}}, {{answer}}, {{rubric}}) in a grader template
TEMPLATE_NAMES = frozenset({"question", "rubric", "answer", "nonce"})
MAX_REASON = 500


def shipped_template() -> str:
    return (resources.files("batchrun") / "templates" / "grader.txt").read_text(encoding="utf-8")


@dataclass(frozen=True)
class GraderSettings:
    """The job's `judge:` section, after defaults."""

    models: tuple[str, ...] = ()
    aggregate: str = "majority"  # or "mean"
    pass_score: float = 0.5
    params: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_PARAMS))
    template: str = ""  # the prompt template's text; empty: the shipped one

    @classmethod
    def from_section(cls, raw: dict[str, Any] | None, base_dir: Path) -> GraderSettings:
        raw = raw or {}
        models = tuple(raw.get("models") or ([raw["model"]] if raw.get("model") else ()))
        params = {**DEFAULT_PARAMS, **(raw.get("params") or {})}
        template = read_regular_text(base_dir / raw["prompt"]) if raw.get("prompt") else ""
        return cls(models, raw.get("aggregate", "majority"), float(raw.get("pass_score", 0.5)), params, template)

    def graders_for(self, check: dict[str, Any]) -> tuple[str, ...]:
        grader = check.get("grader")
        if grader is None:
            return self.models
        return (grader,) if isinstance(grader, str) else tuple(grader)


# A tag that carries the nonce: `<answer-{{nonce}}>` opens, `</answer-{{nonce}}>` closes.
_NONCE_TAG = re.compile(r"<(/?)([^<>/]*\{\{\s*nonce\s*\}\}[^<>]*)>")
_ANSWER = re.compile(r"\{\{\s*answer\s*\}\}")


def _answer_enclosed(text: str) -> bool:
    """Every {{answer}} sits inside one pair of nonce tags: the nearest tag before it opens
    the pair, the nearest after closes that same tag (break23 F7: a pair of tags before the
    answer, `<a-N>...</b-N>`, or comments with the nonce were taken for enclosing it)."""
    tags = list(_NONCE_TAG.finditer(text))
    for answer in _ANSWER.finditer(text):
        before = [t for t in tags if t.end() <= answer.start()]
        after = [t for t in tags if t.start() >= answer.end()]
        if not before or not after:
            return False
        opening, closing = before[-1], after[0]
        if opening.group(1) or not closing.group(1) or opening.group(2).strip() != closing.group(2).strip():
            return False
    return True


def template_problems(text: str) -> list[str]:
    """What is wrong with a replacement grader template, found at validate time."""
    if (size := len(text.encode("utf-8", "surrogatepass"))) > MAX_RENDERED_BYTES:
        # Every answer was paid for, then every grader request failed as too large (out-143 F9);
        # in bytes, as it is sent (17.8 M 'é' are 35.6 MB: out-144 F4).
        return [f"the grader prompt is {size:,} bytes, past the {MAX_RENDERED_BYTES:,} a request may hold"]
    names = Template(text).names
    problems = []
    # Each of the row's texts a few times at most: a 120 KB template of {{question}} repeated
    # rendered to 40 MB a grader request (out-144 F4).
    uses = Counter(PLACEHOLDER.findall(text))
    if repeated := [name for name in ("question", "answer", "rubric") if uses[name] > MAX_USES]:
        problems.append(f"the grader prompt uses {{{{{repeated[0]}}}}} {uses[repeated[0]]:,} times: at most {MAX_USES}")
    missing = {"rubric", "answer"} - names
    if missing:
        problems.append(f"the grader prompt lacks {', '.join('{{' + n + '}}' for n in sorted(missing))}")
    if "answer" in names and not _answer_enclosed(text):
        # Without a delimiter the answer's text can end "the answer" and pose as instructions.
        problems.append(
            "the grader prompt must put {{answer}} between tags that carry {{nonce}} "
            "(like <answer-{{nonce}}> ... </answer-{{nonce}}> in the shipped template)"
        )
    # As a prompt's text is checked (break20 F26): a malformed `{{ x-y }}` was sent as it stood,
    # and a pasted key would go to the grader on every row.
    problems += [message for _, message in malformed_placeholders(text)]
    if KEY_LIKE.search(text):
        problems.append(
            "the grader prompt holds text that looks like an OpenRouter API key: keys belong in the environment"
        )
    unknown = names - TEMPLATE_NAMES
    if unknown:
        problems.append(
            f"the grader prompt uses unknown placeholder(s) {', '.join(sorted(unknown))} "
            f"(it may use {', '.join(sorted(TEMPLATE_NAMES))})"
        )
    return problems


_CALLS_MARK = "[tool calls:"  # how the grader is shown an answer's calls


def answer_text(content: str, tool_calls: tuple[dict[str, Any], ...] | list[dict[str, Any]] = ()) -> str:
    """What the grader sees of an answer: its text, and its tool calls when it made any. Text
    that writes the calls' mark is shown as the answer's own words: an answer that only wrote
    `[tool calls: ...]` read to the grader byte for byte as one that made the call (break54 F6)."""
    content = content.replace(_CALLS_MARK, "[the answer's text, not a call: tool calls:")
    if not tool_calls:
        return content
    calls = orjson.dumps([{"name": c.get("name"), "arguments": c.get("arguments")} for c in tool_calls]).decode()
    return f"{content}\n{_CALLS_MARK} {calls}]" if content else f"{_CALLS_MARK} {calls}]"


def grader_body(settings: GraderSettings, model: str, question: str, rubric: str, answer: str) -> dict[str, Any]:
    """The chat request sent to one grader."""
    nonce = hashlib.sha256(orjson.dumps([question, rubric, answer])).hexdigest()[:16]
    text = Template(settings.template or shipped_template()).render(
        {"question": question, "rubric": rubric, "answer": answer, "nonce": nonce}
    )
    # extra_body merges into the body as for a row (break14c m1: it was sent as a key of its own).
    body = request_body(model, [{"role": "user", "content": text}], settings.params)
    body["response_format"] = RESPONSE_FORMAT
    return body


class VerdictError(ValueError):
    """The grader's reply is not a verdict (not JSON, or not valid against the schema)."""


def _why_not_json(content: str) -> str:
    """What is wrong with a reply `parse_json` refused, when Python's own reader takes it: a
    prose reply was said to have "NaN or Infinity in it, or a key given twice" (break27 m2)."""
    try:
        json.loads(content.strip().removeprefix("```json").removesuffix("```"))
    except (ValueError, RecursionError):
        return " (prose, a reply cut short, or nothing)" if content.strip() else " (it is empty)"
    return " to rely on (NaN or Infinity in it, or a key given twice)"


def parse_verdict(content: str) -> dict[str, Any]:
    """{pass, score, reason} from the grader's reply, or VerdictError."""
    from jsonschema import Draft202012Validator

    # A key given twice is refused: `{"pass": false, ..., "pass": true}` read as a pass, the
    # last key winning, where other readers take the first (break23 F14).
    ok, data = parse_json(content, unique_keys=True)
    if not ok:
        raise VerdictError(f"the grader's reply is not JSON{_why_not_json(content)}")
    error = next(iter(Draft202012Validator(VERDICT_SCHEMA).iter_errors(data)), None)
    if error is not None:
        raise VerdictError(f"the grader's reply is not a verdict: {error.message[:120]}")
    # bool is an int in Python: JSON `true` as a score was refused by the schema already.
    score = float(data["score"])
    if not math.isfinite(score):  # NaN is not JSON, and compares as inside any range
        raise VerdictError("the grader's reply is not a verdict: its score is not a finite number")
    if (data["pass"], score) in ((True, 0.0), (False, 1.0)):  # which half counts was the panel's setting (break54 F10)
        said = f"pass {str(data['pass']).lower()} with score {score:g}"
        raise VerdictError(f"the grader's reply is not a verdict: {said}")
    return {"pass": data["pass"], "score": score, "reason": data["reason"][:MAX_REASON]}


def aggregate(verdicts: list[dict[str, Any]], how: str, pass_score: float) -> tuple[bool | None, float | None, str]:
    """Several graders' verdicts as one: (pass, score, reason). Any grader that failed to give
    a verdict makes the result undecided (None): a partial panel is not the panel asked for."""
    failed = [v for v in verdicts if v.get("error")]
    if failed or not verdicts:
        first = failed[0] if failed else {"model": "-", "error": "no grader"}
        return None, None, f"grader {first['model']}: {first['error']}"
    mean = sum(v["score"] for v in verdicts) / len(verdicts)
    score = round(mean, 4)  # shown; the unrounded mean is what is compared (break43 F4: 0.49999 passed 0.5)
    if len(verdicts) == 1:
        return bool(verdicts[0]["pass"]), score, verdicts[0]["reason"]
    votes = sum(bool(v["pass"]) for v in verdicts)
    if how == "mean":
        passed = mean >= pass_score - 1e-9  # 0.7 and 0.1 make 0.39999999999999997: at 0.4 (verify46)
        reason = f"mean score {score:.2f} (pass at {pass_score:.2f})"
        if passed and votes == 0:
            # Every grader said fail and their mean score passes it: three graders each "pass:
            # false, score: 0.8" passed the check (break61 F4). Not a verdict. (Every grader saying
            # pass below the pass score fails it: the panel's bar is the stricter.)
            return None, score, f"every grader said fail, but their {reason}: contradictory, not a verdict"
    else:
        passed = votes * 2 > len(verdicts)  # a tie is not a majority
        reason = f"{votes} of {len(verdicts)} graders passed it"
    dissent = next((v for v in verdicts if bool(v["pass"]) != passed), None)
    if dissent is not None:
        reason += f"; {dissent['model']}: {dissent['reason']}"
    return passed, score, reason


def one_grader(grader: Any) -> bool:
    """A check's own grader that is one model: a name, or a list of one (verify34 N4)."""
    return isinstance(grader, str) or (isinstance(grader, list) and len(grader) == 1)


def check_kinds(checks: Any) -> set[str]:
    """What a list of checks holds, for rules that ask it of every row: "checks" (any at all),
    "one" (a judge check with one grader of its own), "panel" (one that takes the job's aggregate),
    "untimed" (one that is not `max_latency_ms`: a batch row, which has no latency, can meet it)."""
    if not isinstance(checks, list) or not checks:
        return set()
    kinds = {"checks"}
    for check in checks:
        if isinstance(check, dict) and "judge" in check:
            kinds.add("one" if one_grader(check.get("grader")) else "panel")
        if not (isinstance(check, dict) and "max_latency_ms" in check):
            kinds.add("untimed")
    return kinds
