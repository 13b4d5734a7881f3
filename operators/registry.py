"""The operator registry, after DEAP's toolbox: plain module-level functions registered under stable names, so they
pickle and their names can be stored. What a caller needs to know of an operator is declared at registration:

    operator         parents  needs                       fallback      accepts  step
    hyper.mutate     1        -                           -             bounds   sigma
    hyper.sample     1        -                           -             bounds   -
    hyper.crossover  2        -                           hyper.mutate  bounds   -
    merge.crossover  2        ancestor                    hyper.mutate  -        -
    llm.mutate       1        client, context             -             -        -
    llm.crossover    2        client, context, ancestor   hyper.mutate  -        -

- needs (NEEDS): the OperatorContext fields the function is given, as keyword arguments, so a caller computes an
  ancestor or an LLM context only for an operator that asks for one; needing the client makes an LLM operator (it
  runs in a thread; it drops out without the LLM)
- fallback: the one-parent operator used when a two-parent one was picked and selection gave the same individual
  twice (a population of one)
- accepts (ACCEPTS): the run's settings the function takes when the run has them (bounds: the run's --bounds)
- step: the setting that sets its step size, which --adaptive-steps scales
- weights: a family name (`hyper`) stands for all its members; `--operators hyper=3,llm=1` gives each family a
  share of the children, split evenly among its members, and a member named on its own (`hyper.mutate=2`) gets
  exactly its own weight
"""

from __future__ import annotations

import inspect
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from genome import Genome
from operators import hyper, llm, merge
from operators.context import OperatorContext
from operators.errors import OperatorConfigError, OperatorUnavailable
from operators.variation import Variation

NEEDS = ("client", "context", "ancestor")   # the OperatorContext fields an operator may declare
ACCEPTS = ("bounds",)                       # the run's settings an operator may declare it takes


@dataclass(frozen=True)
class OperatorSpec:
    """A registered operator: its name ("family.verb"), function, number of parents, what it needs from the
    OperatorContext (names from NEEDS, each a keyword argument of the function), the one-parent operator it falls
    back to when its two parents are one individual, whether it only ever changes the values of the hyperparameter
    constants (not the code around them), the settings bound at registration, the run's settings it takes (names
    from ACCEPTS, each a keyword argument of the function) and the setting that sets its step size (a numeric
    keyword argument with a default or a bound value), if any."""

    name: str
    function: Callable[..., Variation]
    arity: int
    needs: tuple[str, ...] = ()
    fallback: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    constants_only: bool = False
    accepts: tuple[str, ...] = ()
    step: str | None = None

    def __post_init__(self):
        if self.name.count(".") != 1 or not all(self.name.split(".")):
            raise ValueError(f"an operator's name is 'family.verb'; got {self.name!r}")
        if self.arity not in (1, 2):
            raise ValueError(f"{self.name}: an operator takes 1 or 2 parents; got {self.arity}")
        needs = (self.needs,) if isinstance(self.needs, str) else tuple(self.needs)
        if unknown := [n for n in needs if n not in NEEDS]:
            raise ValueError(f"{self.name}: an operator needs some of {', '.join(NEEDS)}; got {', '.join(unknown)}")
        if "ancestor" in needs and self.arity != 2:
            raise ValueError(f"{self.name}: only a two-parent operator has a common ancestor to need")
        if self.fallback is not None and self.arity != 2:
            raise ValueError(f"{self.name}: only a two-parent operator falls back to a one-parent one")
        parameters = inspect.signature(self.function).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        if missing := [n for n in needs if n not in parameters and not takes_any]:
            raise ValueError(f"{self.name}: {self.function.__qualname__} takes no {', '.join(missing)} argument")
        if shared := [n for n in needs if n in self.settings]:
            raise ValueError(f"{self.name}: {', '.join(shared)} is a need, given by the caller, not a setting")
        accepts = (self.accepts,) if isinstance(self.accepts, str) else tuple(self.accepts)
        if unknown := [n for n in accepts if n not in ACCEPTS]:
            raise ValueError(f"{self.name}: an operator accepts some of {', '.join(ACCEPTS)}; "
                             f"got {', '.join(unknown)}")
        if missing := [n for n in accepts if n not in parameters and not takes_any]:
            raise ValueError(f"{self.name}: {self.function.__qualname__} takes no {', '.join(missing)} argument")
        if self.step is not None and not isinstance(self.settings.get(self.step, _default(parameters, self.step)),
                                                    (int, float)):
            raise ValueError(f"{self.name}: its step {self.step!r} must be a numeric argument with a default or a "
                             f"bound setting")
        object.__setattr__(self, "needs", tuple(n for n in NEEDS if n in needs))
        object.__setattr__(self, "accepts", tuple(n for n in ACCEPTS if n in accepts))
        object.__setattr__(self, "settings", dict(self.settings))

    @property
    def family(self) -> str:
        return self.name.split(".")[0]

    @property
    def needs_llm(self) -> bool:
        """Whether it calls the LLM (it needs the client): such an operator runs in a thread, and drops out when
        the LLM is not there."""
        return "client" in self.needs

    @property
    def base_step(self) -> float | None:
        """Its step size as registered (the bound setting, else the function's default); None without a step."""
        if self.step is None:
            return None
        return self.settings.get(self.step, _default(inspect.signature(self.function).parameters, self.step))

    def arguments(self, given: OperatorContext) -> dict[str, Any]:
        """The keyword arguments it gets from given: the fields it declared, under their own names."""
        return {need: getattr(given, need) for need in self.needs}

    def __call__(self, parents: Sequence[Genome], rng: random.Random, given: OperatorContext | None = None,
                 **settings) -> Variation:
        """Runs the operator on parents (arity of them), handing it what it needs from given; call-time keyword
        arguments override the bound settings and what given holds. Raises OperatorUnavailable for an LLM operator
        given no client."""
        if len(parents) != self.arity:
            raise ValueError(f"{self.name} takes {self.arity} parent(s); got {len(parents)}")
        arguments = {**self.settings, **self.arguments(given or OperatorContext()), **settings}
        if self.needs_llm and arguments["client"] is None:
            raise OperatorUnavailable(f"{self.name} needs an LLM client and was given none")
        return self.function(*parents, rng, **arguments)


class Registry:
    """Named operators (DEAP's toolbox, typed)."""

    def __init__(self):
        self._ops: dict[str, OperatorSpec] = {}

    def register(self, name: str, function: Callable[..., Variation], *, arity: int, needs: Sequence[str] = (),
                 fallback: str | None = None, constants_only: bool = False, accepts: Sequence[str] = (),
                 step: str | None = None, **settings) -> None:
        """Registers function under name with what it needs from the OperatorContext and, for a two-parent
        operator, the one-parent operator to fall back to (registered before it), binding settings; constants_only:
        it changes only the values of the hyperparameter constants; accepts: the run's settings it takes; step: the
        setting that sets its step size. A later registration of a name replaces the earlier one."""
        if fallback is not None:
            if fallback not in self._ops or self._ops[fallback].arity != 1:
                raise ValueError(f"{name}: its fallback must be a one-parent operator registered before it; "
                                 f"got {fallback!r}")
        self._ops[name] = OperatorSpec(name, function, arity, tuple(needs), fallback, settings, constants_only,
                                       tuple(accepts), step)

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
                raise OperatorConfigError(f"unknown operator {name!r} in --operators; "
                                          f"known: {', '.join(self.known())}")
            if name in seen:
                raise OperatorConfigError(f"--operators names {name!r} twice")
            seen.add(name)
            try:
                weight = float(raw) if has_weight else 1.0
            except ValueError:
                raise OperatorConfigError(f"--operators: the weight of {name} must be a number; got {raw!r}") \
                    from None
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
            raise OperatorConfigError("--operators gives every operator weight 0; at least one needs a positive "
                                      "weight")
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
    """The six built-in operators with their default settings."""
    registry = Registry()
    registry.register("hyper.mutate", hyper.mutate, arity=1, constants_only=True, accepts=("bounds",), step="sigma")
    registry.register("hyper.sample", hyper.sample, arity=1, constants_only=True, accepts=("bounds",))
    registry.register("hyper.crossover", hyper.crossover, arity=2, fallback="hyper.mutate", constants_only=True,
                      accepts=("bounds",))
    registry.register("merge.crossover", merge.crossover, arity=2, needs=("ancestor",), fallback="hyper.mutate")
    registry.register("llm.mutate", llm.mutate, arity=1, needs=("client", "context"))
    registry.register("llm.crossover", llm.crossover, arity=2, needs=("client", "context", "ancestor"),
                      fallback="hyper.mutate")
    return registry


def _default(parameters: Mapping[str, inspect.Parameter], name: str) -> Any:
    """The default of the keyword argument name, or None when it has none (or there is no such argument)."""
    parameter = parameters.get(name)
    return None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default


REGISTRY = default_registry()


def get(name: str) -> OperatorSpec:
    """The built-in operator called name."""
    return REGISTRY.get(name)


def parse_weights(spec: str) -> dict[str, float]:
    """Registry.parse_weights on the built-in registry."""
    return REGISTRY.parse_weights(spec)
