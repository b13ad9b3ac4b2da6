"""The command line: parses arguments, shows progress, prints summaries, sets the exit code.

The only package that prints or exits; everything else raises or returns. Commands live
in `_run_commands` and `_file_commands`, the arguments in `_parser`."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import functools
import gc
import io
import os
import signal
import stat
import sys
from pathlib import Path
from typing import NoReturn, TextIO, cast

from .._console import Console, append_step_summary
from .._early_signals import CLOSED_AT_START, SIGNALS, caught
from .._exceptions import (
    AuthFailed,
    BatchrunError,
    CacheError,
    ConfigError,
    CreditExhausted,
    JobError,
    LockHeld,
    OutputFailed,
    RequestFailed,
    ResultsError,
    SharedOutput,
)
from .._fd_limit import raise_soft_limit
from .._files import describe_os_error
from .._formats import md_text
from .._results import first_record
from .._signals import release_early
from .._verdict import ExitCode
from ._common import step_summary
from ._file_commands import cmd_batches, cmd_cache, cmd_diff, cmd_history, cmd_merge, cmd_report
from ._parser import COMMANDS, build_parser, run_usage_error
from ._run_commands import cmd_plan, cmd_run, cmd_simulate, cmd_validate

__all__ = ["build_parser", "entry", "main"]

HANDLERS = {
    "run": cmd_run,
    "validate": cmd_validate,
    "plan": cmd_plan,
    "simulate": cmd_simulate,
    "report": cmd_report,
    "diff": cmd_diff,
    "history": cmd_history,
    "merge": cmd_merge,
    "cache": cmd_cache,
    "batches": cmd_batches,
}


@functools.cache
def _shared_parser() -> argparse.ArgumentParser:
    # Built once per process: ~100 arguments over ten commands cost ~10 ms to build, which a
    # caller that runs main() many times in one process (the tests, a wrapper) paid on every
    # call. Parsing never changes the parser; it makes a new namespace each time.
    return build_parser()


def _options_of(command: str, then: str | None = None) -> dict[str, argparse.Action]:
    """The options `batchrun COMMAND` takes, by option string; with `then`, `batchrun COMMAND
    THEN`'s (`cache prune --quiet`: `--quiet cache prune` was told --quiet is no option of
    `cache`, out-153 F6)."""
    parser = _shared_parser()
    for name in (command, then) if then is not None else (command,):
        found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction) and name in a.choices]
        if not found:
            return {}
        parser = found[0].choices[name]
    return parser._option_string_actions


def _option(options: dict[str, argparse.Action], word: str) -> argparse.Action | None:
    """The option `word` names, as argparse reads it: exactly, or a long one's abbreviation
    (`--cach run JOB` ran with ./run as its cache: out-155 F6)."""
    name = word.split("=")[0]
    named = [o for o in options if o.startswith(name)] if name.startswith("--") else []
    return options.get(name) or (options[named[0]] if len(named) == 1 else None)


def _before_run(word: str, following: list[str]) -> bool:
    """Whether `word` is an option of `run` put before a `run` command: `--quiet run JOB.yaml`,
    `--cache run JOB.yaml` (./run taken as its cache: out-153 F7), `--budget 1 run JOB.yaml` or
    `--budget=1 run JOB.yaml` ("unrecognized arguments: JOB.yaml": out-155 F6). `-o run` names a file."""
    found = _option(_options_of("run"), word)
    if found is None:
        return False
    takes_value = "=" not in word and found.nargs not in (0, "?")
    return following[1:2] == ["run"] if takes_value else following[:1] == ["run"]


def _unknown_command(word: str, following: list[str]) -> str | None:
    """A first word that is neither a command nor a job file: `batchrun reprot X` read
    `reprot` as a job file and said "unrecognized arguments: X" (break23 F9)."""
    later = None
    if word.startswith("-"):
        later = next((w for w in following[:2] if w in COMMANDS and w != "run"), None)
        if later is None and _before_run(word, following):
            later = "run"  # `batchrun --quiet run JOB.yaml`: "unrecognized arguments: JOB.yaml" (out-152 F3)
    if later is not None:
        # `batchrun --quiet report X` read `report` as the job file (verify23 N7); the advice
        # names only an option the command has (verify25 N4: `report` has no --quiet).
        then = following[following.index(later) + 1] if following.index(later) + 1 < len(following) else None
        if then is not None and _option(_options_of(later, then), word):
            return f"options go after the command: batchrun {later} {then} {word} ..."
        if _option(_options_of(later), word):
            return f"options go after the command: batchrun {later} {word} ..."
        return f"{word} is not an option of `batchrun {later}` (see batchrun {later} --help)"
    if word.startswith("-") or "/" in word or "." in word or os.path.exists(word):
        return None  # an option, or something meant as a path: the run says what is wrong with it
    close = difflib.get_close_matches(word, COMMANDS, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{word!r} is neither a command nor a job file ({hint}commands: {', '.join(sorted(COMMANDS))})"


def main(
    argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None, *, own_process: bool = False
) -> int:
    """`own_process`: the process is this command's alone (the console script), so process-wide
    settings are its to make: the cyclic GC collects less often, and a run's start-up objects
    are frozen out of it."""
    console = Console(out or sys.stdout, err or sys.stderr, out_closed=own_process and 1 in CLOSED_AT_START)
    argv = list(sys.argv[1:] if argv is None else argv)
    # `batchrun JOB.yaml` is short for `batchrun run JOB.yaml`, options first or not
    # (`batchrun --cache JOB.yaml` then reads JOB.yaml as the folder, and says so).
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version"):
        unknown = _unknown_command(argv[0], argv[1:])
        if unknown is not None:
            console.error(unknown)
            return ExitCode.USAGE
        argv.insert(0, "run")
    run_usage_error()  # one left by an earlier parse (the console script's early look at argv)
    try:
        args = _shared_parser().parse_args(argv)
    except SystemExit:
        if (usage := run_usage_error()) is not None:  # a run's usage error is its verdict too (verify45 N4)
            step_summary(console, early_exit(ExitCode.USAGE, usage, "run"))
        raise
    args.own_process = own_process
    if own_process:
        # The cyclic GC's first generation is collected every 700 new containers by default:
        # a request's objects (httpx and aiohttp models, records, tasks) were traversed a few
        # times each before dying by reference count, ~190 ms of collections in a 3,000-row
        # run, and full collections ran during the imports. At 10,000 most die uncollected:
        # 30 ms (bench/README.md, issue 15). Cyclic garbage waits a little longer: ~10,000
        # objects at most, a few MB.
        gc.set_threshold(10_000, 10, 10)
        raise_soft_limit()  # concurrency above `ulimit -n` failed rows as "connect" (break51 F4)
    if args.command is None:
        _shared_parser().print_help(cast(TextIO, console.err))
        return ExitCode.USAGE
    if getattr(args, "simulate", False) and getattr(args, "base_url", None):
        # One endpoint or the other: the URL given was ignored without a word (verify27 N8).
        console.error("--simulate and --base-url: give one (the built-in simulator, or that endpoint)")
        return ExitCode.USAGE
    if getattr(args, "sim", None) and getattr(args, "simulate", None) is False:
        # Taken and ignored, the run went to the job's endpoint, paid (break27 MAJOR-4).
        console.error("--sim: only with --simulate (settings of the built-in simulator); nothing was sent")
        return ExitCode.USAGE
    said = len(console.said)
    code = _handled(args, console)
    if args.command in ("run", "report", "merge") and not args.finished:
        # Ended before its summary (no key, the key refused, the endpoint down, a bad job): the
        # step summary says so too, or CI showed no verdict for the step (break42 F8); a gate's and
        # a merge's too (out-149 F7: a results file not there, another job's).
        # Its errors, not the warnings said before them (out-151 F6: a merge's "Exit 2" gave one as a reason).
        errors = [line for line in console.said[said:] if not line.startswith("warning: ")]
        why = "; ".join(errors) or "refused before anything was said"
        what = {"run": f"run {getattr(args, 'job', '')}", "report": f"report {getattr(args, 'results', '')}"}
        # A job that loaded names files the summary keeps off (out-111 F1); one refused is not read again.
        loaded = getattr(args, "job_loaded", False)
        step_summary(console, early_exit(code, why, what.get(args.command, args.command)), args, loaded)
    return code


def _handled(args: argparse.Namespace, console: Console) -> int:
    """The command's exit code; every failure it raises said on stderr as one line."""
    args.finished = False
    try:
        if args.command != "run":
            release_early()  # a signal that came early acts here: KeyboardInterrupt, below
        code = HANDLERS[args.command](args, console)
        args.finished = True
        return _stdout_checked(console, args, code)
    except JobError as exc:
        for problem in exc.problems:
            console.error(str(problem))
        return ExitCode.USAGE
    except LockHeld as exc:
        console.error(str(exc))
        return ExitCode.LOCKED
    except OutputFailed as exc:  # after requests may have been sent: not a "nothing spent" 2
        console.error(str(exc))
        return ExitCode.IO
    except AuthFailed as exc:
        console.error(f"the API key was refused: {exc.message}")
        return ExitCode.AUTH
    except CreditExhausted as exc:  # a 402 before the run began is "credits", as during it (out-109 F3)
        console.error(f"stopped: credits ({exc.message})")
        return ExitCode.BUDGET
    except SharedOutput as exc:
        if not exc.on_stderr:  # said there, it would be written into the results (exit 2 says it)
            console.error(str(exc))
        return ExitCode.USAGE
    except (ConfigError, ResultsError, CacheError) as exc:
        console.error(str(exc))
        return ExitCode.USAGE
    except RequestFailed as exc:
        # What to do next, for nothing listening at the URL (break27 m7: the error alone).
        advice = {
            "connect": "; no row was sent: is the endpoint up, and its host and port right?",
            # `--timeout 0.001` was blamed on the endpoint alone (out-142 L1).
            "timeout": "; no row was sent: is the endpoint up, and run.timeout_s (--timeout) long enough for it?",
        }.get(exc.kind, "")
        when = "while pricing the plan" if args.command == "plan" else "before the run started"  # verify38
        console.error(f"the endpoint failed {when}: {exc.kind}: {exc.message}{advice}")
        return ExitCode.ERRORS
    except OSError as exc:  # before the run: an output folder that cannot be made, a read-only folder
        console.error(describe_os_error(exc))
        return ExitCode.USAGE
    except UnicodeEncodeError as exc:
        # A file name the locale cannot spell (LC_ALL=C with UTF-8 mode off: ascii): a
        # traceback, exit 1 (break36 F2).
        console.error(
            f"the name {str(exc.object)[:300]!r} cannot be spelled in this system's "
            f"file-name encoding ({sys.getfilesystemencoding()}): run batchrun under a UTF-8 locale (LANG=C.UTF-8)"
        )
        return ExitCode.USAGE
    except BatchrunError as exc:
        console.error(str(exc))
        return ExitCode.USAGE
    except KeyboardInterrupt:
        console.error("interrupted")
        return ExitCode.INTERRUPTED


def _stdout_checked(console: Console, args: argparse.Namespace, code: int) -> int:
    """A reader's stdout that could not be written (a full disk, a stdout closed from the
    start) is said (verify35 m2: `report --json > report.json` on a full disk left an empty
    file, exit 0, without a word); where it was the product asked for (`--json`, `--markdown`)
    and failed, exit 11. A gate's code is its verdict otherwise, and a reader gone (a broken
    pipe: `| head`) ends it quietly, as Unix tools do. A run says it in its own words."""
    failure = console.out.failure
    if args.command == "run" or failure is None or failure.errno == errno.EPIPE:
        return code
    asked = getattr(args, "json", False) or getattr(args, "markdown", False)
    failed = asked and not console.out.closed and code == ExitCode.OK
    # An exit 11 is an error, said as one (break42 F4: "warning: ..." then exit 11).
    say = console.error if failed else console.warn
    say(f"stdout: the output could not be written: {failure.strerror or failure}")
    return ExitCode.IO if failed else code


def _results_on_stderr(argv: list[str]) -> bool:
    """Whether the results file `argv` names is the regular file stderr goes to (`-o r.jsonl
    2>> r.jsonl`): then nothing may be said, or it lands among the records. A terminal, a pipe or
    /dev/null spoils nothing, and the refusal is said there (verify43 F6)."""
    try:
        stderr = os.fstat(2)
    except OSError:
        return False  # closed
    if not stat.S_ISREG(stderr.st_mode):
        return False
    for named in _named_outputs(argv):
        with contextlib.suppress(OSError, ValueError):
            if os.path.samestat(os.stat(named), stderr):
                return True
    return False


def _named_outputs(argv: list[str]) -> list[str]:
    """The results file the command would write, as argparse reads `argv` (the last `-o` of
    two, `--out=`, `-qoX`, merge's `OUT SHARD...`: verify43 F4, F5); for a command line it
    refuses, every `-o` in it (it fails anyway: its usage error must not land in a results file)."""
    words = argv if not argv or argv[0] in COMMANDS or argv[0] in ("-h", "--help", "--version") else ["run", *argv]
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        try:
            args = _shared_parser().parse_args(words)
        except SystemExit:  # a usage error, or --help (said by main, later)
            args = None
    if args is not None:
        output = getattr(args, "output", None)
        if output is None and args.command == "merge" and len(args.files) > 1:
            output = args.files[0]
        return [] if output is None else [str(output)]
    named = [words[1]] if words[0] == "merge" and len(words) > 1 and not words[1].startswith("-") else []
    for index, arg in enumerate(words):
        after = words[index + 1] if index + 1 < len(words) else ""
        option, equals, value = arg.partition("=")
        if option.startswith("--") and len(option) > 3 and "--output".startswith(option):  # --out, --output=X
            named.append(value if equals else after)
        elif not arg.startswith("--") and arg.startswith("-") and "o" in arg:  # -o X, -oX, -qo X, -qoX
            named.append(arg[arg.index("o") + 1 :] or after)
    return named


def _stderr_holds_records() -> bool:
    """Whether stderr is appended to a results file, any (`2>> outputs/job/older.jsonl`: verify44,
    a resume's notice landed among another run's records), told by its first line."""
    try:
        # By its path: descriptor 2 itself is open for writing only. As a resume tells its own file.
        return stat.S_ISREG(os.fstat(2).st_mode) and first_record(Path("/proc/self/fd/2")) is not None
    except (OSError, ResultsError):
        return False  # no /proc, an empty file, a log of text lines


def early_exit(code: int, why: str, what: str) -> str:
    """The step summary of a run that ended before its own: a section of its own, or its line ran
    into the section before it, a bullet of its list (out-102 F12)."""
    return f"\n### {md_text('batchrun ' + what)}\n\n**Exit {int(code)}:** {md_text(why)}"


def entry() -> NoReturn:
    if _results_on_stderr(sys.argv[1:]) or _stderr_holds_records():
        # `-o r.jsonl 2>> r.jsonl`: refused (as SharedOutput is), before anything is said there (a
        # mistyped option, a job file not there): it would go into the results (verify42 F-A).
        # The step summary is a file of its own (never a results file): CI sees why (verify45 N4).
        append_step_summary(early_exit(ExitCode.USAGE, "refused: stderr is appended to a results file", "run"))
        sys.exit(ExitCode.USAGE)
    code = main(own_process=True)
    try:
        sys.stdout.flush()
    except OSError:
        # stdout's reader went away (`batchrun report X | head`): exit quietly, as Unix
        # tools do, instead of Python's "Exception ignored ... BrokenPipeError" at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if caught[0]:
        # The exit code is decided. The interpreter's shutdown puts the default action back on
        # every signal it has a handler for, so a second Ctrl-C landing there killed the process
        # by the signal (130) after "stopped: interrupted" (verify14i V5); an ignored signal
        # stays ignored.
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
    sys.exit(code)
