"""Reasoning tokens and web search, billed the way the docs describe them.

- Reasoning (guides/best-practices/reasoning-tokens.mdx): a model's `/models` entry may carry a
  `reasoning` object (`mandatory`, `default_enabled`, `default_effort`, `supported_efforts`);
  a request turns reasoning on with `reasoning` (`effort`, `max_tokens`, `enabled`, `exclude`)
  or `reasoning_effort`, or by the `:thinking` variant. Its budget is "`reasoning.max_tokens`
  ... used directly with a minimum of 1024 tokens", or for an effort
  `max(min(max_tokens * ratio, 128000), 1024)`; "Reasoning tokens are counted as output tokens
  for billing purposes". The simulator reasons `reasoning_share` of that budget (1.0: all of
  it, the most the docs allow), and bills it as completion tokens.
- Web search (plugins/web-search.mdx, server-tools/web-search.mdx): the `web` plugin and the
  `:online` variant search once; the `openrouter:web_search` server tool, and the OpenAI-style
  `web_search*` tool types it is converted from, let the model search `web_search_calls`
  times. Each search returns `max_results` (default 5) results, read as prompt tokens
  (`web_result_tokens` each), and costs Exa's default $0.007, plus $0.001 a result past 10.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._config import SimConfig

EFFORT_RATIOS = {"max": 0.95, "xhigh": 0.95, "high": 0.8, "medium": 0.5, "low": 0.2, "minimal": 0.1}
REASONING_MIN, REASONING_MAX = 1024, 128_000
SEARCH_USD, EXTRA_RESULT_USD, INCLUDED_RESULTS = 0.007, 0.001, 10
DEFAULT_RESULTS = 5


@dataclass(frozen=True)
class Extras:
    """What a request adds to its answer's bill beyond the visible text."""

    reasoning_tokens: int = 0  # billed as completion tokens
    searches: int = 0
    search_tokens: int = 0  # the results, read as prompt tokens
    search_usd: float = 0.0

    def reasoning_within(self, answer_tokens: int, max_tokens: int) -> int:
        """The reasoning tokens billed beside an answer of `answer_tokens`: together within
        max(max_tokens, the reasoning budget), the docs' budget being "within max_tokens" except
        where its 1024 floor lifts it (the reading batchrun's worst case takes, _costs)."""
        return max(0, min(self.reasoning_tokens, max(max_tokens, self.reasoning_tokens) - answer_tokens))

    def usage(self, reasoning_tokens: int) -> dict[str, Any]:
        """The usage fields that say so (OpenAPI ChatUsage)."""
        out: dict[str, Any] = {}
        if reasoning_tokens:
            out["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
        if self.searches:
            out["server_tool_use_details"] = {
                "tool_calls_requested": self.searches,
                "tool_calls_executed": self.searches,
                "web_search_requests": self.searches,
            }
        return out


def extras(config: SimConfig, model: str, canonical: str, body: dict[str, Any], max_tokens: int) -> Extras:
    searches, results = _searches(config, model, body)
    return Extras(
        reasoning_tokens=round(_reasoning_budget(config, model, canonical, body, max_tokens) * config.reasoning_share),
        searches=searches,
        search_tokens=searches * results * config.web_result_tokens,
        search_usd=searches * (SEARCH_USD + EXTRA_RESULT_USD * max(0, results - INCLUDED_RESULTS)),
    )


def _reasoning_budget(config: SimConfig, model: str, canonical: str, body: dict[str, Any], max_tokens: int) -> int:
    """The reasoning tokens the request allows; 0 when the model does not reason for it."""
    listed = config.reasoning.get(canonical)
    asked: dict[str, Any] = body["reasoning"] if isinstance(body.get("reasoning"), dict) else {}
    effort = asked.get("effort") or body.get("reasoning_effort")
    budget = asked.get("max_tokens")
    if listed is None and not model.endswith(":thinking"):
        return 0  # not a reasoning model: reasoning parameters are ignored
    off = asked.get("enabled") is False or effort == "none"
    on = bool(budget) or effort not in (None, "none") or asked.get("enabled") is True or asked.get("exclude") is True
    mandatory = listed is not None and listed.get("mandatory") is True
    default_on = listed is not None and listed.get("default_enabled") is True
    if not (mandatory or model.endswith(":thinking") or on or (default_on and not off)):
        return 0
    if isinstance(budget, int) and budget > 0:
        return max(budget, REASONING_MIN)
    if effort in (None, "none"):
        effort = (listed or {}).get("default_effort") or "medium"
    ratio = EFFORT_RATIOS.get(str(effort), EFFORT_RATIOS["medium"])
    return max(min(int(max_tokens * ratio), REASONING_MAX), REASONING_MIN)


def _searches(config: SimConfig, model: str, body: dict[str, Any]) -> tuple[int, int]:
    """(searches, results per search) the request's web search runs."""
    plugins = [p for p in body.get("plugins") or [] if isinstance(p, dict) and p.get("id") == "web"]
    if plugins or model.endswith(":online"):
        results = plugins[0].get("max_results") if plugins else None
        return 1, results if isinstance(results, int) and results > 0 else DEFAULT_RESULTS
    for tool in body.get("tools") or []:
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str) and (kind == "openrouter:web_search" or kind.startswith("web_search")):
            settings = tool.get("parameters") or tool.get(kind) or {}
            settings = settings if isinstance(settings, dict) else {}
            results, uses = settings.get("max_results"), settings.get("max_uses")
            calls = (
                min(config.web_search_calls, uses) if isinstance(uses, int) and uses > 0 else config.web_search_calls
            )
            return calls, results if isinstance(results, int) and results > 0 else DEFAULT_RESULTS
    return 0, 0
