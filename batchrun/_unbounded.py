"""Requests whose charge is not bounded by what they send (break-14b C2, C3, C8).

The worst case bounds the prompt by the bytes of the body (_costs). That holds for what is
in the body, not for what OpenRouter fetches or generates on the request's behalf, so
such a request's worst case is unknown (refused under a limit unless
`run.allow_unknown_prices`, like an unknown price):

- an image given by URL: its tokens depend on the image, and the docs give no count per
  image (multimodal/image-understanding.mdx; overview.mdx: images are "typically priced per
  image or as input tokens");
- a file, by URL, `file_id` or inline: a file given by URL or `file_id` is not in the body
  (pdfs.mdx: "PDFs can be sent as direct URLs"), and an inline one is not bounded by its bytes
  either: a PDF's text is compressed (a 4.7 KB PDF held a megabyte of text: break14c N17),
  the free `cloudflare-ai` engine "converts PDFs to markdown" for the model to read,
  `native` is "charged as input tokens" per page, and mistral-ocr bills per page, even for
  BYOK (pdfs.mdx, "Pricing");
- audio, inline (`input_audio`) or by URL (`audio_url`): "priced as input tokens based on
  duration" (multimodal/overview.mdx), and the docs give no tokens per second. Its bytes do not
  bound its duration: FLAC codes digital silence in ~13 bytes per 8 s, so 6 KB decodes to an
  hour (break14e E13: 115,200 tokens billed for a part reserved as 6 KB). Not even a WAV's:
  its header sets the sample rate, so a few KB at a low rate is minutes, and with no documented
  rate per second no duration read from a header would give a bound either;
- web search (the `web` plugin, a `:online` model, `web_search_options`): its results are
  added to the prompt in a size the docs do not bound (plugins/web-search.mdx: fees per
  engine and per result, "in addition to the LLM usage for the search result prompt
  tokens"; native search is the provider's price);
- a plugin other than the file-parser, response healing, context compression and the Pareto
  router's setting: fusion runs a panel of up to 8 models with web search
  (plugins/fusion.mdx), and a plugin added later is not known to be bounded;
- server tools: `openrouter:*` tools run an agent loop of up to `max_tool_calls` (30) steps,
  each billed with a prompt grown by tool results of no documented size, and some run other
  models (features/server-tools.mdx, "Tool Call Limits"); the OpenAI-style `web_search*`
  tool types are "automatically converted to openrouter:web_search" (openapi.yaml,
  ChatWebSearchShorthand: break14c N20). Any tool type but `function` (and `custom`, also
  run by the caller) is taken for one.

Inline (`data:`) images are bytes of the body and bounded by them and by their per-image
token ceiling (_image_tokens). A plugin
enabled in the account's settings applies to every request without showing in it
(plugins.mdx); batchrun cannot see that.
"""

from __future__ import annotations

from typing import Any

_CALLER_TOOLS = ("function", "custom")  # tools the caller runs: the model only writes their calls
_AUDIO = (
    "an audio part: it is billed by its duration, which its bytes do not bound (6 KB of FLAC is an "
    "hour), at a rate the docs do not give"
)
_WEB = "web search: its results are added to the prompt in a size the docs do not bound"
# Plugins that add no charge of their own beyond the request's tokens (plugins.mdx): the
# file-parser (every file part is unbounded on its own), response healing, context
# compression (it only removes prompt), and the Pareto router's setting (its router model
# has no price: unknown anyway). Any other plugin, such as fusion (a panel of up to 8 models
# with web search: plugins/fusion.mdx) or one added after this was written, is unbounded.
_BOUNDED_PLUGINS = ("file-parser", "response-healing", "context-compression", "pareto-router")


def _inline(value: Any) -> bool:
    return isinstance(value, str) and value[:5].lower() == "data:"


def _part_reason(part: Any) -> str | None:
    if not isinstance(part, dict):
        return None
    kind = part.get("type")
    if kind == "image_url":
        image = part.get("image_url")
        if not _inline(image.get("url") if isinstance(image, dict) else image):
            return "an image given by URL: its tokens are not bounded by the bytes sent"
    elif kind == "file":
        file = part.get("file")
        data = file.get("file_data") if isinstance(file, dict) else None
        if not _inline(data):
            return "a file given by URL or file_id: its tokens are not bounded by the bytes sent"
        return (
            "a file: its text and pages are not bounded by its bytes (a PDF's text is compressed; "
            "pages are billed as tokens or per page: pdfs.mdx)"
        )
    elif kind in ("video_url", "input_video"):
        return "a video: its tokens follow its duration, not its bytes"
    elif kind in ("input_audio", "audio_url"):
        return _AUDIO
    return None


def _plugins(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    plugins = body.get("plugins")
    return {
        str(p.get("id")): p
        for p in (plugins if isinstance(plugins, list) else [])
        if isinstance(p, dict) and p.get("enabled") is not False
    }


def searches_by_itself(model: str) -> bool:
    """A model that searches the web on every request, asked or not: "native-only models like
    Perplexity and OpenAI Online" (plugins/web-search.mdx), billed their listing's `web_search`
    price and the results' prompt tokens (out-104 F1: priced at its tokens alone, a run spent 38%
    past its budget). Told by the names OpenRouter gives them: Perplexity's Sonar models, and
    OpenAI's `*search*` and `*deep-research*` ones (gpt-4o-search-preview, o3-deep-research);
    not Perplexity's offline r1-1776 nor another author's "deepresearch" (out-105 F2)."""
    author, _, slug = model.removeprefix("~").partition("/")  # `~openai/...`: an alias (out-106 F3)
    if author == "perplexity":
        return "sonar" in slug  # llama-3.1-sonar-*-online too
    return slug.endswith("-online") or (author == "openai" and ("search" in slug or "deep-research" in slug))


def unbounded_input(body: dict[str, Any], model: str) -> str | None:
    """Why the charge of this request is not bounded by its body, or None when it is."""
    # On every request's path: a text-only body without plugins or tools returns at once.
    plugins = _plugins(body) if "plugins" in body else {}
    # web_search_options at all: an empty one turns search on too (verify47 N3: {} was priced as none).
    if "web" in plugins or "web_search_options" in body or model.endswith(":online") or searches_by_itself(model):
        return _WEB
    other = next((name for name in plugins if name not in _BOUNDED_PLUGINS), None)
    if other is not None:
        return f"plugin {other[:60]}: it runs more than the request's tokens, and the docs give no bound"
    fallbacks = body.get("models")
    if isinstance(fallbacks, list) and any(
        isinstance(m, str) and (m.endswith(":online") or searches_by_itself(m)) for m in fallbacks
    ):
        return _WEB
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind not in _CALLER_TOOLS:
            name = kind[:60] if isinstance(kind, str) else "of no known type"
            return f"server tool {name}: up to 30 steps, each with a prompt grown by its results"
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for part in content:
                why = _part_reason(part)
                if why:
                    return why
    return None
