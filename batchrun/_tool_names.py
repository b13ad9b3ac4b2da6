"""Tools as a job names them: a `tool_call` check against the functions its prompt offers (one
naming a function that no tool of the prompt declares can only fail: out-139 F9, `get weather`,
or a name the tools do not have, validated ok and failed every row), and a tool type one typo
away from a server tool OpenRouter documents."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._exceptions import Problem
from ._job_source import JobSource


def _declared(params: Any) -> set[str] | None:
    """The function names `params.tools` declares; None when a tool is not a plain function
    (a server tool's calls are the server's to name)."""
    tools = params.get("tools") if isinstance(params, dict) else None
    names: set[str] = set()
    for tool in tools if isinstance(tools, list) else ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if not (isinstance(tool, dict) and tool.get("type") == "function" and isinstance(function, dict)):
            return None
        if isinstance(function.get("name"), str):
            names.add(function["name"])
    return names


def _named(check: Any) -> str | None:
    """The function a `tool_call` check names, when it is plain text (not templated)."""
    call = check.get("tool_call") if isinstance(check, dict) else None
    name = call if isinstance(call, str) else call.get("name") if isinstance(call, dict) else None
    return name if isinstance(name, str) and name and "{{" not in name else None


def _sent(*params: Any) -> Any:
    """The params whose `tools` are sent: the prompt's over a model's over the defaults' (a
    prompt's own `tools` replaces theirs, as every param does)."""
    return next((p for p in params if isinstance(p, dict) and "tools" in p), None)


def _offered(data: dict[str, Any], prompt: Any) -> list[tuple[str, set[str] | None]]:
    """Per model, the function names the tools sent with `prompt` declare (None: not all plain functions)."""
    defaults = data.get("defaults", {})
    return [
        (
            m if isinstance(m, str) else m.get("id"),
            _declared(
                _sent(prompt.get("params"), m.get("params") if isinstance(m, dict) else None, defaults.get("params"))
            ),
        )
        for m in data["models"]
    ]


def _in_job(data: dict[str, Any]) -> set[str]:
    """Every function name the tools the job sends declare, to any model with any prompt (not
    the defaults' that every prompt's own tools replace: never sent, out-146)."""
    return {name for prompt in data["prompts"] for _, declared in _offered(data, prompt) for name in declared or ()}


def _undeclared(check: Any, offered: list[tuple[str, set[str] | None]], whose: str, in_job: set[str]) -> str | None:
    """Why a `tool_call` check could only fail, said for the first model whose rows it would
    fail (the others would repeat it); None when it can pass. Under `not`, a name that no tool
    of the job declares anywhere (out-144 F8c, `delete_files` for `delete_file`) could only
    pass; one declared for another prompt or model is a guard kept on purpose."""
    name = _named(check)
    if name is not None and check.get("not"):
        if name in in_job or any(declared is None for _, declared in offered):
            return None
        listed = ", ".join(sorted(in_job)) or "none"
        return f"names function {name!r}, which no tool of this job declares ({listed}): under not, it could only pass"
    for model, declared in offered if name is not None else ():
        if declared is not None and name not in declared:
            listed = ", ".join(sorted(declared)) or "none"
            why = f"names function {name!r}, which no tool {whose} sends to {model} declares ({listed})"
            return f"{why}: it could only fail"
    return None


def tool_call_problems(source: JobSource) -> list[Problem]:
    """Each `tool_call` check of a prompt, its own or by default, naming a function that the
    tools sent with it to some model do not declare: on that model's rows it could only fail."""
    data: dict[str, Any] = source.data
    problems, in_job = [], _in_job(data)
    for i, prompt in enumerate(data["prompts"]):
        checks: list[tuple[tuple[str | int, ...], Any]]
        checks = [(("prompts", i, "checks", j), check) for j, check in enumerate(prompt.get("checks", []))]
        checks += [(("defaults", "checks", j), c) for j, c in enumerate(data.get("defaults", {}).get("checks", []))]
        offered = _offered(data, prompt)
        for where, check in checks:
            whose = "this prompt" if where[0] == "prompts" else f"prompt {prompt.get('id')!r}"
            if (why := _undeclared(check, offered, whose, in_job)) is not None:
                problems.append(source.problem((*where, "tool_call"), why))
    return problems


def row_tool_call_problem(data: dict[str, Any], prompt: Any) -> Callable[[Any], str | None]:
    """What is wrong with a `tool_call` check a row of `prompt` carries in its own `checks`
    (a dataset's row): the same as with the prompt's."""
    offered, in_job = _offered(data, prompt), _in_job(data)
    return lambda check: _undeclared(check, offered, f"prompt {prompt.get('id')!r}", in_job)


# The chat API's tool types beside `function` (openapi.yaml, ChatFunctionTool's anyOf and
# ChatWebSearchShorthand's enum). Others are let through, as OpenRouter adds server tools; a
# near miss of one of these is a typo that would be a 400 on every row (`openrouter:websearch`).
SERVER_TOOLS = (
    "openrouter:advisor",
    "openrouter:bash",
    "openrouter:datetime",
    "openrouter:experimental__search_models",
    "openrouter:files",
    "openrouter:fusion",
    "openrouter:image_generation",
    "openrouter:subagent",
    "openrouter:web_fetch",
    "openrouter:web_search",
    "web_search",
    "web_search_preview",
    "web_search_preview_2025_03_11",
    "web_search_2025_08_26",
)
# Server tools the docs name for OpenRouter's other APIs (Responses, Messages): never a typo.
OTHER_TOOLS = frozenset(
    ("openrouter:apply_patch", "openrouter:browser_use", "openrouter:code_interpreter", "openrouter:file_search")
    + ("openrouter:mcp", "openrouter:memory", "openrouter:shell", "openrouter:text_editor", "openrouter:tool_search")
)


def _near_miss(kind: str) -> str | None:
    """The documented tool `kind` is one edit from (a letter added, dropped, changed, or two
    swapped), compared past the shared `openrouter:`. A similarity ratio let short typos
    through (`openrouter:fusiom`) and refused longer new names (`openrouter:web_search_v2`)."""
    if kind in SERVER_TOOLS or kind in OTHER_TOOLS:
        return None
    # Here, not at the top: only a type the docs do not name needs it, and every command that
    # loads a job would import it (6-17 ms of start-up).
    from rapidfuzz.distance import OSA

    prefix = "openrouter:" if kind.startswith("openrouter:") else ""
    # The other APIs' too: `openrouter:shel` is as sure a typo as `openrouter:bsah` (out-145 leftover).
    known = SERVER_TOOLS + tuple(sorted(OTHER_TOOLS))
    names = [tool.removeprefix(prefix) for tool in known if tool.startswith("openrouter:") == bool(prefix)]
    name = kind.removeprefix(prefix)
    # A short name is one letter from many words: of those, only its letters swapped (`bsah`) or
    # one dropped (`shel`) is a typo; `openrouter:hash`, `:spell` or `:map` may be tools of their
    # own (out-146 F9).
    near = [
        n
        for n in names
        if OSA.distance(name, n) <= 1 and (len(n) > 5 or sorted(n) == sorted(name) or len(name) < len(n))
    ]
    return prefix + near[0] if near else None


def tool_type_problems(source: JobSource) -> list[Problem]:
    """Each `params.tools` entry (defaults, models, prompts) whose type is not a documented
    server tool but nearly spells one."""
    data: dict[str, Any] = source.data
    places: list[tuple[tuple[str | int, ...], Any]] = [(("defaults", "params"), data.get("defaults", {}).get("params"))]
    places += [(("models", i, "params"), m.get("params")) for i, m in enumerate(data["models"]) if isinstance(m, dict)]
    places += [(("prompts", i, "params"), p.get("params")) for i, p in enumerate(data["prompts"])]
    places += [(("judge", "params"), (data.get("judge") or {}).get("params"))]
    problems = []
    for where, params in places:
        tools = params.get("tools") if isinstance(params, dict) else None
        for j, tool in enumerate(tools if isinstance(tools, list) else ()):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if isinstance(kind, str) and (near := _near_miss(kind)):
                why = f"{kind!r} is not a server tool OpenRouter documents: did you mean {near!r}?"
                problems.append(source.problem((*where, "tools", j, "type"), why))
    return problems


def tool_problems(source: JobSource) -> list[Problem]:
    return tool_call_problems(source) + tool_type_problems(source)
