"""`batchrun cache explain`: for each row of a job, hit or miss, and for a miss exactly why.

A miss is compared with the nearest stored request: first those of the same row (same
stable id: same job, model, prompt, vars and repeat; so the prompt text, a message, a
param or the base URL changed), else those of the same prompt row under any model or
repeat index (so the model or the repeat index differs too). "Nearest" is the one with
the fewest differences, the newest among equals. Values are compared by their exact JSON
encoding, as the key is: `temperature: 0` and `temperature: 0.0` are different requests,
and explain says so rather than showing two equal-looking numbers.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from ._cache import Freshness, ResponseCache, cache_key, normalize_base_url
from ._cache_hits import why_not_a_hit
from ._cache_values import CacheEntry
from ._formats import utc_seconds
from ._job import Job
from ._matrix import Request, matrix_requests, row_group_id

UNSET = "(unset)"
_EXCERPT = 70


@dataclass(frozen=True)
class Difference:
    field: str  # "prompt text", "message 1 (system)", "param temperature", "model", "repeat index", "base URL"
    old: Any
    new: Any


@dataclass
class Explanation:
    request: Request
    status: str  # "hit", "expired" (stored, older than ttl_s), "unusable" (stored, not for this job) or "miss"
    generated_at: str | None = None
    cost: float | None = None
    nearest: CacheEntry | None = None
    differences: list[Difference] = field(default_factory=list)
    why: str | None = None  # "unusable": why this job does not take the stored answer


def _same(old: Any, new: Any) -> bool:
    return orjson.dumps(old, option=orjson.OPT_SORT_KEYS) == orjson.dumps(new, option=orjson.OPT_SORT_KEYS)


def _message_label(index: int, message: Any, count: int) -> str:
    role = message.get("role") if isinstance(message, dict) else None
    if role == "user" and index == count - 1:
        return "prompt text"
    return f"message {index + 1} ({role})"


def _message_differences(old: Any, new: list[dict[str, Any]]) -> list[Difference]:
    """Messages aligned as a diff aligns lines, so an added system message shows as added,
    not as every later message changed."""
    if not isinstance(old, list):
        return [Difference("messages", old, new)]
    encode = [orjson.dumps(m, option=orjson.OPT_SORT_KEYS) for m in old]
    matcher = difflib.SequenceMatcher(None, encode, [orjson.dumps(m, option=orjson.OPT_SORT_KEYS) for m in new])
    found = []
    for op, old_start, old_end, new_start, new_end in matcher.get_opcodes():
        if op == "equal":
            continue
        pairs = list(zip(range(old_start, old_end), range(new_start, new_end), strict=False))
        for i, j in pairs:
            before, after = old[i], new[j]
            if _get(before, "role") != after.get("role"):
                found.append(Difference(f"message {j + 1} role", _get(before, "role"), after.get("role")))
            else:
                found.append(Difference(_message_label(j, after, len(new)), _get(before, "content"), after["content"]))
        for j in range(new_start + len(pairs), new_end):
            found.append(Difference(_message_label(j, new[j], len(new)), UNSET, new[j]["content"]))
        for i in range(old_start + len(pairs), old_end):
            found.append(Difference(_message_label(i, old[i], len(old)), _get(old[i], "content"), UNSET))
    return found


def _get(value: Any, name: str) -> Any:
    return value.get(name, UNSET) if isinstance(value, dict) else UNSET


def differences(entry: CacheEntry, request: Request, base_url: str) -> list[Difference]:
    """Every field in which the stored request differs from the one the job would send."""
    old, new = entry.body, request.body
    found = []
    if not _same(old.get("model"), new["model"]):
        found.append(Difference("model", old.get("model", UNSET), new["model"]))
    found += _message_differences(old.get("messages"), new["messages"])
    for name in sorted((old.keys() | new.keys()) - {"model", "messages"}):
        before, after = old.get(name, UNSET), new.get(name, UNSET)
        if not _same(before, after):
            found.append(Difference(f"param {name}", before, after))
    if entry.repeat != request.repeat:
        found.append(Difference("repeat index", entry.repeat, request.repeat))
    if normalize_base_url(entry.base_url) != normalize_base_url(base_url):
        found.append(Difference("base URL", entry.base_url, normalize_base_url(base_url)))
    return found


def _selected(request: Request, row: str | None, prompt: str | None, model: str | None) -> bool:
    return (
        (row is None or request.id.startswith(row))
        and (prompt is None or request.prompt_id == prompt)
        and (model is None or request.model == model)
    )


def explain(
    job: Job,
    store: ResponseCache,
    base_url: str,
    *,
    row: str | None = None,
    prompt: str | None = None,
    model: str | None = None,
    fresh: Freshness | None = None,
    store_length: bool = False,
) -> list[Explanation]:
    found: list[Explanation] = []
    cap, batch = job.run.max_response_bytes, job.run.mode == "batch"
    groups: dict[str, str] = {}  # row id -> its prompt row's group, for the misses
    for request in matrix_requests(job):
        if not _selected(request, row, prompt, model):
            continue
        key = cache_key(request.fingerprint, request.repeat, base_url)
        probe = store.probe_many([key], fresh).get(key)
        if probe is not None and probe.body == request.payload:  # stored: a hit, or why not, as a run judges it
            why = why_not_a_hit(request, probe, cap, store_length, batch)
            status = "hit" if why is None else "unusable"
            when, cost = (probe.answer.generated_at, probe.answer.cost) if probe.answer else (None, None)
            found.append(Explanation(request, status, when, cost, why=why))
            continue
        stale = store.lookup(key, request.payload, None) if fresh is not None else None
        if stale is not None:
            # Not fresh for being stored ahead of the clock, not old (out-103 F10, out-105 F5: "older than ttl_s").
            ahead = fresh is not None and store.lookup(key, request.payload, (-math.inf, fresh[1])) is None
            why = "stored ahead of this clock: its age is unknown" if ahead else None
            found.append(Explanation(request, "expired", stale.generated_at, stale.cost, why=why))
            continue
        groups[request.id] = row_group_id(job.name, request.prompt_id, request.vars)
        found.append(Explanation(request, "miss"))
    stored = store.entries_of_groups(set(groups.values())) if groups else {}
    for item in found:
        if item.status != "miss":
            continue
        candidates = stored.get(groups[item.request.id], [])
        # The same row first (the same model and repeat index); else the prompt row's others.
        candidates = [e for e in candidates if e.row_id == item.request.id] or candidates
        if candidates:
            scored = [(differences(entry, item.request, base_url), entry) for entry in candidates]
            item.differences, item.nearest = min(scored, key=lambda pair: (len(pair[0]), -pair[1].created_at))
    return found


# -- rendering ----------------------------------------------------------------------------
def _excerpts(old: str, new: str) -> tuple[str, str]:
    """Both strings around their first difference, so a change deep in a long prompt shows."""
    if len(old) <= _EXCERPT and len(new) <= _EXCERPT:
        return json.dumps(old, ensure_ascii=False), json.dumps(new, ensure_ascii=False)
    start = 0
    while start < min(len(old), len(new)) and old[start] == new[start]:
        start += 1
    start = max(0, start - 20)

    def cut(text: str) -> str:
        piece = text[start : start + _EXCERPT]
        shown = json.dumps(piece, ensure_ascii=False)
        return ("..." if start else "") + shown + ("..." if start + _EXCERPT < len(text) else "")

    return cut(old), cut(new)


def _value(value: Any) -> str:
    if value == UNSET:
        return UNSET
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= _EXCERPT * 2 else text[: _EXCERPT * 2 - 3] + "..."


def render_difference(difference: Difference) -> str:
    old, new = difference.old, difference.new
    if isinstance(old, str) and isinstance(new, str) and UNSET not in (old, new):
        shown_old, shown_new = _excerpts(old, new)
    else:
        shown_old, shown_new = _value(old), _value(new)
    return f"{difference.field}: {shown_old} -> {shown_new}"


def _row_label(request: Request) -> str:
    variables = json.dumps(request.vars, ensure_ascii=False, sort_keys=True)
    if len(variables) > 50:
        variables = variables[:47] + "..."
    return f"{request.id[:12]}  {request.model}  {request.prompt_id}  {variables}  repeat {request.repeat}"


def render_explanations(explanations: list[Explanation]) -> tuple[str, int]:
    """The text of `cache explain`, and how many rows it covered."""
    lines: list[str] = []
    counts = {"hit": 0, "expired": 0, "unusable": 0, "miss": 0, "never": 0}
    for item in explanations:
        label = _row_label(item.request)
        if item.status == "hit":
            counts["hit"] += 1
            saved = "" if item.cost is None else f", ${item.cost:.6f} saved"
            lines.append(f"hit   {label}  (answered {item.generated_at}{saved})")
        elif item.status == "expired":
            counts["expired"] += 1
            why = item.why or "older than run.cache.ttl_s"
            lines.append(f"miss  {label}  expired: answered {item.generated_at}, {why}")
        elif item.status == "unusable":
            counts["unusable"] += 1
            lines.append(f"miss  {label}  stored ({item.generated_at or '?'}) but not used: {item.why}")
        elif item.nearest is None:
            counts["never"] += 1
            # Not "never run": an error, an answer cut at max_tokens or one of unknown cost ran
            # and was paid for, yet never stored (break20 F25); a pruned one was (verify21 V17).
            lines.append(f"miss  {label}  not in the cache (not run with it, an answer it never keeps, or pruned)")
        else:
            counts["miss"] += 1
            lines.append(
                f"miss  {label}  nearest entry (row {item.nearest.row_id[:12]}, stored "
                f"{utc_seconds(item.nearest.created_at)}) differs in:"
            )
            lines += [f"        {render_difference(d)}" for d in item.differences]
    total = sum(counts.values())
    misses = total - counts["hit"]
    lines.append(
        f"{total} row(s): {counts['hit']} hit(s), {misses} miss(es)"
        f" ({counts['miss']} changed, {counts['expired']} expired, "
        + (f"{counts['unusable']} not usable by this job, " if counts["unusable"] else "")
        + f"{counts['never']} not in the cache)"
    )
    return "\n".join(lines), total
