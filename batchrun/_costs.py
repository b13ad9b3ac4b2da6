"""Worst-case cost of a request, from the endpoint's price list.

Prompt tokens are estimated at one token per 2 characters plus 8 per message. Real
tokenizers average about 4 characters per token on English text, so the estimate is
conservative by about 2x; the completion is costed at `max_tokens` (or, when unset, the
model's maximum completion tokens, which is what OpenRouter reserves).
"""

from __future__ import annotations

import math

from ._client import ModelInfo
from ._matrix import Request


def estimated_prompt_tokens(request: Request) -> int:
    return math.ceil(request.prompt_chars / 2) + 8 * len(request.body["messages"])


class CostModel:
    def __init__(self, models: dict[str, ModelInfo] | None, cost_margin: float = 0.0) -> None:
        self.models = models
        self.cost_margin = cost_margin

    def completion_cap(self, request: Request) -> int | None:
        # max_completion_tokens is the spec's name; max_tokens the deprecated one (parameters.mdx).
        max_tokens = request.body.get("max_completion_tokens") or request.body.get("max_tokens")
        if max_tokens:
            return int(max_tokens)
        info = self.models.get(request.model) if self.models else None
        if info is None:
            return None
        return info.max_completion_tokens or info.context_length

    def worst_case(self, request: Request, token_factor: float = 1.0) -> float | None:
        """USD at worst, margin included; None when a price involved is unknown.

        `token_factor` scales the per-token prices only: 0.5 for the Batch API, which bills
        "typically 50% of the model's standard per-token pricing" while non-token components
        are not uniformly discounted (batch-quickstart.mdx, Pricing), so they stay at full price.
        """
        if self.models is None:
            return None
        worst = 0.0
        # With a fallback list, any of the models may answer: cost the dearest.
        for model in [request.model, *request.body.get("models", [])]:
            info = self.models.get(model)
            if info is None or not info.price_known:
                return None
            assert info.prompt_price is not None and info.completion_price is not None
            completion = self.completion_cap(request) or 0
            worst = max(
                worst,
                token_factor
                * (estimated_prompt_tokens(request) * info.prompt_price + completion * info.completion_price)
                + info.request_price,
            )
        return worst * (1 + self.cost_margin)
