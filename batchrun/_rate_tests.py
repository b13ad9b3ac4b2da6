"""Whether a pass rate changed between two runs, per group (the run, each model, each prompt):
McNemar's exact test on the rows both runs graded, Fisher's on the rows one run alone graded
(`diff`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._stats import compare_paired, compare_parts, compare_rates
from ._summary_types import GroupFigures, exact_pass_rate

PAIRED_TEST = "McNemar's exact test (paired rows)"
UNPAIRED_TEST = "Fisher's exact test"
BOTH_TESTS = f"{PAIRED_TEST} and {UNPAIRED_TEST} (rows in one run only), Bonferroni"
_NO_DROP: dict[str, float | bool | None] = {"p_value": None, "significant": False}
TEST_WORDS = {PAIRED_TEST: "paired ", BOTH_TESTS: "paired and unpaired rows, "}


@dataclass
class Pairing:
    """A group's graded rows on each side; the same ids on both make a paired design."""

    before: dict[str, bool] = field(default_factory=dict)
    after: dict[str, bool] = field(default_factory=dict)

    def common(self) -> set[str]:
        return self.before.keys() & self.after.keys()

    def counts(self) -> tuple[int, int] | None:
        """(pass -> fail, fail -> pass) over the rows both runs graded, None when they share none.

        Rows graded on one side only are left out of the test: compared as two samples, runs
        that share rows count those rows twice, and one row that flipped, its 20 neighbours gone
        from the second run, read as a significant drop (21/21 -> 0/1, p=0.045: break27 M4)."""
        common = self.common()
        if not common:
            return None
        down = sum(1 for k in common if self.before[k] and not self.after[k])
        up = sum(1 for k in common if not self.before[k] and self.after[k])
        return down, up

    def unpaired_counts(self) -> tuple[int, int, int, int] | None:
        """(passed, graded) of the rows only the first run graded, then of those only the
        second did: two samples with no row in both; None unless each run has some."""
        only_before, only_after = self.before.keys() - self.after.keys(), self.after.keys() - self.before.keys()
        if not only_before or not only_after:
            return None
        passed_before = sum(self.before[k] for k in only_before)
        return passed_before, len(only_before), sum(self.after[k] for k in only_after), len(only_after)


def pairings_of(a_rows: dict[str, dict[str, Any]], b_rows: dict[str, dict[str, Any]]) -> dict[str, Pairing]:
    """Per group ("", "model NAME", "prompt ID"), the verdicts of its graded rows."""
    groups: dict[str, Pairing] = {}
    for side, rows in (("before", a_rows), ("after", b_rows)):
        for row_id, row in rows.items():
            if row["passed"] is None:
                continue
            for group in ("", f"model {row['model']}", f"prompt {row['prompt_id']}"):
                getattr(groups.setdefault(group, Pairing()), side)[row_id] = bool(row["passed"])
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
        test = compare_rates(a.get("passed", 0), a.get("checked", 0), b.get("passed", 0), b.get("checked", 0), alpha)
        drop = test if moved < 0 else _NO_DROP
    change = None if exact_a is None or exact_b is None else round(moved, 4)
    return {
        "before": rate_a,
        "after": rate_b,
        "change": change,
        "before_ci95": a.get("pass_rate_ci95"),
        "after_ci95": b.get("pass_rate_ci95"),
        "test": (BOTH_TESTS if unpaired is not None else PAIRED_TEST) if paired is not None else UNPAIRED_TEST,
        "rows_paired": len(pairing.common()) if paired is not None and pairing is not None else None,
        "p_value": test["p_value"],
        "significant": bool(test["significant"]),
        "dropped": bool(drop["significant"]),
        "drop_p_value": drop["p_value"],
    }


def rate_changes(
    before: dict[str, Any], after: dict[str, Any], alpha: float, label: str, pairings: dict[str, Pairing]
) -> dict[str, dict[str, Any]]:
    return {
        name: rate_change(before.get(name, {}), after.get(name, {}), alpha, pairings.get(f"{label} {name}"))
        for name in sorted(before.keys() | after.keys())
    }
