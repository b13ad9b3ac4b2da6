"""The simulator as a grader and as a tool-calling model: deterministic, with dials.

As a grader (a request whose `response_format.json_schema.name` is batchrun's verdict
schema) it reads the rubric and the answer out of their nonce-tagged blocks and grades:
every quoted phrase of the rubric ("..." or '...') must appear in the answer; without
quoted phrases, the known answer to the question (a capital, a sum) must; otherwise it
passes 80% of answers, by hash. It never reads a verdict out of the answer. `judge_bias`
passes that share of failing answers anyway; `judge_unparseable` answers that share in
prose instead of JSON. Every draw is a hash of the request, so a verdict replays exactly.

As a tool-calling model (a request with `tools`) it calls the forced function, or the
first tool for `required`, or under `auto` a tool whose name's words appear in the
question; arguments fill the function's declared properties from the question. With the
model's accuracy it calls right; otherwise it leaves out the required arguments.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from ._answers import _ARITHMETIC, _CAPITALS  # the same knowledge the simulator answers with

VERDICT_SCHEMA_NAME = "batchrun_verdict"  # the same name batchrun's _judge sends
_BLOCK = r"<{tag}-([0-9a-f]+)>\n(.*?)\n</{tag}-\1>"
_QUOTED = re.compile(r"\"([^\"]+)\"|'([^']+)'")


def _draw(*parts: str) -> float:
    digest = hashlib.sha256("\n".join(parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 0xFFFFFFFF


def _block(tag: str, text: str) -> str | None:
    match = re.search(_BLOCK.format(tag=tag), text, re.DOTALL)
    return match.group(2) if match else None


def _known_answer(question: str) -> str | None:
    lowered = question.lower()
    for country, capital in _CAPITALS.items():
        if country in lowered:
            return capital
    match = _ARITHMETIC.search(question)
    if match:
        a, op, b = int(match.group(1)), match.group(2), int(match.group(3))
        return str(a + b if op == "+" else a - b if op == "-" else a * b)
    return None


def grade_as_judge(model: str, prompt: str, bias: float, unparseable: float) -> str:
    rubric = _block("rubric", prompt)
    answer = _block("answer", prompt)
    question = _block("question", prompt) or ""
    if rubric is None or answer is None:
        return json.dumps({"pass": False, "score": 0.0, "reason": "no rubric or answer block found"})
    if _draw("unparseable", model, prompt) < unparseable:
        return "The answer looks fine to me overall."
    phrases = [a or b for a, b in _QUOTED.findall(rubric)]
    known = _known_answer(question)
    lowered = answer.lower()
    if phrases:
        passed = all(p.lower() in lowered for p in phrases)
        why = (
            "it contains " + ", ".join(phrases)
            if passed
            else f"it lacks {next(p for p in phrases if p.lower() not in lowered)!r}"
        )
    elif known is not None:
        passed = known.lower() in lowered
        why = f"it {'gives' if passed else 'does not give'} {known}"
    else:
        passed = bool(answer.strip()) and _draw("free", model, rubric, answer) < 0.8
        why = "it meets the rubric" if passed else "it misses the rubric"
    if not passed and _draw("bias", model, rubric, answer) < bias:
        passed, why = True, "lenient: " + why
    score = round((0.75 if passed else 0.05) + 0.2 * _draw("score", model, rubric, answer), 3)
    return json.dumps({"pass": passed, "score": score, "reason": why})


def _argument(name: str, kind: str, question: str) -> Any:
    if kind in ("number", "integer"):
        number = re.search(r"-?\d+", question)
        return int(number.group()) if number else 1
    if kind == "boolean":
        return True
    known = _known_answer(question)
    words = re.findall(r"\b[A-Z][a-z]+\b", question)
    return known or (words[-1] if words else name)


def tool_calls_for(model: str, messages: list[dict[str, Any]], body: dict[str, Any], accuracy: float) -> list[Any]:
    # Only function tools are the caller's to run; server tools (web search) run at the server.
    tools = [
        t["function"]
        for t in body.get("tools") or []
        if isinstance(t, dict) and t.get("type", "function") == "function" and isinstance(t.get("function"), dict)
    ]
    choice = body.get("tool_choice", "auto")
    if not tools or choice == "none":
        return []
    question = next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")
    if isinstance(choice, dict):
        chosen = next((t for t in tools if t.get("name") == (choice.get("function") or {}).get("name")), None)
    elif choice == "required":
        chosen = tools[0]
    else:
        lowered = question.lower()
        chosen = next(
            (t for t in tools if all(w in lowered for w in str(t.get("name", "")).lower().split("_") if len(w) > 3)),
            None,
        )
    if chosen is None:
        return []
    parameters = chosen.get("parameters") or {}
    right = _draw("tool", model, question) < accuracy
    arguments = {}
    if right:
        for name, spec in (parameters.get("properties") or {}).items():
            arguments[name] = _argument(name, str((spec or {}).get("type", "string")), question)
    call_id = "call_" + hashlib.sha256(f"{model}{question}".encode()).hexdigest()[:12]
    return [
        {
            "id": call_id,
            "type": "function",
            "function": {"name": chosen.get("name"), "arguments": json.dumps(arguments)},
        }
    ]
