"""Where results go: the default path, the summary beside it, finding a run to resume.

`run.output` (and the default `outputs/{name}/{timestamp}.jsonl`) may hold exactly two
placeholders, `{name}` (the job name) and `{timestamp}` (UTC, to the millisecond, e.g.
`20260102T030405.678Z`); any other brace is a validation error (`output_pattern_problem`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ._exceptions import ConfigError, OutputFailed
from ._files import open_regular
from ._formats import utc_compact
from ._journal_file import JOURNAL_SUFFIX
from ._record_head import RECORD_START
from ._results import RESULTS_MODE
from ._scrub import environment_scrubber

DEFAULT_PATTERN = "outputs/{name}/{timestamp}.jsonl"
PLACEHOLDERS = ("{name}", "{timestamp}")
_PLACEHOLDER = re.compile(r"\{(name|timestamp)\}")


def output_pattern_problem(pattern: str) -> str | None:
    """Why `pattern` is not a valid run.output, or None."""
    rest = _PLACEHOLDER.sub("", pattern)
    if "{" in rest or "}" in rest:
        return f"run.output {pattern!r}: the only placeholders are {{name}} and {{timestamp}}, and no other braces"
    if not rest.strip("/") or pattern.endswith("/"):
        return f"run.output {pattern!r} names no file"
    if pattern.startswith("~"):  # made a folder named ~ where batchrun ran (break57 F6)
        return (
            f"run.output {pattern!r}: a ~ is not the home folder here: write the whole path, or one "
            "relative to the folder batchrun runs in"
        )
    if "{timestamp}" in os.path.dirname(pattern):  # a folder per run: no run was found (break52 F4)
        return (
            f"run.output {pattern!r}: {{timestamp}} may be only in the file's name (the job's runs share one "
            "folder, where --resume, history and plan find them)"
        )
    sidecar = sidecar_name_problem(Path(pattern))
    return None if sidecar is None else f"run.output {sidecar}"


def is_pattern(output: Path) -> bool:
    """Whether an output path given is run.output's pattern (its placeholders), not a file."""
    return _PLACEHOLDER.search(str(output)) is not None


def _stamp(now: float) -> str:
    # Milliseconds, fixed width: back-to-back runs get distinct names that sort by time.
    return utc_compact(now, millis=True)


def default_output(job_name: str, pattern: str | None, now: float) -> Path:
    values = {"name": job_name, "timestamp": _stamp(now)}
    return Path(_PLACEHOLDER.sub(lambda m: values[m.group(1)], pattern or DEFAULT_PATTERN))


def job_folder(job_name: str, pattern: str | None) -> Path:
    """The folder of the job's default outputs (where its lock and its history live)."""
    return default_output(job_name, pattern, 0).parent


def fresh_output(job_name: str, pattern: str | None, now: float, tag: str = "") -> Path:
    """The default output for a new run: a name no earlier run of the job used; a shard's ends
    with its `tag` (`-shard2of4`), so shards run side by side never pick one name (break51 F8).

    Called under the job's (or the shard's) lock, so two runs cannot pick the same free name.
    """
    path = _tagged(default_output(job_name, pattern, now), tag)
    if "{timestamp}" not in (pattern or DEFAULT_PATTERN):
        return path  # one name: the caller refuses an existing file
    millis = math.floor(now * 1000)
    for step in range(1, 1000):
        if not os.path.lexists(path):
            return path
        # The middle of each next millisecond: `now + step / 1000` fell short of some (x.001
        # is x.000999...), so a name was tried twice and the next one never.
        path = _tagged(default_output(job_name, pattern, (millis + step + 0.5) / 1000), tag)
    if os.path.lexists(path):
        # Every name of the next second is taken (files made ahead, a clock set back): an
        # existing one was written into, or refused as "give another --output" (break35 F6).
        raise ConfigError(
            f"{path.parent}: every default name for the next second is taken; give --output, or move those files"
        )
    return path


def _tagged(path: Path, tag: str) -> Path:
    """`path` with `tag` at the end of its stem."""
    return path.with_name(f"{path.stem}{tag}{path.suffix}") if tag else path


# What batchrun writes beside a results file X.jsonl, by the end of its name.
SIDECARS = {
    JOURNAL_SUFFIX: "attempt journal",
    ".summary.json": "summary",
    ".batches.json": "batch state",
    ".jsonl.lock": "lock file",  # a run holds it: `--junit X.jsonl.lock` wrote over it (break23)
}


def sidecar_problem(path: Path, role: str = "a results file") -> str | None:
    """Why batchrun may not write `path` as `role`: it is the name of a sidecar of a results
    file, which a run on that file would take for its own and delete or rewrite (break14e E18:
    `-o night.attempts.jsonl`, then a run on night.jsonl deleted those paid rows, exit 0; its
    verification F9: `report --html night.summary.json` replaced the summary, and its key gap)."""
    for suffix, what in SIDECARS.items():
        # Any case: on a file system that ignores it (macOS, Windows), night.Summary.json is
        # night.jsonl's summary.
        if path.name.lower().endswith(suffix) and len(path.name) > len(suffix):
            owner = path.with_name(path.name[: -len(suffix)] + ".jsonl")
            return (
                f"{path}: that is the name of the {what} batchrun writes beside {owner.name}; {role} "
                "named so would be taken for it: give another name"
            )
    return None


def report_output_problem(path: Path, role: str) -> str | None:
    """Why a page, JUnit file or step summary may not be written at `path`: it is, or a symlink
    leads to, a results file or one of its sidecars, by name (in any case) or by what it holds
    (a summary carries what a resume counts as spent; verify21 V1, V4, V5: links were followed
    by the write, not by this check)."""
    # Bad options, said before anything is read or sent (break27 m9: exit 11, after the work).
    if path.is_dir():
        return f"{path}: is a folder: name the file to write {role} to"
    if path.parent.exists() and not path.parent.is_dir():
        return f"{path}: cannot write {role} there: {path.parent} is not a folder"
    try:
        target = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: the write fails and says so
        target = path
    candidates = dict.fromkeys((path, target))
    for candidate in candidates:  # names first: a link's target is named, not the content it shares
        problem = sidecar_problem(candidate, role)
        if problem is None and candidate.name.lower().endswith(".jsonl"):
            problem = f"{candidate}: {role} is not written under a results file's name (.jsonl)"
        if problem is not None:
            return problem if candidate == path else f"{path} leads to {problem}"
    if _leads_out(path, target):
        # A link checked in with a pull request overwrote its target anywhere on the runner
        # (break59 F9), a file's or a folder's on the way (verify60 F5).
        return f"{path}: its link leads to {target}, outside the folder batchrun runs in: name that file itself"
    subject = target if path.is_symlink() else path
    held = _holds_batchrun_data(subject) if subject.is_file() else None
    if held is not None:
        # Nor over a results file or a sidecar of another name (a copy, a hard link): every
        # row and what it cost, or what a resume counts as spent, would be gone (G2).
        problem = f"{subject}: it holds batchrun {held}; {role} is not written over them"
        return problem if subject == path else f"{path} leads to {problem}"
    return None


def _leads_out(path: Path, target: Path) -> bool:
    """Whether a link in the working folder's tree (the file's or a folder's on `path`) leads to
    a regular file, or none yet, out of it: a link checked in with a pull request. A stream
    (`/dev/stdout`, a pipe) is written where it is."""
    if target == Path(os.path.abspath(path)) or (target.exists() and not target.is_file()):
        return False
    return link_leads_out(path) is not None


def link_leads_out(path: Path) -> Path | None:
    """Where `path` leads, when a link in the working folder's tree on it (the file's, or a
    folder's on the way) leads out of that tree: a link checked in with a pull request; else
    None. A path named outside the tree is the caller's to name (macOS's /tmp is a link)."""
    written, here = Path(os.path.abspath(path)), Path(os.getcwd())
    if not written.is_relative_to(here):
        return None
    try:
        target = path.resolve()
    except (OSError, RuntimeError):  # a loop: writing there fails, and says so
        return None
    return None if target.is_relative_to(here.resolve()) else target


def job_path_problem(path: Path, what: str) -> str | None:
    """Why a path a job file chose (`run.output`, the default outputs folder, `run.cache.dir`)
    may not be written: a link in the working folder leads it out (out-110 F1, out-108 F2: the
    results, summary and cache of a pull request's job went wherever its links pointed). One
    named on the command line is the caller's."""
    target = link_leads_out(path)
    if target is None:
        return None
    return (
        f"{path}: {what} leads through a link to {target}, outside the folder batchrun runs in: "
        "name it on the command line, or as a path that is not a link out"
    )


def _holds_batchrun_data(path: Path) -> str | None:
    """What of batchrun's the file holds, or None. Results: a line of its first MiB begins as
    a record does (verify21 V15: only the first line was read, and a results file whose first
    line was blank or damaged was written over). A summary, journal or batch state: it begins
    as a JSON object with a "job" key, which no Markdown, HTML or JUnit file does (a hard link
    to a summary under an .md name took a step summary's Markdown)."""
    try:
        with open_regular(path) as handle:
            head = handle.read(1 << 20)
    except OSError:
        return None
    if any(line.startswith(RECORD_START) for line in head.split(b"\n")):
        return "results"
    if head.startswith(b"SQLite format 3\x00"):  # the response cache (verify22: via a hard link)
        return "data (an SQLite database: the response cache?)"
    if head.lstrip().startswith(b"{") and _JOB_KEY.search(head, 0, 1 << 16):
        return "state (a summary, journal or batch record)"
    if _is_job(head):
        return "job definitions (models: and prompts:)"  # break25 F3: a page replaced the job file
    return None


def _is_job(head: bytes) -> bool:
    """Whether a file's first MiB is a job: `models:` and `prompts:` at the start of lines, or,
    for a file that small, YAML whose top mapping has both (JSON, quoted keys, flow style, or
    keys after a long comment: verify25 N2)."""
    if _MODELS.search(head) and _PROMPTS.search(head):
        return True
    if len(head) >= 1 << 20 or b"models" not in head or b"prompts" not in head:
        return False
    try:
        return _top_keys(head.decode("utf-8")) >= {"models", "prompts"}
    except (yaml.YAMLError, UnicodeDecodeError, ValueError):
        return False


def _top_keys(text: str) -> set[str]:
    """The scalar keys of a YAML document's top mapping, read from the event stream: nothing is
    built, however deep or long the rest (a composed 1 MiB list took 160 MB)."""
    keys: set[str] = set()
    depth, at_key = 0, True
    for event in yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            if depth == 0 and not isinstance(event, yaml.MappingStartEvent):
                break  # not a mapping at the top: no keys
            depth += 1
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
            at_key = at_key or depth == 1  # a value that was a collection has ended
        elif isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent)) and depth == 1:
            if at_key and isinstance(event, yaml.ScalarEvent):
                keys.add(event.value)
            at_key = not at_key
        if {"models", "prompts"} <= keys:
            break
    return keys


_JOB_KEY = re.compile(rb'[{,]\s*"job"\s*:')
_MODELS = re.compile(rb"^models\s*:", re.MULTILINE)
_PROMPTS = re.compile(rb"^prompts\s*:", re.MULTILINE)


def sidecar_name_problem(output: Path) -> str | None:
    """Why `output` may not be a results file: it does not end in `.jsonl`, or it is named like
    a sidecar. A name without `.jsonl` shared its sidecars with the `.jsonl` file of the same
    stem (`night`, `night.json` and `night.jsonl` had one summary and one journal: a run on one
    took the other's key gap and crash journal; verification of break14e, F3 and F4)."""
    sidecar = sidecar_problem(output)
    if sidecar is None and (not output.name.endswith(".jsonl") or output.name == ".jsonl"):
        return f"{output}: a results file's name ends in .jsonl (its summary and journal are named after it)"
    return sidecar


def summary_path(results: Path) -> Path:
    return results.with_name(results.stem + ".summary.json")


def finite(value: Any) -> Any:
    """`value` with every float that is not finite made null: JSON has no Infinity or NaN,
    and a results file written before costs were capped may still sum to inf."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def write_json_atomically(path: Path, data: Mapping[str, Any]) -> None:
    """Replace `path` with `data` as JSON, whole or not at all, with the usual file mode."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        # mkstemp creates 0600; results are 0644 less the umask, and their summary matches
        # (0666 less it was writable by anyone under umask 000: break36).
        os.fchmod(handle, RESULTS_MODE & ~current_umask())
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(finite(data), out, indent=2, allow_nan=False)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def write_report_file(path: Path, text: str) -> None:
    """Write a page or a JUnit file where the user named it, whole or not at all, scrubbed of
    the environment's keys as the terminal's output is (break23 F4: a results file holding
    the key, edited or written by an older version, put it whole into the page, the artifact
    a CI shares most, while the terminal, --json and --markdown showed `[key]`).

    A regular file (or none yet) is replaced atomically at the end of its symlinks: a link
    stays a link, and a reader (a CI upload) never sees half a file. A pipe, FIFO or device
    (`--html /dev/stdout`) is written as a stream, since it cannot be replaced (break21 R23:
    a link was replaced by a regular file; R24: a JUnit file cut by a full disk was left
    behind, and neither failure named the file)."""
    # Control characters a server put in a reason (NUL, ESC...) are not text a page or XML may
    # hold (verify30 N7); a lone surrogate is "?", not a traceback.
    data = _CONTROLS.sub("\ufffd", environment_scrubber().text(text)).encode("utf-8", "replace")
    try:
        try:
            mode: int | None = os.stat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):  # a folder on the way that is a file: below
            mode = None
        if mode is not None and stat.S_ISDIR(mode):
            raise OutputFailed(f"{path}: is a folder: name the file to write")
        if mode is not None and not stat.S_ISREG(mode):
            _stream_into(path, data)
            return
        target = path.resolve()
        # A new page or JUnit file as results are, never writable by others (break38 F6: 0666 under umask 000).
        kept = stat.S_IMODE(mode) if mode is not None else RESULTS_MODE & ~current_umask()
        if target.parent.exists() and not target.parent.is_dir():
            raise OutputFailed(f"{path}: cannot write it: {target.parent} is not a folder")
        if path.is_symlink() and not target.parent.exists():
            # The folders asked for are the user's path's, not a dangling link's: through
            # one, `/nonexistent/dir/` was made (break23).
            raise OutputFailed(f"{path}: cannot write it: its link leads into {target.parent}, which does not exist")
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
        try:
            # The file's own mode when it exists (a page made private stays private: verify21
            # V14), else as other outputs, not mkstemp's 0600.
            os.fchmod(handle, kept)
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as exc:
        raise OutputFailed(f"{path}: cannot write it: {exc.strerror or exc}{_earlier_removed(path)}") from None


def _earlier_removed(path: Path) -> str:
    """The file this write was to replace, removed (which needs no room): left as it was, last
    night's green JUnit file or page stood for a run whose own could not be written (break31 M4)."""
    try:
        if not path.is_file():
            return ""
    except OSError:
        return ""
    try:
        path.unlink()  # a link is removed, not what it leads to
    except OSError as exc:  # a read-only folder (verify32 n6): said, as it still stands
        return f" (the earlier file there could not be removed either, {exc.strerror or exc}: it is not this run's)"
    return " (the earlier file there was removed, so that it does not stand for this run)"


def _stream_into(path: Path, data: bytes) -> None:
    """Into a pipe, FIFO or device. Opened without waiting: a FIFO that nobody reads blocked
    the open for ever (verify21 V2); then written as any file, waiting for its reader."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise OutputFailed(f"{path}: cannot write it: a FIFO that nobody reads") from None
        raise
    os.set_blocking(fd, True)
    # The reader went away (`--html /dev/stdout | head`): quiet, as a report's own stdout is
    # (verify21 V3: "Broken pipe", exit 11, for what `| head` means).
    with contextlib.suppress(BrokenPipeError), os.fdopen(fd, "wb") as out:
        out.write(data)


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
