"""`batchrun.final_records`: the readers' view of a results file, for a library caller. As `report`
does, it refuses a file a run is still writing: read then, its rows in flight were made up as
"crashed" rows, and said to be of a run that "ended" (break56 F2). What it sets aside goes to
`warn`, else to Python's warnings: a caller who lists the records is told, never silently."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ._lock import refuse_live
from ._reader import final_records as _final_records


def final_records(path: Path | str, warn: Callable[[str], None] | None = None) -> Iterator[dict[str, Any]]:
    """Exactly one record per row of `path`, each its last, with the costs of those it superseded
    folded in (README "Supersede rule"); LockHeld while a run writes the file."""
    path = Path(path)
    refuse_live(path, "read it")
    return _final_records(path, warn if warn is not None else _warned)


def _warned(text: str) -> None:
    warnings.warn(text, UserWarning, stacklevel=3)
