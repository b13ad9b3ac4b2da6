"""Shared fixtures: the simulator on a loopback port, job files, the CLI in and out of process."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import gc
import hashlib
import importlib.metadata
import io
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Compiled modules are cached for the suite even where PYTHONDONTWRITEBYTECODE is set (it is, on
# the shared machine): without the cache every xdist worker re-compiles batchrun and pytest
# re-rewrites every test module's asserts (~7 CPU-s per worker), and every CLI subprocess
# compiles the package again (~0.5 s each). The files go to git-ignored __pycache__ folders;
# reading them is what Python does anyway. Set before the imports below, so they are cached too.
sys.dont_write_bytecode = False

# Test files live in memory where the machine has a tmpfs (pytest's PYTEST_DEBUG_TEMPROOT,
# unless set): runs fsync their results, batch states and caches, and on a virtual disk that
# was ~4 of the suite's ~11 system CPU-seconds. What is tested is the same: a crash or kill -9
# keeps what the kernel was given either way, and a full disk is simulated with RLIMIT_FSIZE.
if "PYTEST_DEBUG_TEMPROOT" not in os.environ and os.access("/dev/shm", os.W_OK | os.X_OK):
    os.environ["PYTEST_DEBUG_TEMPROOT"] = "/dev/shm"

# A suite started as a background job of a non-interactive shell (`cmd &`) inherits SIGINT
# ignored, and under nohup SIGHUP, and so would every process a test starts: those start as a
# command typed at a terminal does, with both live. Tests of an ignored signal set it so.
for _sig, _live in ((signal.SIGINT, signal.default_int_handler), (signal.SIGHUP, signal.SIG_DFL)):
    if signal.getsignal(_sig) == signal.SIG_IGN:
        signal.signal(_sig, _live)
# The keys and the step summary batchrun reads from the environment, as a developer's shell or a
# CI runner may export them: with a real OPENROUTER_MANAGEMENT_KEY there, every simulated run read
# /credits with it, was refused, and ~117 tests failed (out-147 F4). Tests that need them set them.
for _name in ("OPENROUTER_API_KEY", "OPENROUTER_MANAGEMENT_KEY", "GITHUB_STEP_SUMMARY"):
    os.environ.pop(_name, None)
# Files are made as under the commonest umask, 022: the tests of a written file's mode (a page,
# a merge's results as a run's, 0644 not mkstemp's 0600) failed under a user's 077 (out-147).
# Tests of another umask set it themselves.
os.umask(0o022)

import httpx  # noqa: E402  # after the bytecode setting: these imports compile batchrun
import pytest  # noqa: E402

from batchrun import _event_loop  # noqa: E402
from batchrun._clock import SystemClock  # noqa: E402
from batchrun._journal_file import journal_path  # noqa: E402
from batchrun._output_paths import summary_path  # noqa: E402
from batchrun._summary_floor import file_digest  # noqa: E402
from batchrun.cli import main  # noqa: E402
from batchrun.simulator import SimConfig, Simulator  # noqa: E402

from .forked import ForkedCli, run_forked  # noqa: E402


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: two workers per core. About a quarter of the suite's wall time is waiting
    (loopback servers, child processes, Chromium), which a second worker per core fills: on two
    cores, 4 workers ran the suite in 52 s where 2 took 62 s (alternated runs, 2 rounds)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 2 * cores


def pytest_collection_finish(session: pytest.Session) -> None:
    """What the worker imported and collected lives until it ends: frozen out of the cyclic GC,
    full collections stop walking it (~1.5 CPU-s a worker, measured with gc.callbacks). What a
    test creates is collected as before, under the default thresholds a caller's process has."""
    gc.collect()
    gc.freeze()


FAKE_KEY = "sk-or-v1-" + "0123456789abcdef" * 4  # a test key: must never appear in any output
MGMT_KEY = "sk-or-v1-" + "fedcba9876543210" * 4  # a test management key: likewise


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def respx_transport() -> httpx.AsyncHTTPTransport:
    """httpx's own transport (what respx intercepts) on one TLS context for the session: a new
    transport loads the system's certificates, ~50 ms of CPU each, ~40 times in the suite."""
    return httpx.AsyncHTTPTransport(verify=_tls_context())


class _Patches:
    def patch_system_clock(self: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        """The CLI's runs take SystemClock: made this clock for the test."""
        monkeypatch.setattr(SystemClock, "monotonic", lambda _self: self.monotonic())
        monkeypatch.setattr(SystemClock, "time", lambda _self: self.time())
        monkeypatch.setattr(SystemClock, "sleep", lambda _self, seconds: self.sleep(seconds))


class FakeClock(_Patches):
    """Monotonic and wall time that advance only when someone sleeps; sleeps return at once."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = 0.0
        self.wall0 = start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.wall0 + self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


LEAP_POLL_S = 0.005


class LeapClock(_Patches):
    """Real time that leaps `by` seconds forward once `when()` holds. A run's deadline (or
    any wait) set in it comes when the test's condition is met, such as every request in
    flight or a row written, not when the machine's speed happens to bring it, and the test
    does not wait the deadline out. Sleeps look at `when()` every few milliseconds."""

    def __init__(self, when: Callable[[], bool], by: float) -> None:
        self.when, self.by = when, by
        self.offset = 0.0
        self.leapt = False

    def _look(self) -> None:
        if not self.leapt and self.when():
            self.leapt = True
            self.offset += self.by

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def time(self) -> float:
        return time.time() + self.offset

    async def sleep(self, seconds: float) -> None:
        until = self.monotonic() + max(0.0, seconds)
        await asyncio.sleep(0)  # a sleep yields, however short
        while (left := until - self.monotonic()) > 0:
            await asyncio.sleep(min(left, LEAP_POLL_S))
            self._look()


class _LeapLoop(asyncio.SelectorEventLoop):
    """A run's event loop on its LeapClock's time, so that timers set on the loop (a hung
    call's cut-off at the deadline) come at the leap too. It looks at the clock's condition
    every few milliseconds until the leap: a loop waiting on a call that never answers has
    nothing else to wake it."""

    def __init__(self, clock: LeapClock) -> None:
        super().__init__()
        self.clock = clock
        self.call_soon(self._look)

    def _look(self) -> None:
        if not self.clock.leapt:
            self.call_later(LEAP_POLL_S, self._look)

    def time(self) -> float:
        self.clock._look()
        return super().time() + self.clock.offset


def patch_loop(clock: LeapClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's runs in process start their event loops on `clock`'s time (_LeapLoop)."""
    monkeypatch.setattr(_event_loop, "loop_factory", lambda: lambda: _LeapLoop(clock))


def deadline_at_first_wait(patch: pytest.MonkeyPatch, seconds: float = 30) -> str:
    """A `--deadline` (returned) that comes at the CLI run's first wait, never waited out: in
    batch mode the pause before a poll, when every batch it submits is submitted. A deadline of
    0.2 s of real time passed before the third submission on a busy machine (exit 6 for 10)."""
    LeapClock(lambda: True, by=seconds).patch_system_clock(patch)
    return str(seconds)


def journaled_generations(results: Path) -> int:
    """How many attempts' replies named their generation so far (the attempt journal's lines):
    their headers have come, so the request is in flight at the server."""
    try:
        return journal_path(results).read_bytes().count(b'"gen":')
    except FileNotFoundError:
        return 0


def rows_written(results: Path) -> int:
    try:
        return results.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@pytest.fixture
def tmp_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test's own empty folder, as pytest's `tmp_path` (named after the test, mode 0700,
    under the session's base folder), made at once: pytest numbers each one by listing every
    folder made before it in the worker, quadratic in the tests (~0.4 CPU-s a worker)."""
    name = re.sub(r"\W", "_", request.node.name)[:30]
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=tmp_path_factory.getbasetemp()))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig()


@pytest.fixture
def sim(sim_config: SimConfig) -> Iterator[Simulator]:
    simulator = Simulator(sim_config)
    with simulator.serve_in_thread():
        yield simulator


@pytest.fixture
def api_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test key in the environment, and no CI step summary for a run to append to."""
    monkeypatch.setenv("OPENROUTER_API_KEY", FAKE_KEY)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


@pytest.fixture
def keys_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Both test keys in the environment, and a step summary in tmp_path: every place a key could leak to."""
    monkeypatch.setenv("OPENROUTER_API_KEY", FAKE_KEY)
    monkeypatch.setenv("OPENROUTER_MANAGEMENT_KEY", MGMT_KEY)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "step.md"))


def write_job(folder: Path, text: str, name: str = "job.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


SMALL_JOB = """
name: small
defaults:
  params: {max_tokens: 32}
models: [openai/gpt-4o-mini, google/gemini-2.0-flash-001]
prompts:
  - id: capital
    text: "Capital of {{country}}?"
    vars: [{country: France, expect: Paris}, {country: Japan, expect: Tokyo}, {country: Italy, expect: Rome}]
    checks: [{contains: "{{expect}}"}]
  - id: sum
    text: "What is {{a}} + 1?"
    vars: [{a: 1}, {a: 2}]
repeat: 2
run: {concurrency: 4, timeout_s: 5, max_attempts: 8, max_wait_s: 5}
"""


@pytest.fixture
def small_job(tmp_path: Path) -> Path:
    return write_job(tmp_path, SMALL_JOB)


@pytest.fixture
def job(small_job: Path) -> Path:
    """The small job, as the gate's and the readers' tests name it."""
    return small_job


@pytest.fixture(scope="session")
def _small_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small job's complete run on the simulator, made once per worker (~0.1 s each time)."""
    folder = tmp_path_factory.mktemp("small-results")
    out = folder / "done.jsonl"
    code, _, err = call_cli(write_job(folder, SMALL_JOB), "--simulate", "-o", out, "-q")
    assert code == 0, err
    return out


@pytest.fixture
def results(tmp_path: Path, job: Path, _small_results: Path) -> Path:
    """A complete results file of the small job (20 rows) and its summary, beside `job`: a copy
    of one run, as each test may change it."""
    out = tmp_path / "done.jsonl"
    for source in _small_results.parent.glob("done.*"):
        shutil.copyfile(source, tmp_path / source.name)
    return out


SMALL_RUN = "run: {concurrency: 4, timeout_s: 5, max_attempts: 8, max_wait_s: 5}"


def judged_small_job(run: str | None = None) -> str:
    """SMALL_JOB with its capitals graded by a judge (openai/gpt-4o-mini) instead of `contains`;
    `run`, when given, replaces its `run:` line."""
    judged = SMALL_JOB.replace("prompts:", "judge: {model: openai/gpt-4o-mini}\nprompts:").replace(
        '    checks: [{contains: "{{expect}}"}]', "    checks: [{judge: 'Names {{expect}}.'}]"
    )
    return judged if run is None else judged.replace(SMALL_RUN, run)


BIG_JOB = SMALL_JOB.replace("repeat: 2", "repeat: 20").replace(SMALL_RUN, "run: {concurrency: 8, grace_s: 0.2}")


def priced_job(name: str, max_tokens: int, text: str, variables: str, repeat: int, run: str) -> str:
    """One prompt on two priced simulator models: the job the budget and cost tests spend on.
    `variables` is the YAML of the prompt's `vars`, `run` the inside of the `run:` mapping."""
    return (
        f"name: {name}\n"
        f"defaults: {{params: {{max_tokens: {max_tokens}}}}}\n"
        "models: [anthropic/claude-3.5-haiku, openai/gpt-4o-mini]\n"
        "prompts:\n"
        "  - id: p\n"
        f'    text: "{text}"\n'
        f"    vars: {variables}\n"
        f"repeat: {repeat}\n"
        f"run: {{{run}}}\n"
    )


def counting_job(name: str, model: str, rows: int, run: str, max_tokens: int = 16) -> str:
    """One prompt, "What is {{a}} + 1?", on one model for `rows` rows: the job the key window's
    tests spend on. `run` is the YAML of its `run:` mapping."""
    return f"""
name: {name}
defaults:
  params: {{max_tokens: {max_tokens}}}
models: [{model}]
prompts:
  - id: p
    text: "What is {{{{a}}}} + 1?"
    vars: [{", ".join(f"{{a: {i}}}" for i in range(rows))}]
run: {run}
"""


TEN_NS = "[{n: 1}, {n: 2}, {n: 3}, {n: 4}, {n: 5}, {n: 6}, {n: 7}, {n: 8}, {n: 9}, {n: 10}]"
BUDGET_JOB = priced_job(
    "spend",
    200,
    "Tell me about {{n}} in detail, please, with examples and a long explanation.",
    TEN_NS,
    10,
    "concurrency: 64, grace_s: 5",
)

TOOLS_JOB = """
name: tools
defaults: {params: {max_tokens: 64}}
models: [anthropic/claude-3.5-haiku]
prompts:
  - id: weather
    text: "What is the weather in {{country}}?"
    vars: [{country: France, expect: Paris}, {country: Japan, expect: Tokyo}]
    params:
      tools:
        - type: function
          function:
            name: get_weather
            parameters: {type: object, properties: {city: {type: string}}, required: [city]}
      tool_choice: auto
    checks:
      - name: calls-weather
        tool_call:
          name: get_weather
          arguments: {type: object, required: [city], properties: {city: {const: "{{expect}}"}}}
  - id: chat
    text: "Say hello to {{country}}."
    vars: [{country: France}]
    params:
      tools: [{type: function, function: {name: get_weather}}]
      tool_choice: none
    checks:
      - {tool_call: {}, not: true, name: no-tool}
run: {concurrency: 2, timeout_s: 5}
"""


def child_env(**extra: str) -> dict[str, str]:
    # Without PYTHONDONTWRITEBYTECODE: a child caches what it compiles, like this process (above).
    dropped = ("OPENROUTER_API_KEY", "GITHUB_STEP_SUMMARY", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(extra)
    return env


def exec_cli(
    *args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The CLI as a new interpreter, `python -m batchrun`, as cron would start it: for the tests
    where the interpreter's own start-up is part of what is shown."""
    return subprocess.run(
        [sys.executable, "-m", "batchrun", *map(str, args)],
        cwd=cwd,
        env=env or child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def run_cli(
    *args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The CLI as a real process (forked, tests/forked.py): exit status, output, its own pid."""
    pipes = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    return run_forked(args, timeout, cwd=cwd, env=env or child_env(), text=True, **pipes)


def start(
    *args: str | Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    preexec_fn: Callable[[], object] | None = None,
) -> subprocess.Popen[str]:
    """The CLI as a real process that runs on while the test signals, kills or races it
    (`preexec_fn`: run in the child first, as its parent's settings, e.g. nohup's SIGHUP)."""
    return ForkedCli(
        args,
        cwd=cwd,
        preexec_fn=preexec_fn,
        env=env or child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def wait_for_lines(path: Path, count: int, process: subprocess.Popen[Any], limit_s: float = 30) -> None:
    """Poll until the run has written `count` lines (bounded; the run goes on meanwhile)."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        if process.poll() is not None:  # looked at once more after it ended (out-147 F2)
            raise AssertionError(f"the run ended (exit {process.returncode}) having written fewer than {count} lines")
        time.sleep(0.02)
    raise AssertionError(f"the run wrote fewer than {count} lines in {limit_s} s")


def wait_for_file(path: Path, process: subprocess.Popen[Any], limit_s: float = 30) -> None:
    """Poll until `path` exists (bounded; the first run holds it until it is signalled)."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end and process.poll() is None:
        if path.exists():
            return
        time.sleep(0.02)
    raise AssertionError(f"{path.name} never appeared")


def call_cli(*args: str | Path) -> tuple[int, str, str]:
    """The CLI in process (fast), in this process's environment: exit code, stdout, stderr,
    argparse's own exits (--help, --version, usage errors: SystemExit to sys.stdout/stderr) included."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args], out=out, err=err)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return code, out.getvalue(), err.getvalue()


def cli(
    *args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`run_cli` without the process: the same environment (exactly `env`, by default the
    parent's without a key), working folder, exit code and output. For every CLI behaviour
    but those a process boundary is part of (signals, kill -9, a pty, another process's lock,
    interpreter start-up), at a fraction of a subprocess's cost."""
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    os.environ.clear()
    os.environ.update(child_env() if env is None else env)
    try:
        if cwd is not None:
            os.chdir(cwd)
        code, out, err = call_cli(*args)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess([str(a) for a in args], code, out, err)


SIM_MANAGEMENT_KEY = "sim-management-key"


def management_env() -> dict[str, str]:
    return child_env(OPENROUTER_MANAGEMENT_KEY=SIM_MANAGEMENT_KEY)


def isolated_run(
    sim: Simulator, job: Path, out: Path, budget: str, *extra: str, environment: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`batchrun JOB --isolated-key --budget B -o OUT` against the simulator."""
    return cli(
        job,
        "--base-url",
        sim.base_url,
        "--isolated-key",
        "--budget",
        budget,
        "-o",
        out,
        *extra,
        env=environment if environment is not None else management_env(),
    )


def created_keys(sim: Simulator) -> list[str]:
    return [label for label in sim.stats.by_key_label if label != sim.account_key.label]


@pytest.fixture(scope="session", autouse=True)
def vega_bundle_cache(request: pytest.FixtureRequest) -> Iterator[None]:
    """vl-convert's JavaScript bundle, kept in pytest's cache folder between runs.

    Bundling takes 2-8 CPU-s per process (by machine), and its output depends only on
    vl-convert's version and the arguments: the cached text is exactly what an earlier call of
    the same version returned, so every page is the one batchrun builds. A cold run (a fresh
    clone) bundles once, in the first worker that draws a page."""
    try:
        import vl_convert
    except ImportError:  # no report extra: the pages' tests say so themselves
        yield
        return
    cache: pytest.Cache | None = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    bundle = vl_convert.javascript_bundle
    version = importlib.metadata.version("vl-convert-python")

    def cached_bundle(snippet: str, vl_version: str | None = None) -> str:
        if cache is None:
            return bundle(snippet, vl_version=vl_version)
        key = hashlib.sha256(f"{version}\0{vl_version}\0{snippet}".encode()).hexdigest()
        folder = cache.mkdir("vega-bundle")
        path = folder / f"{key}.js"
        if path.exists():
            return path.read_text(encoding="utf-8")
        # One worker bundles while the others wait for its file: in a cold run (a fresh clone,
        # as CI runs) every worker drawing a page bundled at once, ~2 CPU-s each.
        with open(folder / f"{key}.lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if path.exists():
                return path.read_text(encoding="utf-8")
            text = bundle(snippet, vl_version=vl_version)
            _store_bundle(path, text)
        return text

    vl_convert.javascript_bundle = cached_bundle
    try:
        yield
    finally:
        vl_convert.javascript_bundle = bundle


def _store_bundle(path: Path, text: str) -> None:
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(path)  # atomic: a worker that does not wait never reads half a bundle
    except OSError:
        # Best effort: a forked CLI child (tests/forked.py) inherits this function, and one
        # under a file-size limit cannot write the cache; the page it draws must not fail.
        temporary.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def web() -> Iterator[httpx.Client]:
    """One HTTP client for the whole session: a new one per request costs ~50 ms (its TLS context)."""
    with httpx.Client(timeout=10) as client:
        yield client


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def final_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a run's results file, each once (the supersede rule): within one run a row
    is written again only when its cost was learnt late (`cost_resolved_at`), and then its
    last record is the row, in its first place."""
    rows: dict[str, dict[str, Any]] = {}
    for record in read_rows(path):
        if record["id"] in rows:
            assert record.get("cost_resolved_at"), f"row {record['id']} was recorded twice"
        rows[record["id"]] = record
    return list(rows.values())


def killed_run_journal(results: Path, endpoint: str, shard: str | None = None, own: bool = True) -> None:
    """The journal a run killed after writing `results` leaves: its header names the endpoint,
    and (`own`) its attempts' generation ids are the file's records' (_answered_by: a journal
    vouches only for the file its run wrote)."""
    rows = read_rows(results)
    first = rows[0]
    lines: list[dict[str, Any]] = [
        {"job": first["job"], "job_fingerprint": first["job_fingerprint"], "shard": shard, "endpoint": endpoint}
    ]
    for row in rows if own else ():
        lines += [
            {"row": row["id"], "at": 0, "usd": 0.0, "model": row["model"]},
            {"row": row["id"], "gen": row["generation_id"]},
        ]
    journal_path(results).write_text("".join(json.dumps(line) + "\n" for line in lines))


def resealed(results: Path) -> None:
    """The summary beside `results` made to see the file as it is now: what a resume that wrote the
    lines a test appended by hand would have left (_orchestration: results_bytes, results_digest).
    Lines appended with no run since are an edit (out-163 F1)."""
    path = summary_path(results)
    summary = json.loads(path.read_text())
    size = results.stat().st_size
    path.write_text(json.dumps({**summary, "results_bytes": size, "results_digest": file_digest(results, size)}))
