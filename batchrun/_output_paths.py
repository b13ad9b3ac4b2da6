"""Where results go: the default path, the summary beside it, finding a run to resume.

`run.output` (and the default `outputs/{name}/{timestamp}.jsonl`) may hold exactly two
placeholders, `{name}` (the job name) and `{timestamp}` (UTC, to the millisecond, e.g.
`20260102T030405.678Z`); any other brace is a validation error (`output_pattern_problem`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import yaml

from ._early_signals import CLOSED_AT_START
from ._exceptions import ConfigError
from ._files import a_descriptor, open_regular
from ._formats import utc_compact
from ._journal_file import JOURNAL_SUFFIX
from ._record_head import RECORD_START
from ._results import RESULTS_MODE
from ._scrub import Scrubber, environment_scrubber

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
    sidecar = sidecar_name_problem(Path(pattern), made=False)
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
    if (keyed := key_in_path_problem(path)) is not None:
        return keyed
    if path.is_dir():
        return f"{path}: is a folder: name the file to write {role} to"
    if (descriptor := a_descriptor(path)) in CLOSED_AT_START:
        # Opened on /dev/null at the start (_entry): written there, it went nowhere, exit 0 (out-155 F7).
        return f"{path}: descriptor {descriptor} was closed when batchrun started: {role} would go nowhere"
    if path.parent.exists() and not path.parent.is_dir():
        return f"{path}: cannot write {role} there: {path.parent} is not a folder"
    try:
        target = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: the write fails and says so
        target = path
    written = not (target.exists() and not target.is_file())  # a stream (/dev/stdout) is written into
    if written and (too_long := _name_length_problem(target, (target.suffix,))) is not None:
        return too_long
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
    if a_descriptor(path) is not None:  # a link to /dev/stderr, a pipe's (out-155 F2)
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


def sidecar_name_problem(output: Path, made: bool = True) -> str | None:
    """Why `output` may not be a results file: it does not end in `.jsonl`, or it is named like
    a sidecar. A name without `.jsonl` shared its sidecars with the `.jsonl` file of the same
    stem (`night`, `night.json` and `night.jsonl` had one summary and one journal: a run on one
    took the other's key gap and crash journal; verification of break14e, F3 and F4). `made`:
    the name as it is made (not a pattern), whose files' names must fit its folder."""
    if (keyed := key_in_path_problem(output)) is not None:
        return keyed
    sidecar = sidecar_problem(output)
    if sidecar is None and output.name == ".jsonl":
        return f"{output}: a results file needs a name before .jsonl (its summary and journal are named after it)"
    if sidecar is None and not output.name.endswith(".jsonl"):
        return f"{output}: a results file's name ends in .jsonl (its summary and journal are named after it)"
    return sidecar or (_name_length_problem(output) if made else None)


def key_in_path_problem(path: Path) -> str | None:
    """A path that holds a key of the environment, or 16 or more of its characters: its file's
    name would show the key to any `ls` in a CI log, and a run's summary names its results with
    the key masked, so that it named another file and the run could not be resumed (out-176 F1)."""
    text, scrub = str(path), environment_scrubber()
    # A folder linked to one whose name holds it too: the files are written there (out-178 F9).
    if scrub.text(text) == text and scrub.text(real := os.path.realpath(text)) == real:
        return None
    return f"{text}: the path holds a key of the environment (16 or more of its characters): name the file otherwise"


def _name_length_problem(output: Path, suffixes: tuple[str, ...] = (".jsonl", *SIDECARS)) -> str | None:
    """A name too long for the names of the files written beside it (`suffixes` after its stem),
    each written whole through a temporary copy (mkstemp's: the name, 8 characters, `.tmp`): a
    summary's failed once every row was paid for (exit 11), and so did every resume's (out-143
    F5); through a folder deep enough, the whole path's limit too (out-144 F5), and a page's or a
    JUnit file's after its re-grading was paid for (F6)."""
    try:
        name_max, path_max = (os.pathconf(output.parent, name) for name in ("PC_NAME_MAX", "PC_PATH_MAX"))
    except (OSError, ValueError):  # a folder the run is to make
        name_max, path_max = 255, 4096
    longest = max(len((output.stem + suffix).encode()) for suffix in suffixes) + len("12345678.tmp")
    whole = len(os.fsencode(os.path.abspath(output.parent))) + 1 + longest
    if longest > name_max:
        return (
            f"{output}: its name is too long: the files written beside it (and their temporary copies) need "
            f"names of up to {longest} bytes, past the {name_max} a file name may have there; give a shorter name"
        )
    if whole >= path_max:
        return (
            f"{output}: its path is too long: the files written there (and their temporary copies) need paths "
            f"of up to {whole} bytes, past the {path_max} a path may have; give a shorter path"
        )
    return None


def summary_path(results: Path) -> Path:
    return results.with_name(results.stem + ".summary.json")


def named_results(summary: Any) -> str | None:
    """The name of the results file a summary says it was written for; None when it names none
    (no `output`, or one of no name: "" or "."; out-146 F11, out-148 F5)."""
    named = summary.get("output") if isinstance(summary, dict) else None
    return (Path(named).name or None) if isinstance(named, str) else None


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


def write_json_atomically(path: Path, data: Mapping[str, Any], scrub: Scrubber | None = None) -> None:
    """Replace `path` with `data` as JSON, whole or not at all, with the usual file mode; with
    every secret `scrub` knows masked in it, as a record's line is (Scrubber.line: one look at the
    text, where walking each string of a summary was a tenth of a small run's CPU)."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        # mkstemp creates 0600; results are 0644 less the umask, and their summary matches
        # (0666 less it was writable by anyone under umask 000: break36).
        os.fchmod(handle, RESULTS_MODE & ~current_umask())
        with os.fdopen(handle, "wb") as out:
            out.write(_indented(data) if scrub is None else scrub.line(_indented(data)))
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _indented(data: Mapping[str, Any]) -> bytes:
    """`data` as indented JSON, each float that is not finite as null. By orjson, which writes
    those nulls itself: json.dump with an indent is pure Python, and with the walk `finite` takes
    it was a tenth of a small run's CPU; by json where orjson cannot (an integer past 64 bits)."""
    try:
        return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(finite(data), indent=2, allow_nan=False).encode()


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
