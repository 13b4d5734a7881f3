"""What one evaluation's training may spend: one type from the flags to the batch server.

- seconds (the batch server's clock from the first batch) or tokens (deterministic): exactly one;
- checked here and nowhere else: a bad budget is a ConfigError of one line, naming the flag to change;
- built once by the config (RunConfig.budget, EvalConfig.budget, ReplayConfig.budget_of) and passed whole: the
  engine, the worker pool, the workers' Ray calls, the EvalRequest and the batch server's ServeSettings;
- prepare.py, which runs without evo, checks its own EVO_BUDGET_* variables the same way (exactly one, positive).
"""

from __future__ import annotations

from dataclasses import dataclass

from evo.errors import ConfigError


@dataclass(frozen=True)
class Budget:
    """A training budget: seconds (measured by the batch server) or tokens (deterministic)."""

    seconds: float | None = None
    tokens: int | None = None

    def __post_init__(self):
        if self.seconds is not None and self.tokens is not None:
            raise ConfigError("give --budget-seconds or --budget-tokens, not both")
        if self.seconds is None and self.tokens is None:
            raise ConfigError("give --budget-seconds or --budget-tokens (a training budget is needed)")
        if self.seconds is not None and not (_number(self.seconds) and self.seconds > 0):
            raise ConfigError(f"--budget-seconds must be positive; got {_show(self.seconds)}")
        if self.tokens is not None and not (_number(self.tokens) and self.tokens > 0):
            raise ConfigError(f"--budget-tokens must be positive; got {_show(self.tokens)}")

    def fields(self) -> dict:
        """The budget as the evaluation records and the channel's hello carry it."""
        return {"budget_seconds": self.seconds, "budget_tokens": self.tokens}

    def describe(self) -> str:
        return f"{self.seconds:g} s" if self.seconds is not None else f"{self.tokens:,} tokens"


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _show(value) -> str:
    return f"{value:g}" if _number(value) else repr(value)
