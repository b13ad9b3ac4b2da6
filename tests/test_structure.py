"""The code's shape, held by tests (issue 15): no import cycles, nothing below the CLI
imports the orchestrator, only the CLI prints or exits, modules stay small, and the
public names and the exit codes stay in step with what they list."""

from __future__ import annotations

import ast
import asyncio
import functools
import re
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

import batchrun
from batchrun._event_loop import run as run_loop
from batchrun._status import StopReason
from batchrun._verdict import _STOP_CODES

PACKAGE = Path(batchrun.__file__).parent
MAX_LINES = 410  # "no module over about 400 lines" (the largest: _job, _orchestration, _run_output, 410)


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


@functools.cache
def _calls() -> tuple[tuple[Path, int, str], ...]:
    """Every call in the package: its module, line and callee's dotted name (`sys.exit`).
    Parsed once for the tests that read them."""
    return tuple(
        (path, node.lineno, _callee(node))
        for path in _modules()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
    )


def _callee(call: ast.Call) -> str:
    """A call's callee as its dotted name; "" for one that is not a name (`f()()`, `x[0]()`).
    What `ast.unparse` gives those names, at a tenth of its cost over the package."""
    parts, func = [], call.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    return ".".join([func.id, *reversed(parts)]) if isinstance(func, ast.Name) else ""


def _cycles(graph: grimp.ImportGraph) -> list[set[str]]:
    """Strongly connected groups of more than one module (Tarjan), type-only imports included."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(group)

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_the_package_has_no_import_cycles() -> None:
    graph = grimp.build_graph("batchrun", cache_dir=None)  # no .grimp_cache: a read-only checkout (out-154 F1)
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for module in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(module)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.a")
    graph.add_import(importer="p.c", imported="p.a")
    assert _cycles(graph) == [{"p.a", "p.b"}]


def test_only_the_cli_and_the_package_front_import_the_orchestrator() -> None:
    graph = grimp.build_graph("batchrun", cache_dir=None)
    importers = graph.find_modules_that_directly_import("batchrun._orchestration")
    assert importers <= {"batchrun", "batchrun.cli._run_commands"}, importers


def test_library_modules_never_print_or_exit() -> None:
    offenders = []
    for path, line, name in _calls():
        # The CLI, its entry points, and the process's signal handlers (a second signal exits at once).
        if "cli" in path.relative_to(PACKAGE).parts or path.name in ("__main__.py", "_entry.py", "_signals.py"):
            continue
        if name in ("print", "sys.exit", "exit", "os._exit", "sys.stdout.write", "sys.stderr.write"):
            offenders.append(f"{path.relative_to(PACKAGE)}:{line} {name}")
    assert offenders == []


def test_no_module_is_over_the_size_limit() -> None:
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text(encoding="utf-8").splitlines()) for p in _modules()}
    assert len(sizes) > 40
    assert {name: lines for name, lines in sizes.items() if lines > MAX_LINES} == {}


def test_the_public_names_are_listed_once_for_runtime_and_once_for_types() -> None:
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    typed = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.asname == alias.name
    }
    assert typed == set(batchrun.__all__) - {"__version__"}
    for name in batchrun.__all__:
        assert getattr(batchrun, name) is not None


def test_every_stop_reason_has_its_exit_code() -> None:
    assert set(_STOP_CODES) == set(StopReason)


_IMPORT_OF_A_TEST = re.compile(r"^[ \t]*from[ \t]+[\w.]*\btest_", re.MULTILINE)


def test_test_modules_do_not_import_each_other() -> None:
    # Shared helpers live in conftest.py or a helper module (hostile.py, bound_server.py), so a
    # test module can change without breaking another (issue 15).
    here = Path(__file__).parent
    offenders = []
    for path in sorted(here.glob("test_*.py")):
        text = path.read_text(encoding="utf-8")
        if not _IMPORT_OF_A_TEST.search(text):  # parsed only where a line could be one: a second saved
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1].startswith("test_"):
                offenders.append(f"{path.name}:{node.lineno} imports {node.module}")
    assert offenders == []


def test_validate_loads_no_http_client_nor_event_loop() -> None:
    # `validate` (and a CLI start) imported aiohttp and httpx through a type-only import
    # (_reconcile -> _charges -> _client): its start-up went from 0.22 s to 0.51 s unseen.
    code = (
        "import sys; from batchrun.cli import main; "
        f"code = main(['validate', {str(PACKAGE.parent / 'jobs' / 'eval.yaml')!r}, '--quiet']); "
        "print(code, sorted(m for m in ('aiohttp', 'httpx', 'asyncio') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.stdout.split("\n")[-2] == "0 []", result.stdout + result.stderr


def test_commands_run_their_loop_through_one_function() -> None:
    # The commands' loop is uvloop's where installed (_event_loop): an `asyncio.run` left in a
    # command would run it on asyncio's, a fifth slower per request, and no other test would see.
    calls = [
        f"{path.relative_to(PACKAGE)}:{line}" for path, line, name in _calls() if name in ("asyncio.run", "uvloop.run")
    ]
    assert calls == []


def test_the_loop_is_uvloops_where_installed_and_asyncios_without(monkeypatch: pytest.MonkeyPatch) -> None:
    async def kind() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run_loop(kind()).startswith("uvloop")
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as where it does not build: the import fails
    assert run_loop(kind()).startswith("asyncio")


def test_the_package_says_it_is_typed() -> None:
    # break50 F3: without the PEP 561 marker a user's mypy read batchrun as untyped.
    assert (PACKAGE / "py.typed").is_file()


def test_the_repository_root_holds_only_the_projects_own_files() -> None:
    """A run's leftovers (a job, results, summaries) once got committed at the root by accident."""
    root = PACKAGE.parent
    if not (root / ".git").exists():
        pytest.skip("not a git checkout (a source archive): nothing committed to check")
    # Any owner's checkout: git refuses one owned by another user (a CI job as root on the
    # runner's workspace: "dubious ownership", out-147 F3) unless told it is safe.
    command = ["git", "-c", f"safe.directory={root}", "ls-files"]
    listed = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=60, check=True)
    top = {line.split("/", 1)[0] for line in listed.stdout.splitlines()}
    expected = {".ci", ".github", ".gitignore", "README.md", "pyproject.toml"}
    expected |= {"batchrun", "bench", "jobs", "outputs", "schemas", "tests"}
    assert top == expected


def test_the_shipped_workflow_is_the_readmes_recipe() -> None:
    """out-149 F2: the README says its sharded recipe is also in .github/workflows; a fix made to
    one (merge a night under its own name for `history`) did not reach the other."""
    root = PACKAGE.parent
    workflow = root / ".github" / "workflows" / "nightly-eval.yml"
    if not workflow.exists():
        pytest.skip("no .github folder (a source archive)")
    readme = (root / "README.md").read_text(encoding="utf-8")
    start = readme.index(
        "```yaml\n", readme.index("GitHub Actions, sharded (also in `.github/workflows/nightly-eval.yml`)")
    )
    recipe = readme[start + len("```yaml\n") : readme.index("```\n", start + len("```yaml\n"))]
    assert workflow.read_text(encoding="utf-8") == "name: nightly eval\n" + recipe
