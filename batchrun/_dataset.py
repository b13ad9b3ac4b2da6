"""Variable rows from a JSONL or CSV file, read lazily so a 100,000-row dataset is never held whole."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ._exceptions import JobError, Problem


class DatasetFile:
    """Rows of variables in a file next to the job. Iterating re-reads the file each time."""

    def __init__(self, path: Path, shown_as: str) -> None:
        self.path = path
        self.shown_as = shown_as  # the name as the job file wrote it, for messages

    @property
    def is_csv(self) -> bool:
        return self.path.suffix.lower() == ".csv"

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The rows, read as the run goes; a file broken since validation is a JobError."""
        try:
            for _line, row in self.rows_with_lines():
                yield row
        except ValueError as exc:
            line, _, message = str(exc).partition(": ")
            raise JobError([Problem(str(self.path), int(line), None, "", message)]) from None
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise JobError([Problem(str(self.path), None, None, "", f"cannot read dataset: {exc}")]) from None

    def rows_with_lines(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(line number, row) pairs; raises ValueError with the line for a malformed row."""
        with self.path.open(encoding="utf-8", newline="") as handle:
            if self.is_csv:
                reader = csv.DictReader(handle)
                if not reader.fieldnames:
                    raise ValueError("1: the CSV file has no header row")
                for row in reader:
                    if None in row:
                        raise ValueError(f"{reader.line_num}: more fields than the header names")
                    yield reader.line_num, dict(row)
                return
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{number}: not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{number}: a row must be a JSON object of variables")
                yield number, row

    def check(self, check_row: Callable[[dict[str, Any]], str | None], job_file: str, json_path: str) -> list[Problem]:
        """Read the whole file once: malformed rows, what `check_row` finds wrong in a row, emptiness."""
        if not self.path.is_file():
            return [Problem(job_file, None, None, json_path, f"dataset file {self.shown_as!r} does not exist")]
        count = 0
        try:
            for number, row in self.rows_with_lines():
                count += 1
                problem = check_row(row)
                if problem:
                    return [Problem(str(self.path), number, None, "", problem)]
        except ValueError as exc:
            line, _, message = str(exc).partition(": ")
            return [Problem(str(self.path), int(line), None, "", message)]
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            return [Problem(str(self.path), None, None, "", f"cannot read dataset: {exc}")]
        if count == 0:
            message = f"dataset {self.shown_as!r} has no rows: the matrix is empty"
            return [Problem(job_file, None, None, json_path, message)]
        return []
