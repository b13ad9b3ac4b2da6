"""A stop that left nothing for a resume to do is no stop: the run's exit code is its work's."""

from __future__ import annotations

from collections.abc import Sequence

from ._batch_state import BatchEntry
from ._options import Notice
from ._status import StopReason
from ._summary import SummaryBuilder
from ._worker_pool import PoolOutcome


def drop_needless_stop(
    outcome: PoolOutcome, summary: SummaryBuilder, pending: Sequence[BatchEntry], notice: Notice
) -> None:
    """Clear `outcome`'s stop when every row was answered and no batch is left open:

    - `/key` lost once every row was sent and answered (batch mode: the read after the last
      collection): as sync's end-of-run read, a warning, the worst cases counted (verify41
      item 6: exit 5, "resumable", with nothing to resume);
    - a deadline that came once every row was answered, its graders too: in batch mode, while
      the last poll collected them (out-129 F5: exit 6 and `complete: false` for 12 rows of 12,
      `report` exit 0; the README's cron line takes 0 or 10); in sync mode, while the last
      answers were read and written (out-180 F2: 8 rows of 8, resume advice with nothing to
      resume). A retry the deadline cut is a skipped row: that stop stands."""
    total = summary.total
    if total.skipped or pending:
        return
    if outcome.stop == StopReason.KEY_UNREADABLE:
        lost = outcome.stop_message.partition("; under a limit")[0]
        notice(f"warning: {lost}, once every row was answered: what no read confirmed counts at its worst case")
    elif not (outcome.stop == StopReason.DEADLINE and not total.regradable):
        return
    outcome.stop, outcome.stop_message = None, ""
