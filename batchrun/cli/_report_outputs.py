"""What `report` (and `history`) write beside what they read: pages and JUnit files, never over
an input or another output."""

from __future__ import annotations

import argparse
import contextlib
import re
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._console import Console
from .._exceptions import ConfigError
from .._summary_types import Summary

if TYPE_CHECKING:
    from .._summary_beside import SummaryBeside


def refuse_sidecars(*outputs: tuple[Any, str], inputs: Iterable[Path | None] = ()) -> None:
    """Pages and JUnit files are never written over a results file or its sidecars (its summary
    carries what a resume counts as spent: verification of break14e, F9), by name or by link;
    nor over a file the command reads (`inputs`: the job, its datasets), nor two of them over one
    file (break25 F3: `--html job.yaml` replaced the job just read, `--junit X --html X` lost the
    JUnit file), nor over the standard output the report goes to; nor may that output be a file
    the command reads."""
    from .._files import file_identity, refuse_printing_into, stdout_identity
    from .._output_paths import report_output_problem

    refuse_printing_into(inputs := list(inputs))
    taken: dict[Any, str] = {file_identity(path): f"{path}, which this command reads" for path in inputs if path}
    if (out := stdout_identity()) is not None:
        # `--json --junit /dev/stdout`: the two in one stream, neither readable (out-143 F8).
        taken.setdefault(out, "this command's standard output, where its report goes")
    for path, role in outputs:
        if path is None:
            continue
        if (problem := report_output_problem(path, role)) is not None:
            raise ConfigError(problem)
        identity = file_identity(path)
        if identity in taken:
            raise ConfigError(f"{path}: {role} is not written over {taken[identity]}")
        taken[identity] = f"{role} it writes too ({path})"


def refuse_other_kinds(*outputs: tuple[Any, str]) -> None:
    """Pages and JUnit files are not written over a file of another kind, whatever it is, once
    the files the command reads were named as such (out-125 F5: `--junit data.csv` replaced a
    dataset `--job` was not there to name)."""
    for path, role in outputs:
        if path is not None and _foreign(Path(path), role):
            kind = "a page batchrun made" if role == "a page" else "a JUnit results file"
            raise ConfigError(f"{path}: neither empty nor {kind}: {role} is not written over it")


def files_named_by(job_file: Path) -> list[Path]:
    """The files beside a job (loaded: bounded) that it names: its datasets, `json_schema`
    files, the grader prompt (verify25 N10: `--junit capital.schema.json` replaced the schema
    jobs/eval.yaml checks answers with)."""
    import yaml

    from .._files import read_regular_text
    from .._jobfile import SAFE_LOADER

    found: list[Path] = []
    pending: list[Any] = [yaml.load(read_regular_text(job_file), Loader=SAFE_LOADER)]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, str) and 0 < len(value) < 4096 and "\n" not in value and "\0" not in value:
            with contextlib.suppress(OSError, ValueError):
                if (job_file.parent / value).is_file():
                    found.append(job_file.parent / value)
    return found


def refuse_named_in_datasets(job: Any, *outputs: tuple[Path | None, str]) -> None:
    """Nor over a file a dataset row names (its own `json_schema` check: verify26 R1): an
    existing output beside the job whose name a dataset file holds, read as bytes, unparsed."""
    from .._dataset import DatasetFile
    from .._files import file_mentions

    datasets = [p.rows.path for p in job.prompts if isinstance(p.rows, DatasetFile)]
    for path, role in outputs:
        if path is None or not datasets or not path.is_file():
            continue
        try:
            name = path.resolve().relative_to(job.path.parent.resolve()).as_posix().encode()
        except ValueError:
            continue  # not beside the job: no row names it
        for dataset in datasets:
            with contextlib.suppress(OSError):
                if file_mentions(dataset, name):
                    raise ConfigError(f"{path}: {role} is not written over a file {dataset} names")


def report_page(args: argparse.Namespace) -> Any:
    """With --html, the collector of the page's data (checked first: the extra may be missing)."""
    if not args.html:
        return None
    from .._html_report import require_report_extra
    from .._report_data import RunDigest

    require_report_extra()
    return RunDigest()


def through(page: Any, records: Any) -> Any:
    return records if page is None else page.watch(records)


def write_report_page(
    args: argparse.Namespace,
    page: Any,
    summary: Summary,
    verdict: tuple[int, list[str]],
    gated: bool = True,
    beside: SummaryBeside | None = None,
) -> None:
    """The page, of the summary beside the results as the caller read it, where it read one."""
    if page is not None:
        from .._html_report import write_report

        write_report(args.results, args.html, page, summary, verdict, gated, beside)


# What marks a page batchrun made (templates/base.html.j2 writes the same line).
GENERATOR = '<meta name="generator" content="batchrun">'


def holds_junit_or_nothing(path: Path) -> bool:
    """Whether `path` is free for a JUnit file when the files a job names cannot be known: not
    there, or a regular file that begins as a JUnit file does (one this command wrote before)."""
    head = _head(path)
    return head is not None and (not head or _of_kind("a JUnit file", head))


def holds_page_or_nothing(path: Path) -> bool:
    """The same for a page: not there, or one batchrun made."""
    head = _head(path)
    return head is not None and (not head or _of_kind("a page", head))


def _foreign(path: Path, role: str) -> bool:
    """Whether `path` is (or links to) a regular file with something in it other than `role`: a
    pipe or a device is written into, as `/dev/stdout` is."""
    try:
        info = path.stat()
    except OSError:
        return False
    if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
        return False
    with contextlib.suppress(OSError), path.open("rb") as handle:
        return not _of_kind(role, handle.read(1024))
    return False


# A JUnit results file: its root element is <testsuites> (or <testsuite>), after the declaration
# and any comments. A project's configuration that holds a <testsuites> list (phpunit.xml) is not
# one, and was written over (out-128 F3).
_JUNIT_ROOT = re.compile(rb"\s*(?:<\?xml[^>]*\?>\s*)?(?:<!--.*?-->\s*)*<testsuites?[\s>/]", re.DOTALL)


def _of_kind(role: str, head: bytes) -> bool:
    """Whether a file's first KiB is that of `role`: a page batchrun made, or a JUnit results file."""
    return GENERATOR.encode() in head if role == "a page" else _JUNIT_ROOT.match(head) is not None


def _head(path: Path) -> bytes | None:
    """The first KiB of a regular file; b"" when nothing is there; None for anything else."""
    from .._files import open_regular

    if not path.exists() and not path.is_symlink():
        return b""
    try:
        with open_regular(path) as handle:
            return handle.read(1024) or b" "
    except OSError:
        return None


def no_verdict_page(code: int, reasons: list[str], job_name: str | None, headline: str = "No verdict") -> str:
    """The page of a gate with no verdict: it failed before one (exit `code`, `reasons`), or
    is still on its way to one (the page that stands meanwhile)."""
    from html import escape

    from .._formats import utc_readable

    title = f"batchrun: {escape(job_name or 'the gate')}: exit {code}"
    items = "".join(f"<li>{escape(reason)}</li>" for reason in reasons)
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"{GENERATOR}\n"
        f"<title>{title}</title>\n</head>\n<body>\n<h1>{title}</h1>\n"
        f'<p>{escape(headline)}: <span id="verdict">exit {code}</span></p>\n<ul>{items}</ul>\n'
        f"<p>Made by batchrun on {escape(utc_readable(time.time()))}.</p>\n</body>\n</html>\n"
    )


def write_junit_file(
    args: argparse.Namespace,
    console: Console,
    records: Callable[[], Any],
    gate: Any,
    unanswered: Iterable[Any] = (),
    verdict: tuple[int, list[str]] | None = None,
    job_name: str | None = None,
    unread: int = 0,
) -> None:
    if args.junit is None:
        return
    from .._items import ItemGate
    from .._junit import write_junit

    counts = write_junit(records(), args.junit, job_name, gate or ItemGate(), unanswered, verdict, unread)
    console.to_err(
        f"junit: {args.junit}: {counts['tests']} test case(s), {counts['failure']} failed, "
        f"{counts['error']} error(s), {counts['skipped']} skipped\n"
    )
