"""Wilson intervals, Fisher's and McNemar's exact tests against hand-worked values and scipy."""

from __future__ import annotations

import itertools
from typing import Any, cast

import pytest

from batchrun._rate_tests import Pairing, rate_change
from batchrun._stats import compare_paired, compare_rates, fisher_exact, mcnemar_exact, wilson_interval
from batchrun._summary_types import GroupFigures

# scipy is the reference and takes over a second to import: once, by the worker that runs these.
pytestmark = pytest.mark.xdist_group("scipy")


@pytest.fixture(scope="module")
def stats() -> Any:
    from scipy import stats  # type: ignore[import-untyped]  # no type hints; only the reference here

    return stats


def test_fisher_tea_tasting_by_hand() -> None:
    # Fisher's lady tasting tea: margins 4/4 of 8. P(k) = C(4,k) C(4,4-k) / 70 = 1,16,36,16,1 /70.
    # Observed k=3 (16/70); two-sided: every table no likelier, 1+16+16+1 = 34/70.
    assert fisher_exact(3, 1, 1, 3) == pytest.approx(34 / 70, rel=1e-12)
    assert fisher_exact(4, 0, 0, 4) == pytest.approx(2 / 70, rel=1e-12)
    assert fisher_exact(2, 2, 2, 2) == pytest.approx(1.0)


def test_fisher_degenerate_margins() -> None:
    assert fisher_exact(0, 0, 3, 4) == 1.0  # one run has no rows
    assert fisher_exact(5, 0, 7, 0) == 1.0  # everything passed in both
    with pytest.raises(ValueError):
        fisher_exact(-1, 0, 0, 0)


def test_fisher_matches_scipy_on_every_small_table(stats: Any) -> None:
    for a, b, c, d in itertools.product(range(6), repeat=4):
        expected = stats.fisher_exact([[a, b], [c, d]]).pvalue
        assert fisher_exact(a, b, c, d) == pytest.approx(expected, rel=1e-9, abs=1e-12), (a, b, c, d)


def test_fisher_matches_scipy_on_large_tables(stats: Any) -> None:
    for table in [(95, 5, 80, 20), (480, 20, 455, 45), (1000, 0, 990, 10), (30, 70, 45, 55)]:
        assert fisher_exact(*table) == pytest.approx(stats.fisher_exact([table[:2], table[2:]]).pvalue, rel=1e-7)


def test_wilson_known_values() -> None:
    # 8 of 10: the textbook Wilson 95% interval is (0.4902, 0.9433).
    low, high = wilson_interval(8, 10) or (0.0, 0.0)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    # 0 of 10 and 10 of 10 stay inside [0, 1] and are not degenerate.
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert wilson_interval(10, 10) == pytest.approx((0.72247, 1.0), abs=1e-5)
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_wilson_matches_scipy(stats: Any) -> None:
    for trials in (1, 2, 5, 10, 37, 100, 1000):
        for successes in sorted({0, 1, trials // 3, trials // 2, trials - 1, trials}):
            successes = max(0, successes)
            ci = stats.binomtest(successes, trials).proportion_ci(confidence_level=0.95, method="wilson")
            assert wilson_interval(successes, trials) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_compare_rates_significance() -> None:
    real = compare_rates(95, 100, 70, 100)  # a real drop
    noise = compare_rates(90, 100, 87, 100)  # noise
    assert real["significant"] is True and (real["p_value"] or 1) < 0.001
    assert noise["significant"] is False and (noise["p_value"] or 0) > 0.5
    assert compare_rates(90, 100, 87, 100, alpha=0.7)["significant"] is True
    assert compare_rates(0, 0, 5, 10) == {"p_value": None, "significant": False}


def test_mcnemar_by_hand() -> None:
    # 8 discordant rows, all pass -> fail: under no change each is a fair coin, so
    # P(all 8 one way) = 1/256, two-sided 2/256.
    assert mcnemar_exact(8, 0) == pytest.approx(2 / 256, rel=1e-12)
    # 1 and 5: P(X <= 1) for Binomial(6, 1/2) = (1 + 6)/64, two-sided 14/64.
    assert mcnemar_exact(1, 5) == pytest.approx(14 / 64, rel=1e-12)
    assert mcnemar_exact(5, 5) == 1.0 and mcnemar_exact(0, 0) == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def test_mcnemar_matches_scipy_binomtest(stats: Any) -> None:
    for down, up in itertools.product(range(25), repeat=2):
        if down + up:
            expected = stats.binomtest(down, down + up, 0.5).pvalue
            assert mcnemar_exact(down, up) == pytest.approx(expected, rel=1e-9, abs=1e-12), (down, up)
    assert mcnemar_exact(130, 90) == pytest.approx(stats.binomtest(130, 220, 0.5).pvalue, rel=1e-7)


def test_pairing_finds_what_independent_counts_cannot() -> None:
    # The same 100 rows: 90 passed, then 8 of them fail and none recovers (90% -> 82%).
    assert compare_rates(90, 100, 82, 100)["significant"] is False  # as if the rows were unrelated
    assert compare_paired(8, 0) == {"p_value": 0.007813, "significant": True}  # 2/256, to 4 figures
    # The same rate change made of 12 flips down and 4 up is weaker evidence.
    assert compare_paired(12, 4)["significant"] is False


def _figures(verdicts: dict[str, list[bool]]) -> GroupFigures:
    passed = sum(sum(votes) for votes in verdicts.values())
    checked = sum(len(votes) for votes in verdicts.values())
    return cast(GroupFigures, {"passed": passed, "checked": checked, "pass_rate": round(passed / checked, 4)})


def _rows(verdicts: dict[str, bool]) -> dict[str, list[bool]]:
    """Each row its own item (no repeats), as `diff` pairs them."""
    return {key: [verdict] for key, verdict in verdicts.items()}


def test_a_drop_is_read_from_the_rows_that_fell_not_from_the_overall_rate() -> None:
    # break54 F2 (a): 7 of 15 kept passes lost while 100 easy rows were added: "75% -> 90%,
    # significant", exit 0. (b) 1,000 passing rows gone, 7 kept rows improved: a drop, exit 4.
    kept_before = {f"k{i}": i < 15 for i in range(20)}
    kept_after = {f"k{i}": i < 8 for i in range(20)}
    grown = Pairing(_rows(kept_before), _rows({**kept_after, **{f"n{i}": True for i in range(100)}}))
    rate = rate_change(_figures(grown.before), _figures(grown.after), 0.05, grown)
    assert (rate["change"] or 0) > 0 and rate["dropped"] and 0 < rate["drop_p_value"] < 0.05
    shrunk = Pairing(_rows({**{f"g{i}": True for i in range(1000)}, **kept_after}), _rows(kept_before))
    rate = rate_change(_figures(shrunk.before), _figures(shrunk.after), 0.05, shrunk)
    assert (rate["change"] or 0) < 0 and not rate["dropped"]


def test_a_drop_too_small_to_show_in_a_rounded_rate_still_counts() -> None:
    # break54 F5: 8 of 200,000 rows pass -> fail, none back: "100.0% -> 100.0%", rounded rates
    # equal, paired p=0.0078, and no drop: exit 0.
    before = {f"r{i}": True for i in range(200_000)}
    pairing = Pairing(_rows(before), _rows({**before, **{f"r{i}": False for i in range(8)}}))
    rate = rate_change(_figures(pairing.before), _figures(pairing.after), 0.05, pairing)
    assert rate["before"] == rate["after"] == 1.0 and rate["dropped"] and rate["change"] == 0.0
