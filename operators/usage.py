"""One record per LLM call (tokens, latency, estimated cost, status), and the price table behind the estimate."""

from __future__ import annotations

from dataclasses import dataclass

# USD per million tokens: (input, output, cache write (5 minutes), cache read), by model family, from Anthropic's
# published prices. An estimate for the spend cap and the llm_calls table, not a bill.
PRICES = {
    "opus": (5.00, 25.00, 6.25, 0.50),
    "sonnet": (3.00, 15.00, 3.75, 0.30),
    "haiku": (1.00, 5.00, 1.25, 0.10),
    "fable": (10.00, 50.00, 12.50, 1.00),
    "mythos": (10.00, 50.00, 12.50, 1.00),
}
DEFAULT_FAMILY = "sonnet"

CALL_STATUSES = ("ok", "timeout", "overloaded", "rate_limited", "server_error", "connection_error", "refused",
                 "error")


def model_family(model: str) -> str | None:
    """The price family a model name belongs to ("claude-sonnet-4-5" -> "sonnet"), or None."""
    lowered = model.lower()
    return next((family for family in PRICES if family in lowered), None)


def estimate_cost(model: str, input_tokens: int, output_tokens: int, cache_write_tokens: int = 0,
                  cache_read_tokens: int = 0) -> tuple[float, str]:
    """(estimated USD, note). input_tokens are the uncached ones, as the API reports them. A model outside the
    table is priced as the default family, and the note says so."""
    family = model_family(model)
    note = ""
    if family is None:
        family = DEFAULT_FAMILY
        note = f"unknown model {model!r}: cost estimated at {DEFAULT_FAMILY} prices"
    p_in, p_out, p_write, p_read = PRICES[family]
    cost = (input_tokens * p_in + output_tokens * p_out + cache_write_tokens * p_write
            + cache_read_tokens * p_read) / 1e6
    return cost, note


@dataclass(frozen=True)
class LLMUsage:
    """One call to the Messages API as the store's llm_calls table wants it. Tokens are what the server reported
    (zero for a failed call); latency includes the client's own retries; status is one of CALL_STATUSES."""

    operator: str
    model: str
    status: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    purpose: str = "propose"  # "propose" or "repair"
    error: str = ""
    note: str = ""

    def __post_init__(self):
        if self.status not in CALL_STATUSES:
            raise ValueError(f"an LLM call's status is one of {CALL_STATUSES}; got {self.status!r}")
        for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
        if self.latency_s < 0 or self.cost_usd < 0:
            raise ValueError("latency and cost must be >= 0")

    def as_row(self) -> dict:
        """The record as a plain dict, for the store."""
        return dict(self.__dict__)
