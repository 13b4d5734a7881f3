"""The proposal half of the search: which operator makes the next child, what it is told, and what became of it.

- Proposer: operator weights (adaptive_operators), step sizes (adaptive_steps), the run's bounds, the LLM context,
  and the verdict on each child (invalid, duplicate, rejected or proposed)
- Proposal: a child to make; Verdict: what became of it
- vary(): runs a proposal's operator, in a thread or not; whatever goes wrong becomes an invalid variation
- the policy (evo.search.policy) holds a Proposer: it chooses the parents and hands over the operator and the run's
  random generator, so a seeded run draws the same numbers in the same order
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evo.errors import first_line
from genome import HARNESS_API, Genome, content_hash, hyperparameters, lowest_common_ancestor, validate
from operators.context import Attempt, Lineage, LLMContext, OperatorContext, Step
from operators.errors import OperatorConfigError, OperatorUnavailable
from operators.hyper import in_bound
from operators.registry import REGISTRY, OperatorSpec
from operators.variation import Variation

if TYPE_CHECKING:  # the proposer reads a RunConfig's fields; building one (evo.config) is the caller's business
    from evo.config import RunConfig

log = logging.getLogger(__name__)

MAX_INVALID_IN_A_ROW = 50
# adaptive_steps: an operator's step size (operators.registry: hyper.mutate's sigma) is its registered value times
# `step`, which grows by STEP_UP after a child of such an operator that beats its parent and shrinks by
# STEP_UP ** -0.25 after one that does not: steady at one success in five.
STEP_UP = 1.5
STEP_RANGE = (0.25, 8.0)
# adaptive_operators: an operator's weight is multiplied by its children's success rate (beating their parent on the
# search seed), Laplace-smoothed ((wins + 1) / (trials + 2)), and never below MIN_RATE of it, so none is shut out.
MIN_RATE = 0.05
RECENT_ATTEMPTS = 12


@dataclass(frozen=True, eq=False)
class Proposal:
    """A child to make: the operator, its parents, the generator it draws from, and what the operator is told
    besides the sources, each only when the operator declared it a need (the parents' common ancestor, the LLM
    context)."""

    operator: str
    parents: tuple[Genome, ...]
    rng: random.Random
    ancestor: Genome | None = None
    context: LLMContext | None = None
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)   # the operator's, for this child
    island: int = 0                                                         # whose parents these are

    @property
    def parent_ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.parents)

    @property
    def needs_llm(self) -> bool:
        return REGISTRY.get(self.operator).needs_llm

    def given(self, client=None) -> OperatorContext:
        """What the operator may take besides its parents, with client (the LLM client) added."""
        return OperatorContext(client=client, context=self.context or LLMContext(), ancestor=self.ancestor)


@dataclass(frozen=True)
class Verdict:
    """What became of a proposal: status proposed (it waits for a worker), invalid, duplicate or rejected, with the
    reason; give_up is set when the operators have produced too many unusable children in a row to go on."""

    status: str
    id: str | None = None
    reason: str | None = None
    give_up: str | None = None


class Proposer:
    def __init__(self, config: RunConfig, *, llm: bool, program: str, genomes: Mapping[str, Genome],
                 parents: Mapping[str, tuple[str, ...]], mean: Callable[[str | None], float | None],
                 harness_api: Iterable[str] | None = None):
        """genomes, parents and mean are the policy's (read, never written here): the individuals' genomes, their
        parents, and an individual's mean val_bpb (None before it has one). llm: whether an LLM client is there
        (without one only the offline operators are used); program: the text of program.md, for the LLM
        operators; harness_api: the names a child may import from the harness the run uses (its prepare.py's
        `__all__`; by default the packaged harness's)."""
        self.config = config
        self.harness_api = HARNESS_API if harness_api is None else frozenset(harness_api)
        self.program = program
        self.genomes = genomes
        self.parents = parents
        self.mean = mean
        self.sources: dict[str, str] = {}                 # content hash -> the first individual with that source
        self.attempts: deque[Attempt] = deque(maxlen=RECENT_ATTEMPTS)
        self.invalid_in_a_row = 0
        self.step = 1.0                                   # adaptive_steps: the multiplier of the step sizes
        self.credit: dict[str, list[int]] = {}            # operator -> [children that beat their parent, children]
        self.weights = dict(config.operators) if llm else REGISTRY.offline(config.operators)

    def restore(self, state: Mapping[str, Any]) -> None:
        """The step multiplier and the operators' credit, from the policy's saved state."""
        self.step = state.get("step", 1.0)
        self.credit = {name: list(c) for name, c in state.get("credit", {}).items()}

    def note(self, source_hash: str, id: str) -> None:
        """id has the source with that content hash: a later child with it is a duplicate (the first one is kept)."""
        self.sources.setdefault(source_hash, id)

    # -- proposing -------------------------------------------------------------------------------------------------

    def operator_weights(self) -> dict[str, float]:
        """The weights operators are drawn with now: the configured ones, times each one's success rate with
        adaptive_operators."""
        if not self.config.adaptive_operators:
            return self.weights
        rate = lambda wins, trials: max(MIN_RATE, (wins + 1) / (trials + 2))   # noqa: E731
        return {name: w * rate(*self.credit.get(name, (0, 0))) for name, w in self.weights.items()}

    def pick(self, rng: random.Random) -> OperatorSpec | None:
        """The operator of the next child, drawn by weight; None when no operator is left."""
        if not self.weights:
            return None
        return REGISTRY.pick(self.operator_weights(), rng)

    def proposal(self, spec: OperatorSpec, parents: list[Genome], island: int, rng: random.Random,
                 noise_floor: float | None) -> Proposal | None:
        """A child of parents (selected for spec on island) by spec, or by its one-parent fallback when the parents
        are one individual twice (None when the fallback is not among the weights); rng gives the child's own
        generator."""
        if len({p.id for p in parents}) < spec.arity:  # one individual twice: the operator's one-parent fallback
            if spec.fallback not in self.weights:
                return None
            spec, parents = REGISTRY.get(spec.fallback), parents[:1]
        ancestor = self._ancestor(parents) if "ancestor" in spec.needs else None
        context = self._llm_context(parents, noise_floor) if "context" in spec.needs else None
        settings = {}
        if self.config.bounds and "bounds" in spec.accepts:
            settings["bounds"] = dict(self.config.bounds)
        if self.config.adaptive_steps and spec.step is not None:
            settings[spec.step] = spec.base_step * self.step
        return Proposal(spec.name, tuple(parents), random.Random(rng.random()), ancestor, context, settings, island)

    def _ancestor(self, parents: list[Genome]) -> Genome | None:
        lca = lowest_common_ancestor(parents[0].id, parents[1].id, self.parents)
        return self.genomes.get(lca) if lca else None

    def _llm_context(self, parents: list[Genome], noise_floor: float | None) -> LLMContext:
        lineages = [self._lineage(p.id) for p in parents]
        return LLMContext(program=self.program, parent=lineages[0], other=lineages[1] if len(lineages) > 1 else None,
                          recent=tuple(self.attempts), noise_bpb=noise_floor,
                          bounds=tuple((name, low, high) for name, (low, high) in (self.config.bounds or {}).items()))

    def _lineage(self, id: str) -> Lineage:
        steps = []
        node = id
        while self.parents.get(node):
            parent = self.parents[node][0]
            g = self.genomes.get(node)
            mean, before = self.mean(node), self.mean(parent)
            steps.append(Step(g.description if g else "", g.operator if g else "", mean,
                              mean - before if mean is not None and before is not None else None))
            node = parent
        return Lineage(self.mean(id), tuple(reversed(steps[:20])))

    # -- children --------------------------------------------------------------------------------------------------

    def verdict(self, proposal: Proposal, variation: Variation, unavailable: bool = False) -> Verdict:
        """What an operator made of a proposal: invalid (no source), duplicate (a source the run has), rejected (the
        validator refused it) or proposed (it may wait for a worker; the caller records it). unavailable: the
        operator's family cannot run any more (no key that works, the spend cap), so the offline operators carry on
        alone."""
        if unavailable:
            self.weights = REGISTRY.offline(self.weights)
            return Verdict("invalid", reason=variation.reason)
        if not variation.ok:
            self.attempts.append(Attempt(variation.description or variation.operator, "invalid", variation.operator,
                                         None, variation.reason[:200]))
            return Verdict("invalid", reason=variation.reason, give_up=self._count_unusable(variation,
                                                                                           variation.reason))
        self.invalid_in_a_row = 0
        child_id = content_hash(variation.source)
        original = self.sources.get(child_id)
        if original is not None:
            reason = f"duplicate of {original}"
            return Verdict("duplicate", reason=reason, give_up=self._count_unusable(variation, reason))
        self.sources[child_id] = child_id
        verdict = validate(variation.source, self.harness_api)
        reason = verdict.reason if not verdict.ok else self._outside_bounds(variation.source)
        if reason:
            self.attempts.append(Attempt(variation.description, "rejected", variation.operator, None, reason[:200]))
            return Verdict("rejected", child_id, reason)
        return Verdict("proposed", child_id)

    def _outside_bounds(self, source: str) -> str | None:
        """Why a child leaves the run's --bounds (whatever operator made it), or None."""
        if not self.config.bounds:
            return None
        view = hyperparameters(source)
        for name, (low, high) in self.config.bounds.items():
            if name in view and not in_bound(view[name].value, (low, high)):
                return f"{name} = {view[name].text} is outside --bounds {name}={low:g}:{high:g}"
        return None

    def _count_unusable(self, variation: Variation, reason: str) -> str | None:
        """Invalid and duplicate children in a row: past a bound the operators cannot make progress."""
        self.invalid_in_a_row += 1
        if self.invalid_in_a_row >= MAX_INVALID_IN_A_ROW:
            return (f"the operators produced {MAX_INVALID_IN_A_ROW} unusable children in a row (last: "
                    f"{variation.operator}: {reason}); check --operators")
        return None

    def evaluated(self, genome: Genome, delta: float | None, status: str, reason: str = "") -> None:
        """A child's search evaluation: delta is its val_bpb change against its parent (None when it failed or its
        parent has no mean); status what became of it (kept, discarded, or the failed evaluation's status). Its
        operator's credit and, for an operator with a step size, the step multiplier follow; the LLM context's
        recent attempts get it."""
        if self.config.adaptive_steps and _has_step(genome.operator):
            factor = STEP_UP if delta is not None and delta < 0 else STEP_UP ** -0.25
            self.step = min(STEP_RANGE[1], max(STEP_RANGE[0], self.step * factor))
        credit = self.credit.setdefault(genome.operator, [0, 0])
        credit[0] += delta is not None and delta < 0
        credit[1] += 1
        self.attempts.append(Attempt(genome.description or genome.operator, status, genome.operator, delta,
                                     reason[:200]))


def _has_step(operator: str) -> bool:
    """Whether operator declared a step size (operators.registry), which adaptive_steps scales."""
    try:
        return REGISTRY.get(operator).step is not None
    except OperatorConfigError:
        return False


def vary(proposal: Proposal, client=None) -> tuple[Variation, bool]:
    """Runs a proposal's operator (client: the LLM client, for an LLM operator); whatever goes wrong becomes an
    invalid variation, never an exception. Returns (variation, whether the operator's family became unavailable:
    spend cap, refused key, no client)."""
    spec = REGISTRY.get(proposal.operator)
    try:
        return spec(list(proposal.parents), proposal.rng, proposal.given(client), **proposal.settings), False
    except OperatorUnavailable as e:
        return Variation.invalid(spec.name, str(e)), True
    except Exception as e:  # an operator bug must not end the run: record it against the child
        log.exception("operator %s failed", spec.name)
        return Variation.invalid(spec.name, first_line(e, typed=True)), False
