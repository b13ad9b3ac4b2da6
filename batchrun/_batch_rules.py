"""The Batch API's submission rules, as `batch-quickstart.mdx` states them (no network here).

- One `model` per batch: the batch-level model applies to every request.
- Text only: validation rejects image, audio, video or file parts, and requests asking for
  non-text output through `modalities`, `audio` or `image_config`.
- On Google models every request of a batch must ask for the same `response_format`
  (all omit it, all `json_object`, or all `json_schema` with the same schema): one batch per
  `response_format` and per schema.
- Size: the page documents no limit on `requests` (it is stream-parsed "so it can accept very
  large requests arrays"); `run.batch_max_requests` is batchrun's own cap, to keep one
  batch object (results are inline in one GET) a manageable size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import orjson

from ._matrix import Request


def is_google(model: str) -> bool:
    """The quickstart's "Google models"; by slug, since the page names no other test."""
    return model.startswith("google/")


def group_key(request: Request) -> tuple[str, str]:
    """Requests with the same key may share a batch."""
    if not is_google(request.model):
        return request.model, ""
    response_format = request.body.get("response_format")
    return request.model, orjson.dumps(response_format, option=orjson.OPT_SORT_KEYS).decode()


def batch_groups(requests: Iterable[Request], max_requests: int) -> Iterator[list[Request]]:
    """Requests grouped by model (and response_format on Google), split at `max_requests`,
    in order of first appearance."""
    groups: dict[tuple[str, str], list[Request]] = {}
    for request in requests:
        groups.setdefault(group_key(request), []).append(request)
    for members in groups.values():
        for start in range(0, len(members), max_requests):
            yield members[start : start + max_requests]
