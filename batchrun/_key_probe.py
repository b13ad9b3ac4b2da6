"""Under a limit, how many requests apart /key is read, beside the periodic refresh.

A limit is checked against what answers say they cost, so charges above the worst cases (a
price list that lies, a model listed at $0 that bills) went unseen until the end: $2.40 charged
under a $0.05 budget, exit 0 (break14e E2). So under a limit /key is read every `spacing`
requests too: once an answer is in at first, doubling while the key shows nothing beyond the
ledger, up to PROBE_REACH times the concurrency (a price that rises after hundreds of honest
answers went unseen for key_refresh_requests more: verification F1), and every `concurrency`
requests once it has.
"""

from __future__ import annotations

from dataclasses import dataclass

PROBE_REACH = 8
# A gap below this much, or below this share of what is left of the limit, is agreement: a key
# that rounds each charge up shows a sub-cent excess over honest answers (F8), and so does
# another process spending on the key far from the limit (G5). The gap is counted as spent
# either way.
PROBE_TOLERANCE_USD = 0.001
PROBE_TOLERANCE_SHARE = 0.01


@dataclass
class KeyProbe:
    concurrency: int
    refresh_requests: int  # the periodic refresh's spacing, which the probe never passes
    spacing: int | None = None  # None: no limit to probe for

    def start(self) -> None:
        """The first read once an answer is in (the request past the concurrency waits for one):
        what an answer costs the key is known then, for a resume after a kill (_killed_run)."""
        self.spacing = self.concurrency + 1

    def due(self, sent: int) -> bool:
        """Whether `sent` requests since the last read call for another."""
        return sent >= min(self.refresh_requests, self.spacing or self.refresh_requests)

    def passed(self, sent: int) -> bool:
        """Whether `sent` requests since the last read are past the probe's spacing."""
        return self.spacing is not None and sent >= self.spacing

    def followed(self, gap: float, left: float) -> None:
        """A read followed: the key showed `gap` beyond the ledger, with `left` of the limit."""
        if self.spacing is None:
            return
        concurrency = max(1, self.concurrency)
        farthest = min(PROBE_REACH * concurrency, self.refresh_requests)
        beyond = gap > max(PROBE_TOLERANCE_USD, PROBE_TOLERANCE_SHARE * left)
        self.spacing = concurrency if beyond else min(2 * self.spacing, farthest)
