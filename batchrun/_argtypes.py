"""Types of the command-line options: each refuses a bad value with a sentence, not a function name.

argparse words a failed `type=` call as "invalid <function name> value" unless the type
raises ArgumentTypeError, so every type here does, for every bad input.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ._files import followed
from ._output_paths import output_pattern_problem

MAX_CONCURRENCY = 4096  # the schema's maximum for run.concurrency and models[].concurrency
# The schema's maxima for run.timeout_s and run.grace_s: `--grace 30000` (milliseconds, meant)
# held a run past `--deadline 3` for as long as it liked, where the job file's was refused (break60 F3).
MAX_TIMEOUT_S = 3600.0
MAX_GRACE_S = 600.0


# What a number on the command line is written as: ASCII digits, a point, an exponent.
# Python's float() also takes "1_000" and other scripts' digits ("１"), which a budget
# mistyped that way should not pass as (break14c m8).
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity|nan)", re.IGNORECASE | re.ASCII)


def _number(text: str) -> float:
    try:
        if not _NUMBER.fullmatch(text.strip()):
            raise ValueError(text)
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def whole(text: str, low: int, high: int) -> int:
    try:
        # int() takes other scripts' digits ('٤': out-144 F8) and underscores ('1_6': out-148 F6); --budget not.
        if not text.isascii() or "_" in text:
            raise ValueError
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {text}")
    return value


def positive_int(text: str) -> int:
    return whole(text, 1, 1_000_000)


def concurrency(text: str) -> int:
    return whole(text, 1, MAX_CONCURRENCY)


def attempts(text: str) -> int:
    return whole(text, 1, 100)  # the schema's maximum for run.max_attempts


def response_bytes(text: str) -> int:
    # The schema's bounds for run.max_response_bytes: a record holds the answer, and readers take
    # lines of up to 32 MiB (an answer past them was paid again by every resume: verify14i V7).
    return whole(text, 1024, 16 << 20)


def port(text: str) -> int:
    return whole(text, 0, 65535)


def positive_float(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def timeout(text: str) -> float:
    return _at_most(positive_float(text), MAX_TIMEOUT_S, "run.timeout_s", text)


def grace(text: str) -> float:
    return _at_most(non_negative_float(text), MAX_GRACE_S, "run.grace_s", text)


def _at_most(value: float, limit: float, field: str, text: str) -> float:
    if value > limit:
        raise argparse.ArgumentTypeError(f"must be at most {limit:g} seconds, as {field}, got {text}")
    return value


def rate(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def url_problem(text: str) -> str | None:
    """Why `text` is not an http(s) base URL, or None."""
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        return f"not a URL: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"expected an http:// or https:// URL with a host, got {text!r}"
    try:
        _ = parts.port  # read lazily: a port past 65535 was found by the first request (exit 1)
    except ValueError as exc:
        return f"{exc} in {text!r}"
    if parts.username is not None or parts.password is not None:
        # The key goes in a header from the environment; credentials in the URL were a Python
        # error at the first request, exit 1 (verify21 V22). The text is not repeated: it may be a key.
        return "a URL with credentials (user:password@): the API key comes from the environment, not the URL"
    if parts.query or parts.fragment:
        # Paths are added after it: `...?x=1/chat/completions` is not the chat URL (verify28 F8).
        return f"a base URL has no query or fragment (?... or #...), got {text!r}"
    return None


def base_url(text: str) -> str:
    problem = url_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def cache_dir(text: str) -> str:
    """`--cache DIR`: a folder. A file here is almost always the job file read as DIR
    (`batchrun run --cache job.yaml`), since `--cache` may stand alone."""
    from pathlib import Path

    path = Path(text)
    if text.endswith((".yaml", ".yml")) or (path.exists() and not path.is_dir()):
        raise argparse.ArgumentTypeError(
            f"{text} is a file, not a cache folder: put --cache after JOB.yaml, or write --cache=DIR"
        )
    return text


def significance(text: str) -> float:
    """A test's level: 0 would call nothing significant (no regression could ever fail a
    gate), 1 everything, so both ends are refused."""
    value = _number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be above 0 and below 1, got {text}")
    return value


def user_path(text: str) -> Path:
    """A path on the command line: a leading `~` is the home folder, as the shell makes it of a
    word, but not after `--output=` or in quotes: `--output=~/r.jsonl` made a folder named `~`,
    and `cache prune --dir=~/c` pruned nothing, exit 0, where `--cache=~/c` was the home's (out-102 F3)."""
    # os.path's, not Path's: `~nosuchuser/x` (a file named `~draft.jsonl`) stays as typed, as the
    # shell leaves it, where Path.expanduser raised a RuntimeError, a traceback (out-103 F3).
    return Path(os.path.expanduser(text))


def output_file(text: str) -> Path:
    """`run -o`: a results file, or a pattern with run.output's placeholders, `{name}` and
    `{timestamp}` (out-102 F4: kept literally, night 2 was exit 2 on the file night 1 wrote)."""
    path = user_path(text)
    if text.endswith("/"):  # Path drops it: `x.jsonl/` was written as the file x.jsonl (out-176 F4)
        raise argparse.ArgumentTypeError(f"{text!r} ends in /, as a folder does: name the results file (x.jsonl)")
    if ("{" in text or "}" in text) and (problem := output_pattern_problem(str(path))) is not None:
        raise argparse.ArgumentTypeError(problem.removeprefix("run.output "))
    return path


def merged_file(text: str) -> Path:
    """A path `merge` takes (a shard, its output): one that names no file (`.`, `/`, an unset
    `"$OUT"`) is refused here, one line, exit 2 (break65 F4: a traceback and exit 1, read by cron
    as rows in error). A shard's sidecars, named by a glob, are `merge`'s own to leave out."""
    path = user_path(text)
    if not text or not path.name or path.name in (".", "..") or text.endswith("/"):
        raise argparse.ArgumentTypeError(f"{text!r} names a folder, not a results file (a name ending in .jsonl)")
    return path


def results_file(text: str) -> Path:
    """A results file's path, as `merged_file`; its run's summary is named as such. Through a link,
    the file it names: its run's files are beside it."""
    return followed(_not_a_summary(text, merged_file(text)))


def run_or_folder(text: str) -> Path:
    """What `history` reads: a job's output folder or a results file (through a link, the file it
    names), not a run's summary."""
    return followed(_not_a_summary(text, user_path(text)))


def _not_a_summary(text: str, path: Path) -> Path:
    if (said := summary_given(path)) is not None:  # break65 F7: "not JSON", of a JSON file
        raise argparse.ArgumentTypeError(f"{text!r} is {said}")
    return path


def summary_given(path: Path) -> str | None:
    """What to say of a run's summary given where its results go: "the summary ...: give 'r.jsonl'"."""
    if not path.name.endswith(".summary.json"):
        return None
    results = path.with_name(path.name.removesuffix(".summary.json") + ".jsonl")
    return f"the summary a run writes beside its results: give {str(results)!r}"


class Once(argparse.Action):
    """Every option of one value (the parsers' default action): a second, other value would win
    in silence (`--budget 1 ... --budget 100`, a line edited in a cron file): a money or gate
    setting (out-143), a shard (out-157 F5: `--shard 1/4 --shard 2/4` ran shard 2, and shard
    1's rows never ran), a deadline or the mode (out-176 F3: `--deadline 5 --deadline 99999`
    dropped the deadline, `--mode sync --mode batch` ran batch mode, exit 0, not a word).
    The same value twice is the same setting. A positional is stored as argparse stores it."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        given = _given(namespace)
        if self.option_strings and self.dest in given and given[self.dest] != values:
            shown = [f"{v:g}" if isinstance(v, float) else str(v) for v in (given[self.dest], values)]
            parser.error(f"{option}: given twice, {shown[0]} and {shown[1]}: give it once")
        given[self.dest] = values
        setattr(namespace, self.dest, values)


class OnceSwitch(argparse.BooleanOptionalAction):
    """`--stream` and `--no-stream`: both given, the last won in silence (out-178 F7), as an
    option of one value given twice would (Once)."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        given = _given(namespace)
        value = not str(option).startswith("--no-")
        if given.get(self.dest, value) != value:
            parser.error(f"{' and '.join(self.option_strings)}: both given: give one")
        given[self.dest] = value
        super().__call__(parser, namespace, values, option)


def _given(namespace: argparse.Namespace) -> dict[str, Any]:
    """The values the command line gave, by option (not its defaults): Once's and OnceSwitch's record."""
    given: dict[str, Any] = namespace.__dict__.setdefault("_given", {})
    return given
