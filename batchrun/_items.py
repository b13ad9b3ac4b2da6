"""Items and repeats: an item is one model x prompt x variables, answered `repeat` times.

`run.pass_threshold.per_item: {min: 8, of: 10}` gates each item on "passes at least 8 of
its 10 repeats". Repeats that ended in error, or whose grader failed, are not graded: an
item with fewer graded repeats than `of` fails only when even passing every missing
repeat could not reach `min`, passes when it already has `min` passes, and is otherwise
undecided (counted apart, like an error row). Without `per_item`, every repeat must pass:
an item fails when a graded repeat failed, and one whose other repeats all passed but some
were not graded is undecided (break23 F2: it was a green JUnit case). An item is *flaky*
when it both passed and failed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from ._stats import clustered_interval

MAX_FLAKY_SHOWN = 20


def item_key(record: dict[str, Any]) -> str:
    """The same for every repeat of one model x prompt x variables."""
    raw = orjson.dumps(
        [record.get("model"), record.get("prompt_id"), record.get("vars") or {}], option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(raw).hexdigest()[:20]


@dataclass(frozen=True)
class ItemGate:
    minimum: int | None = None  # passes needed ...
    of: int | None = None  # ... out of this many repeats; None: every graded repeat must pass

    @classmethod
    def from_threshold(cls, raw: Any) -> ItemGate:
        per_item = raw.get("per_item") if isinstance(raw, dict) else None
        if not per_item:
            return cls()
        return cls(int(per_item["min"]), int(per_item["of"]))

    @classmethod
    def recorded(cls, summary: dict[str, Any]) -> ItemGate:
        """The gate a run's summary says it had (`items.gate`), so a report without the job
        judges items as the run did (verify23 N6: a JUnit item the run passed was red)."""
        items = summary.get("items")
        gate = items.get("gate") if isinstance(items, dict) else None
        if isinstance(gate, dict):
            low, of = gate.get("min"), gate.get("of")
            if type(low) is int and type(of) is int and 1 <= low <= of:  # not a bool: True is an int
                return cls(low, of)
        return cls()

    @property
    def configured(self) -> bool:
        return self.minimum is not None

    def verdict(self, passes: int, graded: int, repeats: int) -> bool | None:
        """True (meets the gate), False (cannot), None (undecided: too many ungraded repeats)."""
        if graded == 0:
            return None
        if self.minimum is None or self.of is None:  # every repeat must pass
            if passes < graded:
                return False
            return None if graded < repeats else True
        if passes >= self.minimum:
            return True
        missing = max(0, self.of - graded)
        return None if passes + missing >= self.minimum else False

    def describe(self, graded: int) -> str:
        if self.minimum is None:
            return "every repeat must pass"
        return f"needs {self.minimum} of {self.of}"


@dataclass
class _Tally:
    model: str
    prompt_id: str
    vars: dict[str, Any]
    passes: int = 0
    graded: int = 0
    rows: int = 0
    answered: int = 0  # ok rows ...
    checked: int = 0  # ... that had checks: none of an item's answers had any, it has nothing to gate


@dataclass
class ItemTally:
    """Pass counts per item, kept while a summary is built (one small entry per item)."""

    items: dict[str, _Tally] = field(default_factory=dict)
    repeated: bool = False

    def add(self, record: dict[str, Any]) -> None:
        self.repeated = self.repeated or int(record.get("repeat") or 0) > 0
        key = item_key(record)
        tally = self.items.get(key)
        if tally is None:
            tally = self.items[key] = _Tally(record["model"], record["prompt_id"], record.get("vars") or {})
        tally.rows += 1
        if record.get("status") == "ok":
            tally.answered += 1
            tally.checked += bool(record.get("checks"))
            if record.get("passed") is not None:
                tally.graded += 1
                tally.passes += bool(record["passed"])

    def intervals(self) -> dict[str, tuple[float, float] | None]:
        """The 95% interval of each pass rate ("" the run's, "model M", "prompt P") with an item's
        repeats as one cluster (_stats.clustered_interval); {} for a run without repeats."""
        if not self.repeated:
            return {}
        groups: dict[str, list[tuple[int, int]]] = {}
        for tally in self.items.values():
            for group in ("", f"model {tally.model}", f"prompt {tally.prompt_id}"):
                groups.setdefault(group, []).append((tally.passes, tally.graded))
        return {group: clustered_interval(tallies) for group, tallies in groups.items()}

    def result(self, gate: ItemGate) -> dict[str, Any] | None:
        """The `items` part of a summary; None for a run without repeats."""
        if not self.repeated:
            return None
        # An item of a prompt without checks (answered, never checked) is not gated: it was
        # "undecided", and a per-item gate failed a run whose every row was ok (break33 M1).
        unchecked = {key for key, t in self.items.items() if t.answered and not t.checked}
        verdicts = {
            key: gate.verdict(t.passes, t.graded, t.rows) for key, t in self.items.items() if key not in unchecked
        }
        flaky = [t for t in self.items.values() if 0 < t.passes < t.graded]
        failing = [t for key, t in self.items.items() if verdicts.get(key) is False]
        return {
            "count": len(self.items),
            "gate": None if not gate.configured else {"min": gate.minimum, "of": gate.of},
            "passed": sum(v is True for v in verdicts.values()),
            "failed": len(failing),
            "undecided": sum(v is None for v in verdicts.values()),
            "unchecked": len(unchecked),
            "flaky_count": len(flaky),
            "flaky": [_describe(t) for t in flaky[:MAX_FLAKY_SHOWN]],
            "failing": [_describe(t) for t in failing[:MAX_FLAKY_SHOWN]],
        }


def _describe(tally: _Tally) -> dict[str, Any]:
    return {
        "model": tally.model,
        "prompt_id": tally.prompt_id,
        "vars": tally.vars,
        "passed": tally.passes,
        "graded": tally.graded,
    }
