"""The record every operator returns: the child's source (or None), who made it, what changed, and what it cost."""

from __future__ import annotations

from dataclasses import dataclass, field

from genome import Genome
from operators.usage import LLMUsage

VARIATION_STATUSES = ("ok", "invalid")
MAX_DESCRIPTION = 200  # the description column is for reading lineage at a glance


def one_line(text: str, limit: int = MAX_DESCRIPTION) -> str:
    """text folded onto one line and cut to limit characters (with an ellipsis when cut)."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 3].rstrip() + "..."


@dataclass(frozen=True)
class Variation:
    """What an operator made: status "ok" with the child source, or "invalid" with the reason and no source.

    description is one line in Ray Tune PBT's spirit ("LEARNING_RATE 3e-3 -> 4.1e-3 (x1.37)"); usage holds one
    record per LLM call the operator made (empty for the offline operators)."""

    operator: str
    status: str
    source: str | None = field(default=None, repr=False)
    description: str = ""
    reason: str = ""
    usage: tuple[LLMUsage, ...] = ()

    def __post_init__(self):
        if self.status not in VARIATION_STATUSES:
            raise ValueError(f"a variation's status is one of {VARIATION_STATUSES}; got {self.status!r}")
        if self.status == "ok" and not isinstance(self.source, str):
            raise ValueError(f"{self.operator}: an ok variation needs the child's source")
        if self.status == "invalid" and (self.source is not None or not self.reason):
            raise ValueError(f"{self.operator}: an invalid variation has no source and needs a reason")
        object.__setattr__(self, "description", one_line(self.description))
        object.__setattr__(self, "reason", one_line(self.reason, 500))
        object.__setattr__(self, "usage", tuple(self.usage))

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def cost_usd(self) -> float:
        """The estimated cost of the LLM calls behind this variation."""
        return sum(u.cost_usd for u in self.usage)

    @classmethod
    def child(cls, operator: str, source: str, description: str, usage=()) -> "Variation":
        return cls(operator, "ok", source=source, description=description, usage=tuple(usage))

    @classmethod
    def invalid(cls, operator: str, reason: str, usage=(), description: str = "") -> "Variation":
        return cls(operator, "invalid", reason=reason, description=description, usage=tuple(usage))

    def genome(self, *parents: Genome) -> Genome | None:
        """The child as a Genome with the given parents (None for an invalid variation)."""
        if not self.ok:
            return None
        return Genome(self.source, tuple(p.id for p in parents), self.operator, self.description)
