"""The operator registry, after DEAP's toolbox: plain module-level functions registered under stable names, with
their arity and settings bound at registration, so they pickle and their names can be stored.

    hyper.mutate     1 parent    offline    operators.hyper.mutate
    hyper.crossover  2 parents   offline    operators.hyper.crossover
    merge.crossover  2 parents   offline    operators.merge.crossover
    llm.mutate       1 parent    LLM        operators.llm.mutate
    llm.crossover    2 parents   LLM        operators.llm.crossover

A family name (`hyper`) stands for all its members. `--operators hyper=3,llm=1` gives each family a share of the
children; a family's weight is split evenly among its members, and a member named on its own (`hyper.mutate=2`)
gets exactly its own weight.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from genome import Genome
from operators import hyper, llm, merge
from operators.errors import OperatorConfigError
from operators.variation import Variation


@dataclass(frozen=True)
class OperatorSpec:
    """A registered operator: its name ("family.verb"), function, number of parents, whether it needs the LLM
    client, and the settings bound at registration."""

    name: str
    function: Callable[..., Variation]
    arity: int
    needs_llm: bool = False
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.name.count(".") != 1 or not all(self.name.split(".")):
            raise ValueError(f"an operator's name is 'family.verb'; got {self.name!r}")
        if self.arity not in (1, 2):
            raise ValueError(f"{self.name}: an operator takes 1 or 2 parents; got {self.arity}")
        object.__setattr__(self, "settings", dict(self.settings))

    @property
    def family(self) -> str:
        return self.name.split(".")[0]

    def __call__(self, parents: Sequence[Genome], rng: random.Random, **settings) -> Variation:
        """Runs the operator on parents (arity of them); call-time settings override the bound ones."""
        if len(parents) != self.arity:
            raise ValueError(f"{self.name} takes {self.arity} parent(s); got {len(parents)}")
        return self.function(*parents, rng, **{**self.settings, **settings})


class Registry:
    """Named operators (DEAP's toolbox, typed)."""

    def __init__(self):
        self._ops: dict[str, OperatorSpec] = {}

    def register(self, name: str, function: Callable[..., Variation], *, arity: int, needs_llm: bool = False,
                 **settings) -> None:
        """Registers function under name, binding settings (later registrations of a name replace earlier ones)."""
        self._ops[name] = OperatorSpec(name, function, arity, needs_llm, settings)

    def get(self, name: str) -> OperatorSpec:
        """The operator called name; OperatorConfigError listing the known names when there is none."""
        try:
            return self._ops[name]
        except KeyError:
            raise OperatorConfigError(f"unknown operator {name!r}; known: {', '.join(self.known())}") from None

    def names(self) -> list[str]:
        return list(self._ops)

    def families(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for spec in self._ops.values():
            out.setdefault(spec.family, []).append(spec.name)
        return out

    def known(self) -> list[str]:
        """Every name --operators accepts: each family followed by its members."""
        return [n for family, members in self.families().items() for n in (family, *members)]

    def parse_weights(self, spec: str) -> dict[str, float]:
        """{operator name: weight} from "hyper=3,llm=1" or "hyper,merge,llm" (weight 1 when omitted). Zero weights
        are dropped. Raises OperatorConfigError, in one line, for an unknown name, a bad weight or nothing left."""
        families = self.families()
        items = [item.strip() for item in spec.split(",") if item.strip()]
        if not items:
            raise OperatorConfigError(f"--operators names no operator; known: {', '.join(self.known())}")
        explicit: dict[str, float] = {}
        shared: dict[str, float] = {}
        seen: set[str] = set()
        for item in items:
            name, has_weight, raw = (part.strip() for part in item.partition("="))
            if name not in families and name not in self._ops:
                raise OperatorConfigError(f"unknown operator {name!r} in --operators; known: {', '.join(self.known())}")
            if name in seen:
                raise OperatorConfigError(f"--operators names {name!r} twice")
            seen.add(name)
            try:
                weight = float(raw) if has_weight else 1.0
            except ValueError:
                raise OperatorConfigError(f"--operators: the weight of {name} must be a number; got {raw!r}") from None
            if not (math.isfinite(weight) and weight >= 0):
                raise OperatorConfigError(f"--operators: the weight of {name} must be >= 0; got {raw}")
            if name in families:
                for member in families[name]:
                    shared[member] = weight / len(families[name])
            else:
                explicit[name] = weight
        weights = {n: explicit.get(n, shared.get(n, 0.0)) for n in self._ops}
        weights = {n: w for n, w in weights.items() if w > 0}
        if not weights:
            raise OperatorConfigError("--operators gives every operator weight 0; at least one needs a positive weight")
        return weights

    def offline(self, weights: Mapping[str, float]) -> dict[str, float]:
        """weights without the operators that need the LLM; every offline operator at weight 1 if none is left,
        so the offline operators carry a run that asked only for LLM ones."""
        kept = {n: w for n, w in weights.items() if not self.get(n).needs_llm}
        return kept or {n: 1.0 for n, spec in self._ops.items() if not spec.needs_llm}

    def pick(self, weights: Mapping[str, float], rng: random.Random) -> OperatorSpec:
        """One operator drawn with probability proportional to its weight."""
        names = list(weights)
        return self.get(rng.choices(names, weights=[weights[n] for n in names], k=1)[0])


def default_registry() -> Registry:
    """The five built-in operators with their default settings."""
    registry = Registry()
    registry.register("hyper.mutate", hyper.mutate, arity=1)
    registry.register("hyper.crossover", hyper.crossover, arity=2)
    registry.register("merge.crossover", merge.crossover, arity=2)
    registry.register("llm.mutate", llm.mutate, arity=1, needs_llm=True)
    registry.register("llm.crossover", llm.crossover, arity=2, needs_llm=True)
    return registry


REGISTRY = default_registry()


def get(name: str) -> OperatorSpec:
    """The built-in operator called name."""
    return REGISTRY.get(name)


def parse_weights(spec: str) -> dict[str, float]:
    """Registry.parse_weights on the built-in registry."""
    return REGISTRY.parse_weights(spec)
