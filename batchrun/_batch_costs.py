"""What a collected batch cost, and each of its rows' part of it (break-14b C12, M9).

batch-quickstart.mdx: "For a completed batch, `usage.cost` reports the amount OpenRouter
charges". It does not say whether result bodies carry their own `usage` (its example has
none), nor what a batch that ends `failed`, `expired` or `cancelled` is charged. So:

- The batch's charge is the **larger** of its `usage.cost` and the sum of its items' own
  `usage.cost`: a batch-level figure below what the items report (a `0` beside items that
  cost money) is not believed over them, and items below the batch figure leave a
  remainder somebody was billed for.
- That remainder is shared **equally** among the rows without a cost of their own
  (answered without usage, a per-item error, no result item at all), each `estimated`;
  when every row has its own cost, among all the answered rows. So the rows' costs add up
  to what the ledger counts, and no row of a billed batch is $0 or null without saying so.
- A batch without a usable `usage.cost` whose rows do not all carry a cost has an
  **unknown** cost: each such row is `unknown`, holding its worst case (full prices) in the
  ledger as spent, like an abandoned sync attempt (looked up by generation id where the
  result gave one; else the end-of-run reconciliation accounts for it). Never $0.
- Except a batch that ended without completing and says no request completed
  (`request_counts.completed` 0, no result items, no `usage`): nothing ran, nothing is held.
- A charge far above what it can be (_pricing.doubted: an item's over 100 times its row's worst
  case, a batch's over 100 times its rows'), as a sync reply's, is not believed: the row is one
  without a cost of its own (its share of the batch's charge `estimated` and `cost_doubted`, or
  unknown), looked up by its generation id at the run's end, else by a resume (out-172 F1:
  items said $9,999 each, the run stopped at its budget "having spent $599,940", and every
  resume of the file after it did too).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ._batch_api import BatchInfo, BatchItem
from ._charges import byok_of
from ._pricing import doubted, says_byok
from ._row_cost import Charge, RowCharges

FLOAT_NOISE_USD = 1e-12


@dataclass
class BatchCharges:
    """A collected batch's charge: known (settled as spent) and held (rows of unknown cost)."""

    known: float = 0.0
    held: float = 0.0
    rows: dict[str, RowCharges] = field(default_factory=dict)  # row id -> its charge
    unknown: list[Charge] = field(default_factory=list)  # to be looked up, held meanwhile
    # What result items for no row sent say they cost (verify22 m2), and items a later one for
    # the same row repeats (break34 M2): part of the charge, in no row's record (the run keeps
    # it in the key gap, as it keeps answers no record carries).
    strays: float = 0.0
    doubted_rows: list[str] = field(default_factory=list)  # rows whose item's cost was not believed
    doubted_batch: float | None = None  # the batch's own cost, when it was not believed
    estimated: list[Charge] = field(default_factory=list)  # doubted rows' shares: looked up at the end

    def doubt(self) -> str | None:
        """What was not believed, for a warning; None when all was."""
        said = [f"{len(self.doubted_rows)} item(s)"] if self.doubted_rows else []
        said += [f"the batch itself (${self.doubted_batch:.6f})"] if self.doubted_batch is not None else []
        return f"{' and '.join(said)} said to cost over 100 times the worst case: not believed" if said else None


def _own_cost(item: BatchItem | None) -> float | None:
    return item.result.cost if item is not None and item.result is not None else None


def _upstream(item: BatchItem | None) -> float:
    if item is None or item.result is None:
        return 0.0
    is_byok, upstream = byok_of(item.result.usage)
    return (upstream or 0.0) if is_byok else 0.0


def _priced_byok(item: BatchItem | None) -> bool:
    """An item of a BYOK batch whose usage gives its provider's charge beside its fee."""
    if item is None or item.result is None:
        return False
    is_byok, upstream = byok_of(item.result.usage)
    return is_byok and upstream is not None


def _generation(item: BatchItem | None) -> str | None:
    return item.result.generation_id if item is not None and item.result is not None else None


def nothing_ran(info: BatchInfo, items: dict[str, BatchItem]) -> bool:
    """A batch that ended without completing, with no item, no charge, and no request completed."""
    ended = info.status in ("failed", "expired", "cancelled")
    return ended and not items and info.cost is None and info.completed == 0


def batch_charges(
    rows: list[str],
    info: BatchInfo,
    items: dict[str, BatchItem],
    worst: Callable[[str], float],
    repeated: Sequence[BatchItem] = (),
) -> BatchCharges:
    """Each row's charge in a terminal batch; `worst(row)` is a row's worst case at full prices;
    `repeated`: items a later one for the same row replaced (BatchClient.read_items)."""
    out = BatchCharges()
    if nothing_ran(info, items):
        for row in rows:
            out.rows[row] = RowCharges()
        return out
    own = {row: _own_cost(items.get(row)) for row in rows}
    byok = says_byok(info.usage.get("is_byok") if isinstance(info.usage, dict) else None)
    if byok:
        # batch-quickstart.mdx: a BYOK batch's `usage.cost` is "only the OpenRouter BYOK fee", and
        # an item's is too without its upstream cost: the providers' charges are not known, as a
        # BYOK answer's in sync mode (break32 F2: rows recorded not BYOK, at the fee, as known).
        own = {row: cost if _priced_byok(items.get(row)) else None for row, cost in own.items()}
    # What each item counts: its fee with a BYOK item's upstream cost, as its record's `spent`
    # does (the batch-level cost of a BYOK batch is "only the OpenRouter BYOK fee":
    # batch-quickstart.mdx; verify14j N12: the ledger settled to the fees, and the end read
    # counted the whole charge again).
    out.doubted_rows = [row for row, cost in own.items() if cost is not None and doubted(cost, worst(row))]
    own.update(dict.fromkeys(out.doubted_rows))
    batch_cost = info.cost
    if batch_cost is not None and doubted(batch_cost, sum(map(worst, rows))):
        out.doubted_batch, batch_cost = batch_cost, None
    items_sum = sum(c + _upstream(items.get(row)) for row, c in own.items() if c is not None)
    sent = set(rows)
    strays = [i for row, i in items.items() if row not in sent] + list(repeated)
    out.strays = sum((_own_cost(i) or 0.0) + _upstream(i) for i in strays)
    without = [row for row in rows if own[row] is None]
    for row in rows:
        cost = own[row]
        item = items.get(row)
        charge = Charge(_generation(item), 0.0, abandoned=False)
        if cost is not None and item is not None and item.result is not None:
            charge.cost, charge.status = cost, "reported"
            charge.is_byok, charge.upstream_inference_cost = byok_of(item.result.usage)
        out.rows[row] = RowCharges([charge])
    if (batch_cost is None or byok) and without:
        # A BYOK batch's fees are inside its held rows' worst cases (and in what a lookup finds
        # each row was charged): counted beside them, a batch that fit the budget was over it,
        # and a looked-up row's fee was counted twice (verify31 V5).
        out.known = items_sum + out.strays
        for row in without:
            charge = out.rows[row].parts[0]
            charge.held, charge.is_byok = worst(row), byok
            out.held += charge.held
            out.unknown.append(charge)
        return out
    total = max(batch_cost or 0.0, items_sum + out.strays)  # the larger of the batch's and its items'
    out.known = total
    remainder = total - items_sum - out.strays
    answered = [row for row in rows if items.get(row) is not None and items[row].result is not None]
    # Answered rows first: an item the API rejected is not billed for tokens (zero-completion-
    # insurance.mdx), and half a batch's charge was put on a 400 (break32 m5).
    sharing = [row for row in without if row in answered] or without or answered
    share = remainder / len(sharing) if sharing and remainder > FLOAT_NOISE_USD else 0.0
    for row in without:
        if (share and row in sharing) or row in answered:
            charge = out.rows[row].parts[0]
            charge.cost, charge.status = (share if row in sharing else 0.0), "estimated"
            if row in out.doubted_rows:
                charge.doubted = True
                out.estimated.append(charge)
        else:
            out.rows[row] = RowCharges()  # nothing of the batch's charge is left for it: not billed
    if share and not without:
        for row in sharing:
            out.rows[row].parts.append(Charge(None, 0.0, cost=share, status="estimated", abandoned=False))
    return out
