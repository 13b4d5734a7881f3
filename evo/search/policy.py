"""The search policy: steady-state, asynchronous, noise-aware; no Ray and no store.

- phases: noise (the seed on `noise_seeds` seeds: the noise floor, and a first check that the task works), search
  (a confirm evaluation if an elite needs one, else the next child), final (the best confirmed on fresh seeds)
- children are proposed ahead of the workers from the start (in the noise phase, children of the seed), so slow
  (LLM) proposals are ready when the first worker is free; the Proposer (evo.search.proposals) makes them
- seeds: every search evaluation uses the run's search seed (parent and child compared on the same draw); confirm
  evaluations use the same fresh seeds for every individual (confirmed individuals compared paired too)
- an executor (evo.engine on Ray workers; a test or a benchmark) drives it one pass at a time, with no generation
  barrier: report(task, result) for each finished evaluation, child(proposal, variation) for each finished
  proposal, close_noise_phase(), proposals(), close_search() (True when the run is over), next_task() for each
  free worker until None
- resume: state() is small (random state, counters, phase); History brings the individuals and evaluations back
"""

from __future__ import annotations

import dataclasses
import random
import statistics
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evo.choices import Phase
from evo.errors import EvoError
from evo.fitness import SCORED_PURPOSES, best, score
from evo.integrity import disqualification, violation
from evo.results import score_problem, typed
from evo.search.islands import Islands
from evo.search.proposals import Proposal, Proposer, Verdict, vary
from evo.search.selection import Member, elites, select_parents, survivors
from genome import Genome, content_hash
from operators.errors import OperatorConfigError
from operators.registry import REGISTRY
from operators.variation import Variation

if TYPE_CHECKING:  # the policy reads a RunConfig's fields; building one (evo.config) is the caller's business
    from evo.config import RunConfig

# What an executor imports from here (Proposal, Verdict and vary are evo.search.proposals').
__all__ = ["History", "Proposal", "SearchPolicy", "SeedFailed", "Task", "Verdict", "vary"]


CLOSE = 2.0          # confirm="close": an elite is confirmed while another member is within this many noise floors


@dataclass(frozen=True)
class Task:
    """One evaluation to run: which individual, on which seed, why, and whether a pre-flight comes first."""

    individual: str
    seed: int
    purpose: str             # search, confirm, noise
    preflight: bool = False


@dataclass
class Counters:
    """What the search has done, saved in its state; the run status's counts (evo.run_status.EvaluationCounts.of)
    are read from these fields by name."""

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
                 program: str = "", history: History | None = None, harness_api: Iterable[str] | None = None):
        """A new search (the seed queued on the noise seeds), or with history the search it was.

        lookahead: how many children to keep proposed ahead of the workers (the executor's workers + 2);
        llm: whether an LLM client is there (without one only the offline operators are used);
        program: the text of program.md, for the LLM operators;
        harness_api: the names a child may import from the harness the run uses (default: the packaged one's)."""
        self.config = config
        self.lookahead = lookahead
        self.program = program
        self.phase = Phase.NOISE
        self.rng = random.Random(config.seed)
        self.counters = Counters()
        self.noise_floor: float | None = None
        self.genomes: dict[str, Genome] = {}
        self.parents: dict[str, tuple[str, ...]] = {}
        self.results: dict[str, list[tuple[int, float, str]]] = {}   # id -> [(seed, val_bpb, purpose)] ok only
        self.disqualified: dict[str, str] = {}            # id -> why (evo.integrity): out of the population, unranked
        self.islands = Islands.of(config.islands, config.population)   # who is in the population, island by island
        self.ready: deque[str] = deque()                  # proposed children waiting for a worker
        self.confirm_queue: deque[Task] = deque()
        self.running: list[Task] = []                     # handed out by next_task(), not reported yet
        self.proposing = 0                                # handed out by proposals(), not back through child()
        # which operator, told what, and what became of its child
        self.proposer = Proposer(config, llm=llm, program=program, genomes=self.genomes, parents=self.parents,
                                 mean=self._mean, harness_api=harness_api)
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
        self.proposer.note(self.seed_id, self.seed_id)
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
        self.phase = Phase(state.get("phase", Phase.SEARCH))
        self.proposer.restore(state)
        self.counters.search_dispatched = self.counters.search_done
        for ind in history.individuals:
            self.parents[ind.id] = tuple(ind.parents)
            if ind.source is not None:
                self.genomes[ind.id] = Genome(ind.source, tuple(ind.parents), ind.operator, ind.description)
                if ind.status != "duplicate":
                    self.proposer.note(content_hash(ind.source), ind.id)
        for ev in history.evaluations:
            if ev.status == "ok" and ev.purpose in SCORED_PURPOSES and score_problem(ev.val_bpb) is None:
                self.results.setdefault(ev.individual_id, []).append((ev.seed, ev.val_bpb, ev.purpose))
            why = violation(ev.status, getattr(ev, "error", None))
            if why is not None and ev.purpose in SCORED_PURPOSES:
                self.disqualified.setdefault(ev.individual_id, disqualification(ev.purpose, ev.seed, why))
        self.islands.restore(state.get("islands"), list(history.population))
        for id in self.disqualified:    # the store is the truth: one caught before its population was stored
            self.islands.remove(id)
        if self.phase == Phase.INTERRUPTED:  # go on where it stopped: the population exists from the search phase on
            self.phase = Phase.SEARCH if self.population else Phase.NOISE
        if self.phase in (Phase.FINAL, Phase.FINISHED) and not self._search_over():
            self.phase = Phase.SEARCH        # resumed with its stop conditions extended: search on, then confirm again
        for ind in history.individuals:
            if ind.status != "proposed" or (ind.id == self.seed_id and self.phase == Phase.NOISE):
                continue
            self.ready.append(ind.id)
        if self.phase == Phase.NOISE:
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
                "noise_floor": self.noise_floor, "phase": self.phase, "step": self.proposer.step,
                "credit": self.proposer.credit,
                "islands": self.islands.state(),
                "search_seed": self.search_seed,
                "fresh_seeds": list(self.fresh_seeds)}

    def note_individual(self, id: str, source: str) -> None:
        """An individual made outside the search (an ablated variant of `evo replay`): a child with its source is a
        duplicate."""
        self.proposer.note(content_hash(source), id)

    def genome(self, id: str) -> Genome:
        return self.genomes[id]

    # -- phases ----------------------------------------------------------------------------------------------------

    def elapse(self, seconds: float) -> None:
        """The executor's clock: the search has been active seconds longer (what --hours counts)."""
        self.counters.active_seconds += seconds

    def close_noise_phase(self) -> bool:
        """Ends the noise phase once every noise evaluation is in: the noise floor is set and the seed is the
        population. True when it ended just now."""
        if self.phase != Phase.NOISE or self.confirm_queue or self.running:
            return False
        values = [v for _, v, _ in self.results.get(self.seed_id, [])]
        self.noise_floor = statistics.stdev(values) if len(values) > 1 else None
        self.islands.start(self.seed_id)
        self.phase = Phase.SEARCH
        return True

    def close_search(self) -> bool:
        """Moves on once the search is over (to the final confirmation of the best) and once that is done (the run
        is finished). True when the run is finished."""
        if self.phase == Phase.SEARCH and self._search_over() and not self.running:
            self.phase = Phase.FINAL
        if self.phase == Phase.FINAL and not self.running and not self.confirm_queue \
                and not self._queue_final_confirmation():
            self.phase = Phase.FINISHED
        return self.phase == Phase.FINISHED

    def interrupt(self) -> None:
        """The run was stopped: what was running is dropped (the executor records it as interrupted; its child is
        still proposed for a resume)."""
        self.running.clear()
        self.phase = Phase.INTERRUPTED

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
        if self.phase != Phase.SEARCH or self._search_over() or not self.ready:
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
            self.phase = Phase.FAILED
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
        if not ok:
            self.islands.drop(child)
            self.proposer.evaluated(genome, delta, result["status"], result.get("error") or "")
            return
        status = "kept" if self.islands.place(child, self._ranked) else "discarded"
        self.proposer.evaluated(genome, delta, status)

    def _queue_confirmations(self) -> None:
        """Each elite gets evaluated on the fresh seeds it has not had yet."""
        if self.phase not in (Phase.SEARCH, Phase.FINAL) or self.config.confirm == "final":
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
        leader = best(self._members(self.population))
        return leader is not None and self._queue_confirm(leader.id, set())

    # -- proposals -------------------------------------------------------------------------------------------------

    def proposals(self, limit: int | None = None) -> list[Proposal]:
        """The children to start proposing now: up to lookahead of them ahead of the workers, counting those
        waiting and those being proposed (fewer near the end), at most limit of them now. Each must come back
        through child().

        During the noise phase they are children of the seed, made before its val_bpb is known, so that an LLM's
        latency passes while the seed is measured; they wait for a worker until the noise phase ends (if the seed
        fails, they are never run)."""
        out: list[Proposal] = []
        if self.phase not in (Phase.NOISE, Phase.SEARCH):
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

    def _proposal(self) -> Proposal | None:
        spec = self.proposer.pick(self.rng)
        if spec is None:
            return None
        island = self.islands.next()
        members = self._members(self.islands.island(island))
        if members:
            chosen = select_parents(members, spec.arity, self.rng, self.config.selection, self.config.tournament_size)
            parents = [self.genomes[m.id] for m in chosen]
        else:  # the noise phase: the seed is the only individual there is
            parents = [self.genomes[self.seed_id]] * spec.arity
        return self.proposer.proposal(spec, parents, island, self.rng, self.noise_floor)

    def child(self, proposal: Proposal, variation: Variation, unavailable: bool = False) -> Verdict:
        """What an operator made of a proposal (Proposer.verdict: invalid, duplicate, rejected or proposed); a
        proposed child waits for a worker. unavailable: the operator's family cannot run any more (no key that
        works, the spend cap), so the offline operators carry on alone."""
        self.proposing -= 1
        verdict = self.proposer.verdict(proposal, variation, unavailable)
        if verdict.status == "invalid" and not unavailable:
            self.counters.invalid += 1
        if verdict.status == "proposed":
            parent_ids = proposal.parent_ids
            self.genomes[verdict.id] = Genome(variation.source, parent_ids, variation.operator, variation.description)
            self.parents[verdict.id] = parent_ids
            self.islands.assign(verdict.id, proposal.island)
            self.ready.append(verdict.id)
        return verdict

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
        m = best(self._members(self.population),
                 eligible=lambda m: not self.tainted_by(m.id) or any(p == "confirm" for _, _, p in self.results[m.id]))
        if m is None:
            return None
        values = [v for _, v, _ in self.results[m.id]]
        n_confirm = sum(1 for _, _, p in self.results[m.id] if p == "confirm")
        return {"id": m.id, "mean_bpb": m.mean_bpb, "std_bpb": statistics.stdev(values) if len(values) > 1 else None,
                "n": m.n, "n_confirm": n_confirm, "score": m.score}


def _tuples(value):
    """JSON turned random.getstate()'s tuples into lists; setstate wants them back."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value
