"""Progress display: a tqdm bar on a terminal, plain periodic lines for cron, nothing when quiet."""

from __future__ import annotations

import os
import time
from typing import Any, TextIO

from ._reader import spent_on


class Progress:
    def __init__(self, stream: TextIO, quiet: bool, every_s: float, every_fraction: float = 0.1) -> None:
        self.stream = stream
        self.quiet = quiet
        self.tty = stream.isatty()
        self.every_s = every_s
        self.every_fraction = every_fraction
        self.total = 0
        self.done = 0
        self.ok = 0
        self.error = 0
        self.skipped = 0
        self.spent = 0.0
        self._bar: Any = None
        self._started = time.monotonic()
        self._last_line = self._started
        self._next_fraction = every_fraction

    def start(self, total: int) -> None:
        self.total = total
        self._started = self._last_line = time.monotonic()
        if self.tty and not self.quiet:
            from tqdm import tqdm  # only on a terminal: keeps cron start-up lean

            try:
                sized = os.get_terminal_size(self.stream.fileno()).columns > 0
            except (OSError, ValueError):
                sized = False
            # A terminal that reports no size (some CI ptys) gets none from tqdm: give it one.
            self._bar = tqdm(
                total=total,
                file=self.stream,
                unit="req",
                smoothing=0.1,
                dynamic_ncols=sized,
                ncols=None if sized else 100,
                nrows=None if sized else 20,
            )

    def record(self, record: dict[str, Any]) -> None:
        self.done += 1
        status = record["status"]
        if status == "ok":
            self.ok += 1
        elif status == "error":
            self.error += 1
        else:
            self.skipped += 1
        self.spent += spent_on(record)
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.update(1)
            if self.done % 20 == 0 or self.done == self.total:
                self._bar.set_postfix_str(
                    f"ok {self.ok} err {self.error} skip {self.skipped} ${self.spent:.4f}", refresh=False
                )
            return
        now = time.monotonic()
        fraction = self.done / self.total if self.total else 1.0
        # A step of 10% prints only if a few seconds passed: a short run stays quiet.
        step = fraction >= self._next_fraction and now - self._last_line >= min(5.0, self.every_s)
        if step or now - self._last_line >= self.every_s:
            while self._next_fraction <= fraction:
                self._next_fraction += self.every_fraction
            self._last_line = now
            elapsed = now - self._started
            eta = (elapsed / self.done * (self.total - self.done)) if self.done else 0.0
            self.stream.write(
                f"progress {self.done}/{self.total} ({fraction:.0%}) ok {self.ok} error {self.error} "
                f"skipped {self.skipped} spent ${self.spent:.4f} eta {eta:.0f}s\n"
            )
            self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
