"""What an operator is told besides its parents and its generator.

OperatorContext is the one object a caller hands the registry: the LLM client, the LLM context and the parents'
common ancestor. Each operator declares at registration which of them it needs, and is given only those.
LLMContext and its records say what the LLM operators are told besides the parents' sources: program.md, how each
parent came to be, and what the population has tried lately. Plain records; the engine fills them from the store."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from genome import Genome

if TYPE_CHECKING:
    from operators.llm_client import LLMClient


def _check_bpb(name: str, value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number or None; got {value!r}")


@dataclass(frozen=True)
class Step:
    """One change on the way to a parent: its description, the operator that made it, the val_bpb of the
    individual it produced, the change in val_bpb against its own parent (negative is better), and optionally
    the change itself as a unified diff (the prompt shows the diffs of the last few steps)."""

    description: str
    operator: str = ""
    val_bpb: float | None = None
    delta_bpb: float | None = None
    diff: str = ""

    def __post_init__(self):
        _check_bpb("val_bpb", self.val_bpb)
        _check_bpb("delta_bpb", self.delta_bpb)


@dataclass(frozen=True)
class Attempt:
    """A child the population tried lately: what it changed, what became of it (status: "kept", "discarded",
    "invalid", "rejected", "crash", "timeout", ...), its val_bpb change against its parent, and why it failed."""

    description: str
    status: str
    operator: str = ""
    delta_bpb: float | None = None
    reason: str = ""

    def __post_init__(self):
        if not self.status:
            raise ValueError("an attempt needs a status (kept, discarded, invalid, rejected, crash, ...)")
        _check_bpb("delta_bpb", self.delta_bpb)


@dataclass(frozen=True)
class Lineage:
    """A parent's fitness (mean val_bpb, None if not evaluated yet) and its ancestry, oldest step first."""

    val_bpb: float | None = None
    steps: tuple[Step, ...] = ()

    def __post_init__(self):
        _check_bpb("val_bpb", self.val_bpb)
        object.__setattr__(self, "steps", tuple(self.steps))


@dataclass(frozen=True)
class LLMContext:
    """Everything an LLM operator is told besides the sources.

    program: the text of program.md; parent: the (first) parent's lineage; other: the second parent's, for a
    crossover; recent: the population's recent attempts, oldest first; noise_bpb: the measured seed-to-seed
    standard deviation of val_bpb, so the model can tell a real gain from noise; bounds: the run's --bounds as
    (name, low, high), so the model does not spend a call on a child the run will reject."""

    program: str = ""
    parent: Lineage = Lineage()
    other: Lineage | None = None
    recent: tuple[Attempt, ...] = ()
    noise_bpb: float | None = None
    bounds: tuple[tuple[str, float, float], ...] = ()

    def __post_init__(self):
        if not isinstance(self.program, str):
            raise TypeError("program must be the text of program.md")
        object.__setattr__(self, "recent", tuple(self.recent))
        _check_bpb("noise_bpb", self.noise_bpb)
        bounds = tuple((str(name), float(low), float(high)) for name, low, high in self.bounds)
        for name, low, high in bounds:
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise ValueError(f"bounds for {name} must be finite with low <= high; got {low!r}, {high!r}")
        object.__setattr__(self, "bounds", bounds)


@dataclass(frozen=True)
class OperatorContext:
    """Everything a caller can give an operator besides its parents and its random.Random; the operator's spec
    hands it only the fields it declared as needs, under their own names.

    client: the LLM client (None: no LLM here); context: what the LLM operators are told; ancestor: the parents'
    lowest common ancestor, for a two-parent operator (None when they share none)."""

    client: LLMClient | None = None
    context: LLMContext = LLMContext()
    ancestor: Genome | None = None

    def __post_init__(self):
        if not isinstance(self.context, LLMContext):
            raise TypeError(f"an operator's context is an LLMContext; got {type(self.context).__name__}")
        if self.ancestor is not None and not isinstance(self.ancestor, Genome):
            raise TypeError(f"an operator's ancestor is a Genome or None; got {type(self.ancestor).__name__}")
