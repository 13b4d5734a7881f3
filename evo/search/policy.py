"""The search policy: steady-state, asynchronous, noise-aware. Who is in the population, who becomes a parent, what
to evaluate next and what to confirm; no Ray and no store.

    noise phase    the seed genome on `noise_seeds` seeds: the noise floor, and a first check that the task works
    search phase   the next task is a confirm evaluation if an elite needs one, else the next child; children are
                   proposed ahead of the workers, from the start: during the noise phase children of the seed are
                   proposed, so slow (LLM) proposals are ready when the first worker is free for a child
    final phase    the best is confirmed on fresh seeds before it is reported

Seeds: every search evaluation uses the run's search seed, so parent and child are compared on the same draw;
confirm evaluations use the same fresh seeds for every individual, so confirmed individuals are compared paired too.

An executor drives it (evo.engine on Ray workers; a test or a benchmark with results of its own), one pass at a
time, with no generation barrier:

    policy.report(task, result)           each finished evaluation
    policy.child(proposal, variation)     each finished proposal (vary(proposal) made it, in a thread or not)
    policy.close_noise_phase()            True when the noise floor was just set
    policy.proposals()                    children to start proposing now
    policy.close_search()                 True when the run is over
    policy.next_task()                    for each free worker, until None

state() and History give a policy back after a restart: the state is small (random state, counters, phase); the
individuals and evaluations come from wherever the executor stored them.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import statistics
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evo.errors import EvoError
from evo.fitness import SCORED_PURPOSES, score
from evo.integrity import disqualification, violation
from evo.results import score_problem, typed
from evo.search.islands import Islands
from evo.search.selection import Member, elites, select_parents, survivors
from genome import (
    Genome,
    content_hash,
    hyperparameters,
    lowest_common_ancestor,
    validate,
)
from operators.context import Attempt, Lineage, LLMContext, OperatorContext, Step
from operators.errors import OperatorConfigError, OperatorUnavailable
from operators.hyper import in_bound
from operators.registry import REGISTRY

if TYPE_CHECKING:  # the policy reads a RunConfig's fields; building one (evo.config) is the caller's business
    from evo.config import RunConfig
from operators.variation import Variation

log = logging.getLogger(__name__)

MAX_INVALID_IN_A_ROW = 50
CLOSE = 2.0          # confirm="close": an elite is confirmed while another member is within this many noise floors
# adaptive_steps: an operator's step size (operators.registry: hyper.mutate's sigma) is its registered value times
# `step`, which grows by STEP_UP after a child of such an operator that beats its parent and shrinks by
# STEP_UP ** -0.25 after one that does not: steady at one success in five.
STEP_UP = 1.5
STEP_RANGE = (0.25, 8.0)
# adaptive_operators: an operator's weight is multiplied by its children's success rate (beating their parent on the
# search seed), Laplace-smoothed ((wins + 1) / (trials + 2)), and never below MIN_RATE of it, so none is shut out.
MIN_RATE = 0.05
RECENT_ATTEMPTS = 12


@dataclass(frozen=True)
class Task:
    """One evaluation to run: which individual, on which seed, why, and whether a pre-flight comes first."""

    individual: str
    seed: int
    purpose: str             # search, confirm, noise
    preflight: bool = False


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


@dataclass
class Counters:
    search_dispatched: int = 0
    search_done: int = 0
    confirm_done: int = 0
    noise_done: int = 0
    failed: int = 0
    invalid: int = 0
    active_seconds: float = 0.0


@dataclass(frozen=True)
class History:
    """What a run stored, to resume from: the policy's saved state(), its individuals in birth order and its
    evaluations in the order they finished (records with the store's attribute names: id, parents, operator,
    description, source, status; individual_id, seed, val_bpb, purpose, status), and its population."""

    state: Mapping[str, Any]
    individuals: Sequence[Any] = ()
    evaluations: Sequence[Any] = ()
    population: Sequence[str] = ()


class SeedFailed(EvoError):
    """The seed train.py failed its first evaluation: the run cannot start."""


class SearchPolicy:
    def __init__(self, config: RunConfig, seed_source: str, *, lookahead: int = 3, llm: bool = False,
                 program: str = "", history: History | None = None):
        """A new search (the seed queued on the noise seeds), or with history the search it was.

        lookahead: how many children to keep proposed ahead of the workers (the executor's workers + 2);
        llm: whether an LLM client is there (without one only the offline operators are used);
        program: the text of program.md, for the LLM operators."""
        self.config = config
        self.lookahead = lookahead
        self.program = program
        self.phase = "noise"
        self.rng = random.Random(config.seed)
        self.counters = Counters()
        self.noise_floor: float | None = None
        self.genomes: dict[str, Genome] = {}
        self.parents: dict[str, tuple[str, ...]] = {}
        self.sources: dict[str, str] = {}                 # content hash -> the first individual with that source
        self.results: dict[str, list[tuple[int, float, str]]] = {}   # id -> [(seed, val_bpb, purpose)] ok only
        self.disqualified: dict[str, str] = {}            # id -> why (evo.integrity): out of the population, unranked
        self.islands = Islands.of(config.islands, config.population)   # who is in the population, island by island
        self.ready: deque[str] = deque()                  # proposed children waiting for a worker
        self.confirm_queue: deque[Task] = deque()
        self.running: list[Task] = []                     # handed out by next_task(), not reported yet
        self.proposing = 0                                # handed out by proposals(), not back through child()
        self.attempts: deque[Attempt] = deque(maxlen=RECENT_ATTEMPTS)
        self.invalid_in_a_row = 0
        self.step = 1.0                                   # adaptive_steps: the multiplier of the step sizes
        self.credit: dict[str, list[int]] = {}            # operator -> [children that beat their parent, children]
        self.weights = dict(config.operators) if llm else REGISTRY.offline(config.operators)
        self.seed_id = content_hash(seed_source)
        seeds = random.Random(f"seeds-{config.seed}")
        self.search_seed = seeds.randrange(1, 2**31)
        self.fresh_seeds = [seeds.randrange(1, 2**31) for _ in range(max(config.noise_seeds, config.confirm_seeds))]
        if history is None:
            self._start(seed_source)
        else:
            self._restore(history)

    # -- start and resume ------------------------------------------------------------------------------------------

    def _start(self, seed_source: str) -> None:
        self.genomes[self.seed_id] = Genome.seed(seed_source)
        self.parents[self.seed_id] = ()
        self.sources[self.seed_id] = self.seed_id
        for i, s in enumerate(self._noise_seeds()):
            self.confirm_queue.append(Task(self.seed_id, s, "noise", preflight=self.config.preflight and i == 0))

    def _restore(self, history: History) -> None:
        """Individuals, their results, the population, counters, the random state; children that were proposed but
        not evaluated (an interrupted evaluation leaves its child proposed) go back in the queue."""
        state = history.state
        self.rng.setstate(_tuples(state["rng"]))
        known = {f.name for f in dataclasses.fields(Counters)}
        self.counters = Counters(**{k: v for k, v in state["counters"].items() if k in known})
        self.noise_floor = state.get("noise_floor")
        self.phase = state.get("phase", "search")
        self.step = state.get("step", 1.0)
        self.credit = {name: list(c) for name, c in state.get("credit", {}).items()}
        self.counters.search_dispatched = self.counters.search_done
        for ind in history.individuals:
            self.parents[ind.id] = tuple(ind.parents)
            if ind.source is not None:
                self.genomes[ind.id] = Genome(ind.source, tuple(ind.parents), ind.operator, ind.description)
                if ind.status != "duplicate":
                    self.sources.setdefault(content_hash(ind.source), ind.id)
        for ev in history.evaluations:
            if ev.status == "ok" and ev.purpose in SCORED_PURPOSES and score_problem(ev.val_bpb) is None:
                self.results.setdefault(ev.individual_id, []).append((ev.seed, ev.val_bpb, ev.purpose))
            why = violation(ev.status, getattr(ev, "error", None))
            if why is not None and ev.purpose in SCORED_PURPOSES:
                self.disqualified.setdefault(ev.individual_id, disqualification(ev.purpose, ev.seed, why))
        self.islands.restore(state.get("islands"), list(history.population))
        for id in self.disqualified:    # the store is the truth: one caught before its population was stored
            self.islands.remove(id)
        if self.phase == "interrupted":  # go on where it stopped: the population exists from the search phase on
            self.phase = "search" if self.population else "noise"
        if self.phase in ("final", "finished") and not self._search_over():
            self.phase = "search"        # resumed with its stop conditions extended: search on, then confirm again
        for ind in history.individuals:
            if ind.status != "proposed" or (ind.id == self.seed_id and self.phase == "noise"):
                continue
            self.ready.append(ind.id)
        if self.phase == "noise":
            done = {s for s, _, _ in self.results.get(self.seed_id, [])}
            for s in self._noise_seeds():
                if s not in done:
                    self.confirm_queue.append(Task(self.seed_id, s, "noise"))
        self._queue_confirmations()

    def _noise_seeds(self) -> list[int]:
        """The seed genome's seeds: the search seed (so children pair with it) and fresh ones."""
        return [self.search_seed, *self.fresh_seeds[:self.config.noise_seeds - 1]]

    def state(self) -> dict:
        """What to save to resume from (JSON-able): the random state, counters, phase, noise floor and seeds."""
        return {"rng": self.rng.getstate(), "counters": dataclasses.asdict(self.counters),
                "noise_floor": self.noise_floor, "phase": self.phase, "step": self.step, "credit": self.credit,
                "islands": self.islands.state(),
                "search_seed": self.search_seed,
                "fresh_seeds": list(self.fresh_seeds)}

    def note_individual(self, id: str, source: str) -> None:
        """An individual made outside the search (an ablated variant of `evo replay`): a child with its source is a
        duplicate."""
        self.sources.setdefault(content_hash(source), id)

    def genome(self, id: str) -> Genome:
        return self.genomes[id]

    # -- phases ----------------------------------------------------------------------------------------------------

    def elapse(self, seconds: float) -> None:
        """The executor's clock: the search has been active seconds longer (what --hours counts)."""
        self.counters.active_seconds += seconds

    def close_noise_phase(self) -> bool:
        """Ends the noise phase once every noise evaluation is in: the noise floor is set and the seed is the
        population. True when it ended just now."""
        if self.phase != "noise" or self.confirm_queue or self.running:
            return False
        values = [v for _, v, _ in self.results.get(self.seed_id, [])]
        self.noise_floor = statistics.stdev(values) if len(values) > 1 else None
        self.islands.start(self.seed_id)
        self.phase = "search"
        return True

    def close_search(self) -> bool:
        """Moves on once the search is over (to the final confirmation of the best) and once that is done (the run
        is finished). True when the run is finished."""
        if self.phase == "search" and self._search_over() and not self.running:
            self.phase = "final"
        if self.phase == "final" and not self.running and not self.confirm_queue \
                and not self._queue_final_confirmation():
            self.phase = "finished"
        return self.phase == "finished"

    def interrupt(self) -> None:
        """The run was stopped: what was running is dropped (the executor records it as interrupted; its child is
        still proposed for a resume)."""
        self.running.clear()
        self.phase = "interrupted"

    def _search_over(self) -> bool:
        c = self.config
        return ((c.evaluations is not None and self.counters.search_dispatched >= c.evaluations)
                or (c.hours is not None and self.counters.active_seconds >= c.hours * 3600))

    # -- evaluations -----------------------------------------------------------------------------------------------

    def next_task(self) -> Task | None:
        """The next evaluation for a free worker: a queued confirm (or noise) evaluation first, else the next
        child on the search seed; None when there is nothing to run now."""
        task = self._next_task()
        if task is not None:
            self.running.append(task)
        return task

    def _next_task(self) -> Task | None:
        if self.confirm_queue:
            return self.confirm_queue.popleft()
        if self.phase != "search" or self._search_over() or not self.ready:
            return None
        self.counters.search_dispatched += 1
        child = self.ready.popleft()
        return Task(child, self.search_seed, "search", preflight=self.config.preflight and self._edits_code(child))

    def _edits_code(self, id: str) -> bool:
        """Whether a child's operator may have changed code, not only the values of constants: only such a child
        gets the pre-flight. A child of the hyper operators runs its parent's code, which has trained and exported
        already; the constants it changed break it, when they do, as early in the full run as in a pre-flight
        (building the model, the first step) or where one pre-flight step would not see it either (a divergence,
        memory late in the run), so a pre-flight would cost every such child its seconds and save nothing."""
        try:
            return not REGISTRY.get(self.genomes[id].operator).constants_only
        except OperatorConfigError:
            return True

    @staticmethod
    def _has_step(operator: str) -> bool:
        """Whether operator declared a step size (operators.registry), which adaptive_steps scales."""
        try:
            return REGISTRY.get(operator).step is not None
        except OperatorConfigError:
            return False

    def report(self, task: Task, result: Mapping[str, Any]) -> None:
        """A finished evaluation of a task next_task() handed out: result is the evaluation record (status, val_bpb
        when ok, error). A search result places its child; elites get confirmations queued. Raises SeedFailed
        when a noise evaluation of the seed failed."""
        self.running.remove(task)
        result = typed(result)  # a NaN, infinite or malformed score is a failed evaluation, never an exception here
        ok = result["status"] == "ok"
        if task.purpose == "search":
            self.counters.search_done += 1
        elif task.purpose == "confirm":
            self.counters.confirm_done += 1
        else:
            self.counters.noise_done += 1
        if not ok:
            self.counters.failed += 1
        if ok:
            self.results.setdefault(task.individual, []).append((task.seed, result["val_bpb"], task.purpose))
        if task.purpose == "noise" and not ok:
            self.phase = "failed"
            raise SeedFailed(f"the seed train.py failed its first evaluation ({result['status']}): "
                             f"{result.get('error') or 'no reason given'}")
        if task.purpose == "search":
            self._place(task.individual, ok, result)
        why = violation(result["status"], result.get("error"))
        if why is not None:
            self._disqualify(task.individual, disqualification(task.purpose, task.seed, why))
        self._queue_confirmations()

    def lost(self, task: Task) -> None:
        """A finished task whose evaluation came back without a result of the child's own (its worker or node
        died): counted as a failed evaluation and queued again, first. The executor decides which (a noise
        evaluation of the seed, a bounded number of times), so that a run stops on the seed only for the seed."""
        self.running.remove(task)
        self.counters.noise_done += task.purpose == "noise"
        self.counters.confirm_done += task.purpose == "confirm"
        self.counters.failed += 1
        self.confirm_queue.appendleft(task)

    def _disqualify(self, id: str, reason: str) -> None:
        """Caught once, out (evo.integrity): the individual leaves the population and every ranking, and its
        queued confirmations are dropped; the first reason is kept."""
        self.disqualified.setdefault(id, reason)
        self.islands.remove(id)
        self.confirm_queue = deque(t for t in self.confirm_queue if t.individual != id)

    def tainted_by(self, id: str) -> str | None:
        """The nearest disqualified ancestor of id (any parent, any depth), or None."""
        frontier, seen = list(self.parents.get(id, ())), set()
        while frontier:
            node = frontier.pop(0)
            if node in seen:
                continue
            if node in self.disqualified:
                return node
            seen.add(node)
            frontier.extend(self.parents.get(node, ()))
        return None

    def _place(self, child: str, ok: bool, result: Mapping[str, Any]) -> None:
        """A search result: the child joins the population, and the worst member leaves when it is full."""
        genome = self.genomes[child]
        parent = genome.parents[0] if genome.parents else None
        parent_mean = self._mean(parent)
        delta = result["val_bpb"] - parent_mean if ok and parent_mean is not None else None
        if self.config.adaptive_steps and self._has_step(genome.operator):
            factor = STEP_UP if delta is not None and delta < 0 else STEP_UP ** -0.25
            self.step = min(STEP_RANGE[1], max(STEP_RANGE[0], self.step * factor))
        credit = self.credit.setdefault(genome.operator, [0, 0])
        credit[0] += delta is not None and delta < 0
        credit[1] += 1
        if not ok:
            self.islands.drop(child)
            self.attempts.append(Attempt(genome.description or genome.operator, result["status"], genome.operator,
                                         None, (result.get("error") or "")[:200]))
            return
        status = "kept" if self.islands.place(child, self._ranked) else "discarded"
        self.attempts.append(Attempt(genome.description or genome.operator, status, genome.operator, delta))

    def _queue_confirmations(self) -> None:
        """Each elite gets evaluated on the fresh seeds it has not had yet."""
        if self.phase not in ("search", "final") or self.config.confirm == "final":
            return
        pending = {(t.individual, t.seed) for t in self.confirm_queue}
        pending |= {(t.individual, t.seed) for t in self.running}
        members = self._members(self.population)
        for member in elites(members, self.config.elites):
            if self.config.confirm == "close" and not self._close(member, members):
                continue
            self._queue_confirm(member.id, pending)

    def _close(self, member: Member, members: list[Member]) -> bool:
        """Whether luck could have put member where it is: another member's mean is within CLOSE noise floors of
        its own. A clear lead needs no confirmation yet (the best is confirmed before the run ends)."""
        floor = self.noise_floor or 0.0
        return any(abs(m.mean_bpb - member.mean_bpb) <= CLOSE * floor for m in members if m.id != member.id)

    def _queue_confirm(self, id: str, pending: set) -> bool:
        done = {s for s, _, _ in self.results.get(id, [])}
        queued = False
        for s in self.fresh_seeds[:self.config.confirm_seeds]:
            if s not in done and (id, s) not in pending:
                self.confirm_queue.append(Task(id, s, "confirm"))
                pending.add((id, s))
                queued = True
        return queued

    def _queue_final_confirmation(self) -> bool:
        """Before the run ends, the leader (the best by score, a descendant of a disqualified member too) must have
        its confirm evaluations; True when some were queued."""
        members = self._members(self.population)
        if not members:
            return False
        return self._queue_confirm(min(members, key=lambda m: (m.score, m.id)).id, set())

    # -- proposals -------------------------------------------------------------------------------------------------

    def proposals(self, limit: int | None = None) -> list[Proposal]:
        """The children to start proposing now: up to lookahead of them ahead of the workers, counting those
        waiting and those being proposed (fewer near the end), at most limit of them now. Each must come back
        through child().

        During the noise phase they are children of the seed, made before its val_bpb is known, so that an LLM's
        latency passes while the seed is measured; they wait for a worker until the noise phase ends (if the seed
        fails, they are never run)."""
        out: list[Proposal] = []
        if self.phase not in ("noise", "search"):
            return out
        wanted = self.lookahead
        if self.config.evaluations is not None:
            wanted = min(wanted, self.config.evaluations - self.counters.search_dispatched)
        while len(self.ready) + self.proposing < wanted and (limit is None or len(out) < limit):
            proposal = self._proposal()
            if proposal is None:
                break
            self.proposing += 1
            out.append(proposal)
        return out

    def operator_weights(self) -> dict[str, float]:
        """The weights operators are drawn with now: the configured ones, times each one's success rate with
        adaptive_operators."""
        if not self.config.adaptive_operators:
            return self.weights
        rate = lambda wins, trials: max(MIN_RATE, (wins + 1) / (trials + 2))   # noqa: E731
        return {name: w * rate(*self.credit.get(name, (0, 0))) for name, w in self.weights.items()}

    def _proposal(self) -> Proposal | None:
        if not self.weights:
            return None
        spec = REGISTRY.pick(self.operator_weights(), self.rng)
        island = self.islands.next()
        members = self._members(self.islands.island(island))
        if members:
            chosen = select_parents(members, spec.arity, self.rng, self.config.selection, self.config.tournament_size)
            parents = [self.genomes[m.id] for m in chosen]
        else:  # the noise phase: the seed is the only individual there is
            parents = [self.genomes[self.seed_id]] * spec.arity
        if len({p.id for p in parents}) < spec.arity:  # one individual twice: the operator's one-parent fallback
            if spec.fallback not in self.weights:
                return None
            spec, parents = REGISTRY.get(spec.fallback), parents[:1]
        ancestor = self._ancestor(parents) if "ancestor" in spec.needs else None
        context = self._llm_context(parents) if "context" in spec.needs else None
        settings = {}
        if self.config.bounds and "bounds" in spec.accepts:
            settings["bounds"] = dict(self.config.bounds)
        if self.config.adaptive_steps and spec.step is not None:
            settings[spec.step] = spec.base_step * self.step
        return Proposal(spec.name, tuple(parents), random.Random(self.rng.random()), ancestor, context, settings,
                        island)

    def child(self, proposal: Proposal, variation: Variation, unavailable: bool = False) -> Verdict:
        """What an operator made of a proposal: invalid (no source), duplicate (a source the run has), rejected (the
        validator refused it) or proposed (it waits for a worker). unavailable: the operator's family cannot run any
        more (no key that works, the spend cap), so the offline operators carry on alone."""
        self.proposing -= 1
        if unavailable:
            self.weights = REGISTRY.offline(self.weights)
            return Verdict("invalid", reason=variation.reason)
        if not variation.ok:
            self.attempts.append(Attempt(variation.description or variation.operator, "invalid", variation.operator,
                                         None, variation.reason[:200]))
            self.counters.invalid += 1
            return Verdict("invalid", reason=variation.reason, give_up=self._count_unusable(variation,
                                                                                           variation.reason))
        self.invalid_in_a_row = 0
        child_id = content_hash(variation.source)
        original = self.sources.get(child_id)
        if original is not None:
            reason = f"duplicate of {original}"
            return Verdict("duplicate", reason=reason, give_up=self._count_unusable(variation, reason))
        self.sources[child_id] = child_id
        verdict = validate(variation.source)
        reason = verdict.reason if not verdict.ok else self._outside_bounds(variation.source)
        if reason:
            self.attempts.append(Attempt(variation.description, "rejected", variation.operator, None, reason[:200]))
            return Verdict("rejected", child_id, reason)
        parent_ids = proposal.parent_ids
        self.genomes[child_id] = Genome(variation.source, parent_ids, variation.operator, variation.description)
        self.parents[child_id] = parent_ids
        self.islands.assign(child_id, proposal.island)
        self.ready.append(child_id)
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

    def _ancestor(self, parents: list[Genome]) -> Genome | None:
        lca = lowest_common_ancestor(parents[0].id, parents[1].id, self.parents)
        return self.genomes.get(lca) if lca else None

    def _llm_context(self, parents: list[Genome]) -> LLMContext:
        lineages = [self._lineage(p.id) for p in parents]
        return LLMContext(program=self.program, parent=lineages[0], other=lineages[1] if len(lineages) > 1 else None,
                          recent=tuple(self.attempts), noise_bpb=self.noise_floor,
                          bounds=tuple((name, low, high) for name, (low, high) in (self.config.bounds or {}).items()))

    def _lineage(self, id: str) -> Lineage:
        steps = []
        node = id
        while self.parents.get(node):
            parent = self.parents[node][0]
            g = self.genomes.get(node)
            mean, before = self._mean(node), self._mean(parent)
            steps.append(Step(g.description if g else "", g.operator if g else "", mean,
                              mean - before if mean is not None and before is not None else None))
            node = parent
        return Lineage(self._mean(id), tuple(reversed(steps[:20])))

    # -- fitness ---------------------------------------------------------------------------------------------------

    def _mean(self, id: str | None) -> float | None:
        values = [v for _, v, _ in self.results.get(id, [])] if id else []
        return statistics.fmean(values) if values else None

    @property
    def population(self) -> list[str]:
        """Who is in the population now (every island's members, each once)."""
        return self.islands.population()

    def _ranked(self, ids: list[str]) -> list[str]:
        """Those of ids with a score, best first (by score, then id)."""
        kept, _ = survivors(self._members(ids), len(ids))
        return [m.id for m in kept]

    def _members(self, ids: list[str]) -> list[Member]:
        members = []
        for id in ids:
            values = [v for _, v, _ in self.results.get(id, [])]
            if not values or id in self.disqualified:
                continue
            std = statistics.stdev(values) if len(values) > 1 else None
            members.append(Member(id, score(statistics.fmean(values), std, len(values), self.noise_floor),
                                  statistics.fmean(values), len(values)))
        return members

    def best(self) -> dict | None:
        """The population member with the best noise-aware score: id, mean_bpb, std_bpb, n, n_confirm, score. A
        descendant of a disqualified member is crowned only with an ok confirmation of its own."""
        members = [m for m in self._members(self.population)
                   if not self.tainted_by(m.id) or any(p == "confirm" for _, _, p in self.results[m.id])]
        if not members:
            return None
        m = min(members, key=lambda m: (m.score, m.id))
        values = [v for _, v, _ in self.results[m.id]]
        n_confirm = sum(1 for _, _, p in self.results[m.id] if p == "confirm")
        return {"id": m.id, "mean_bpb": m.mean_bpb, "std_bpb": statistics.stdev(values) if len(values) > 1 else None,
                "n": m.n, "n_confirm": n_confirm, "score": m.score}


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
        return Variation.invalid(spec.name, f"{type(e).__name__}: {e}"), False


def _tuples(value):
    """JSON turned random.getstate()'s tuples into lists; setstate wants them back."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value
