"""Whether a pass rate changed between two runs, per group (the run, each model, each prompt):
McNemar's exact test on the rows both runs graded, Fisher's on the rows one run alone graded
(`diff`). With repeats, the paired unit is the item (its repeats pooled): the sign test on the
items whose share of passing repeats fell or rose, which is McNemar's when each item is one row."""

from __future__ import annotations

import math
from collections.abc import Iterable, Set
from dataclasses import dataclass, field
from typing import Any

from ._stats import compare_paired, compare_parts, compare_rates
from ._summary_types import GroupFigures, exact_pass_rate

PAIRED_TEST = "McNemar's exact test (paired rows)"
ITEMS_TEST = "exact sign test (paired items, repeats pooled)"
UNPAIRED_TEST = "Fisher's exact test"
BOTH_TESTS = f"{PAIRED_TEST} and {UNPAIRED_TEST} (rows in one run only), Bonferroni"
ITEMS_AND_ROWS = f"{ITEMS_TEST} and {UNPAIRED_TEST} (items in one run only), Bonferroni"
ITEMS_UNPAIRED = f"{UNPAIRED_TEST} (items, repeats pooled)"
_NO_DROP: dict[str, float | bool | None] = {"p_value": None, "significant": False}
TEST_WORDS = {
    PAIRED_TEST: "paired ",
    BOTH_TESTS: "paired and unpaired rows, ",
    ITEMS_TEST: "paired items, ",
    ITEMS_AND_ROWS: "paired and unpaired items, ",
    ITEMS_UNPAIRED: "items, ",
}


@dataclass
class Pairing:
    """A group's graded rows on each side, by item: the same items on both make a paired design.
    An item is one row, or, with repeats, its repeats: repeats of one item are not independent
    trials, and one item of ten failing its 10 repeats read as a significant drop, p=0.002, where
    one item is p=1 (break61 F3)."""

    before: dict[str, list[bool]] = field(default_factory=dict)
    after: dict[str, list[bool]] = field(default_factory=dict)

    def common(self) -> set[str]:
        return self.before.keys() & self.after.keys()

    def repeated(self) -> bool:
        return any(len(votes) > 1 for side in (self.before, self.after) for votes in side.values())

    def counts(self) -> tuple[int, int] | None:
        """(fell, rose): the items both runs graded whose share of passing rows fell, and rose;
        None when they share none. (pass -> fail, fail -> pass) for items of one row.

        Rows graded on one side only are left out of the test: compared as two samples, runs
        that share rows count those rows twice, and one row that flipped, its 20 neighbours gone
        from the second run, read as a significant drop (21/21 -> 0/1, p=0.045: break27 M4)."""
        common = self.common()
        if not common:
            return None
        moves = [_share(self.after[k]) - _share(self.before[k]) for k in common]
        return sum(1 for m in moves if m < 0), sum(1 for m in moves if m > 0)

    def unpaired_counts(self, *, only: bool = True) -> tuple[int, int, int, int] | None:
        """(passed, graded) of the items only the first run graded, then of those only the second
        did (`only`; else of every item of each run): two samples; None unless each has some.

        An item of repeats counts once, its passes the rows' pass rate times the items, rounded,
        as the intervals count them: its 10 repeats read as 10 rows, one renamed item passing 4
        of 10 was "a significant drop" from one passing 10 of 10, p=0.02 (verify65 F3)."""
        keys: tuple[Set[str], Set[str]] = (self.before.keys(), self.after.keys())
        if only:
            keys = (keys[0] - self.after.keys(), keys[1] - self.before.keys())
        if not keys[0] or not keys[1]:
            return None
        before, after = (self._sample(side, k) for side, k in ((self.before, keys[0]), (self.after, keys[1])))
        return (*before, *after)

    def _sample(self, side: dict[str, list[bool]], keys: Iterable[str]) -> tuple[int, int]:
        votes = [side[k] for k in keys]
        rows = [vote for item in votes for vote in item]
        if not self.repeated():
            return sum(rows), len(rows)
        return math.floor(sum(rows) / len(rows) * len(votes) + 0.5), len(votes)


def _share(votes: list[bool]) -> float:
    return sum(votes) / len(votes)


def pairings_of(a_rows: dict[str, dict[str, Any]], b_rows: dict[str, dict[str, Any]]) -> dict[str, Pairing]:
    """Per group ("", "model NAME", "prompt ID"), the verdicts of its graded rows, by item: the
    row's id, or with repeats in either run, its item (model, prompt, variables)."""
    repeated = any(row.get("repeat") for rows in (a_rows, b_rows) for row in rows.values())
    groups: dict[str, Pairing] = {}
    for side, rows in (("before", a_rows), ("after", b_rows)):
        for row_id, row in rows.items():
            if row["passed"] is None:
                continue
            for group in ("", f"model {row['model']}", f"prompt {row['prompt_id']}"):
                votes = getattr(groups.setdefault(group, Pairing()), side)
                votes.setdefault(row["item"] if repeated else row_id, []).append(bool(row["passed"]))
    return groups


def rate_change(a: GroupFigures, b: GroupFigures, alpha: float, pairing: Pairing | None) -> dict[str, Any]:
    """One pass rate before and after, whether the change is significant (McNemar's exact test on
    the rows both runs graded, each row its own control; else, no row in common, Fisher's exact
    test on the pass/fail counts), and whether it is a significant drop (`dropped`). A drop is
    read from the rows that fell, not from the overall rate: 7 passes of the kept rows lost while
    100 easy rows were added read "75% -> 90%, significant", exit 0, and rows that only improved
    while 1,000 passing rows left the dataset, a drop, exit 4 (break54 F2)."""
    rate_a, rate_b = a.get("pass_rate"), b.get("pass_rate")
    exact_a, exact_b = exact_pass_rate(a), exact_pass_rate(b)
    moved = (exact_b or 0.0) - (exact_a or 0.0)
    paired = pairing.counts() if pairing is not None else None
    unpaired = pairing.unpaired_counts() if pairing is not None and paired is not None else None
    if paired is not None and unpaired is not None:
        # Rows new in the second run are no less evidence than the kept ones: 16/16 -> 2/16 with
        # two rows kept (passing both times) read "paired p=1, not significant", exit 0 (break43 F1).
        test: dict[str, float | bool | None] = compare_parts(paired, unpaired, moved, alpha)
        drop = compare_parts(paired, unpaired, -1.0, alpha)  # either part falling decides
    elif paired is not None:
        test = compare_paired(*paired, alpha)
        drop = test if paired[0] > paired[1] else _NO_DROP
    else:
        samples = pairing.unpaired_counts(only=False) if pairing is not None and pairing.repeated() else None
        counts = samples or (a.get("passed", 0), a.get("checked", 0), b.get("passed", 0), b.get("checked", 0))
        test = compare_rates(*counts, alpha)
        drop = test if moved < 0 else _NO_DROP
    change = None if exact_a is None or exact_b is None else round(moved, 4)
    return {
        "before": rate_a,
        "after": rate_b,
        "change": change,
        "before_ci95": a.get("pass_rate_ci95"),
        "after_ci95": b.get("pass_rate_ci95"),
        "test": _test_name(pairing, paired is not None, unpaired is not None),
        "rows_paired": len(pairing.common()) if paired is not None and pairing is not None else None,
        "p_value": test["p_value"],
        "significant": bool(test["significant"]),
        "dropped": bool(drop["significant"]),
        "drop_p_value": drop["p_value"],
    }


def _test_name(pairing: Pairing | None, paired: bool, unpaired: bool) -> str:
    if pairing is None or not paired:
        return ITEMS_UNPAIRED if pairing is not None and pairing.repeated() else UNPAIRED_TEST
    if pairing.repeated():
        return ITEMS_AND_ROWS if unpaired else ITEMS_TEST
    return BOTH_TESTS if unpaired else PAIRED_TEST


def rate_changes(
    before: dict[str, Any], after: dict[str, Any], alpha: float, label: str, pairings: dict[str, Pairing]
) -> dict[str, dict[str, Any]]:
    return {
        name: rate_change(before.get(name, {}), after.get(name, {}), alpha, pairings.get(f"{label} {name}"))
        for name in sorted(before.keys() | after.keys())
    }
