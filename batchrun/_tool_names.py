"""A `tool_call` check against the functions its prompt offers: one naming a function that no
tool of the prompt declares can only fail (out-139 F9: `get weather`, or a name the tools do not
have, validated ok and failed every row)."""

from __future__ import annotations

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


def tool_call_problems(source: JobSource) -> list[Problem]:
    """Each prompt's own `tool_call` checks naming a function none of its tools declares (by
    default, by a model or by the prompt); a templated name, or one under `not`, is left be."""
    data: dict[str, Any] = source.data
    sources = [data.get("defaults", {}).get("params")]
    sources += [m.get("params") for m in data["models"] if isinstance(m, dict)]
    problems = []
    for i, prompt in enumerate(data["prompts"]):
        found = [_declared(params) for params in [*sources, prompt.get("params")]]
        if any(names is None for names in found):
            continue
        declared = set().union(*(names for names in found if names is not None))
        for j, check in enumerate(prompt.get("checks", [])):
            call = check.get("tool_call") if isinstance(check, dict) and not check.get("not") else None
            name = call if isinstance(call, str) else call.get("name") if isinstance(call, dict) else None
            if isinstance(name, str) and name and "{{" not in name and name not in declared:
                offered = ", ".join(sorted(declared)) or "none"
                why = f"names function {name!r}, which no tool of this prompt declares ({offered}): it could only fail"
                problems.append(source.problem(("prompts", i, "checks", j, "tool_call"), why))
    return problems
