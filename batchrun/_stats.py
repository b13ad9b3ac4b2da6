"""Small, exact statistics for pass rates: Wilson intervals, Fisher's and McNemar's exact tests.

Each is a few lines of closed-form arithmetic, so batchrun keeps them here rather than
depend on scipy for three functions; the tests check them against scipy's
`binomtest(...).proportion_ci(method="wilson")`, `fisher_exact` and `binomtest(k, n, 0.5)`
on many tables, and against values worked out by hand (Fisher's tea-tasting table:
p = 34/70; McNemar with 8 discordant pairs all one way: p = 2/256).
"""

from __future__ import annotations

import math
from functools import lru_cache

# The standard normal quantile for a two-sided 95% interval (scipy.stats.norm.ppf(0.975)).
Z_95 = 1.959963984540054


DEFAULT_ALPHA = 0.05  # `diff`'s significance level unless --alpha says another


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float] | None:
    """Wilson score interval of a binomial proportion; None without trials.

    Unlike the normal ("Wald") interval it stays inside [0, 1] and is sane at 0/n and n/n,
    which is where LLM pass rates often sit.
    """
    if trials <= 0:
        return None
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be within 0..{trials}, got {successes}")
    return wilson_interval_of(successes / trials, trials, z)


def clustered_interval(tallies: list[tuple[int, int]], z: float = Z_95) -> tuple[float, float] | None:
    """Wilson's interval of the pass rate of rows that come in clusters, (passes, graded) per
    cluster: an item's repeats. Repeats of one item are not independent trials (at temperature 0
    they agree): `repeat: 10` of the same 10 items narrowed 80% [49-94] to [71-87] (break61 F3).
    So the trials are the items, the rate the rows': the question is how the model does on such
    items, and an item asked again is no new item. (An effective number of trials from the design
    effect was not monotone: 100 of 100 read [72-100], 99 of 100 [94.5-99.8]: verify65 F4.) One
    item, or none repeated, is Wilson's on the rows."""
    tallies = [(k, n) for k, n in tallies if n > 0]
    rows, passed, clusters = sum(n for _, n in tallies), sum(k for k, _ in tallies), len(tallies)
    if clusters < 2 or clusters == rows:
        return wilson_interval(passed, rows)
    return wilson_interval_of(passed / rows, clusters, z)


def wilson_interval_of(p: float, trials: float, z: float = Z_95) -> tuple[float, float]:
    """Wilson's interval of a rate `p` over `trials`, which may be an effective, fractional number."""
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z / (1 + z2 / trials) * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    return max(0.0, centre - half), min(1.0, centre + half)


@lru_cache(maxsize=4096)
def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_exact(a: int, b: int, c: int, d: int) -> float:
    """Two-sided p-value of Fisher's exact test on the 2x2 table [[a, b], [c, d]].

    Rows are the two runs, columns pass/fail. The p-value sums the hypergeometric
    probabilities of every table with the same margins that is no more likely than the
    observed one (the same rule as R's fisher.test and scipy's fisher_exact), with a
    relative tolerance so ties computed in floating point count as ties.
    """
    if min(a, b, c, d) < 0:
        raise ValueError("table cells must be non-negative")
    row1, row2, col1 = a + b, c + d, a + c
    n = row1 + row2
    if row1 == 0 or row2 == 0 or col1 == 0 or col1 == n:
        return 1.0
    low, high = max(0, col1 - row2), min(col1, row1)
    log_total = _log_choose(n, col1)

    def probability(x: int) -> float:
        return math.exp(_log_choose(row1, x) + _log_choose(row2, col1 - x) - log_total)

    observed = probability(a)
    cutoff = observed * (1 + 1e-7)
    p_value = sum(p for p in (probability(x) for x in range(low, high + 1)) if p <= cutoff)
    return min(1.0, p_value)


def mcnemar_exact(pass_to_fail: int, fail_to_pass: int) -> float:
    """Two-sided p-value of McNemar's exact test: the same rows graded in two runs, of which
    `pass_to_fail` went one way and `fail_to_pass` the other. Under no change each such
    discordant row is a fair coin, so the p-value is the two-sided binomial tail at 1/2
    (rows that did not change say nothing about a change, and do not enter)."""
    if min(pass_to_fail, fail_to_pass) < 0:
        raise ValueError("counts must be non-negative")
    n = pass_to_fail + fail_to_pass
    if n == 0:
        return 1.0
    k = min(pass_to_fail, fail_to_pass)
    tail = sum(math.exp(_log_choose(n, i) - n * math.log(2)) for i in range(k + 1))
    return min(1.0, 2 * tail)


def compare_paired(
    pass_to_fail: int, fail_to_pass: int, alpha: float = DEFAULT_ALPHA
) -> dict[str, float | bool | None]:
    """A change in pass rate on the same rows, with McNemar's exact p-value and a verdict."""
    p_value = mcnemar_exact(pass_to_fail, fail_to_pass)
    return {"p_value": float(f"{p_value:.4g}"), "significant": p_value < alpha}


def compare_rates(
    passed_before: int, total_before: int, passed_after: int, total_after: int, alpha: float = DEFAULT_ALPHA
) -> dict[str, float | bool | None]:
    """A change in pass rate between two runs, with Fisher's exact p-value and a verdict."""
    if total_before == 0 or total_after == 0:
        return {"p_value": None, "significant": False}
    p_value = fisher_exact(passed_before, total_before - passed_before, passed_after, total_after - passed_after)
    return {"p_value": float(f"{p_value:.4g}"), "significant": p_value < alpha}


def compare_parts(
    paired: tuple[int, int], unpaired: tuple[int, int, int, int], moved: float, alpha: float = DEFAULT_ALPHA
) -> dict[str, float | bool | None]:
    """A change in pass rate over rows both runs graded (`paired`: pass->fail, fail->pass) and rows
    one run alone graded (`unpaired`: passed and graded before, then after): each part tested on
    its own rows (McNemar, Fisher), either may decide, at half the alpha each (Bonferroni), and
    only in the direction the rate `moved`: the rows new to the second run doing better never make
    a drop significant (verify46: 0/6 -> 12/20 alone read as a significant fall, exit 4)."""
    ways = [paired[1] - paired[0], unpaired[2] / unpaired[3] - unpaired[0] / unpaired[1]]
    parts = [compare_paired(*paired), compare_rates(*unpaired)]
    agreeing = [
        float(t["p_value"]) for t, way in zip(parts, ways, strict=True) if way * moved > 0 and t["p_value"] is not None
    ]
    p_value = min(1.0, 2 * min(agreeing, default=0.5))
    return {"p_value": float(f"{p_value:.4g}"), "significant": p_value < alpha}
