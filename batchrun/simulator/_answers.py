"""What the simulated models say: deterministic functions of the model and the question."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re

_CAPITALS = {
    "france": "Paris",
    "japan": "Tokyo",
    "italy": "Rome",
    "germany": "Berlin",
    "spain": "Madrid",
    "canada": "Ottawa",
    "australia": "Canberra",
    "brazil": "Brasília",
    "egypt": "Cairo",
    "kenya": "Nairobi",
    "norway": "Oslo",
    "peru": "Lima",
    "india": "New Delhi",
    "mexico": "Mexico City",
}
_ARITHMETIC = re.compile(r"(-?\d+)\s*([+*x×-])\s*(-?\d+)")


def tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


@functools.lru_cache(maxsize=4096)
def answer_to(model: str, user: str, json_format: bool, accuracy: float, sampled: str = "") -> str:
    """The answer of `model` to `user`: right with probability `accuracy`, the same every time
    (for one `sampled` draw: a row id when the request samples, so repeats can differ)."""
    digest = hashlib.sha256(f"{model}\n{user}{sampled}".encode()).digest()
    correct = int.from_bytes(digest[:2], "big") / 65535 < accuracy
    lowered = str(user).lower()
    answer = None
    for country, capital in _CAPITALS.items():
        if country in lowered:
            answer = capital
    match = _ARITHMETIC.search(str(user))
    if answer is None and match:
        a, op, b = int(match.group(1)), match.group(2), int(match.group(3))
        answer = str(a + b if op == "+" else a - b if op == "-" else a * b)
    if answer is not None and not correct:
        answer = "I am not sure." if digest[2] % 2 else "Unknown"
    if json_format or "json" in lowered:
        if not correct and digest[3] % 2:
            return "Sure! Here is the answer: " + (answer or "42")
        return json.dumps(
            {"answer": answer or f"item-{digest.hex()[:6]}", "confidence": round(0.5 + digest[4] / 512, 3)}
        )
    if answer is not None:
        return answer
    words = re.findall(r"[A-Za-z]+", str(user))[:12]
    return f"Simulated reply {digest.hex()[:8]}: " + " ".join(reversed(words))
