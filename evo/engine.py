"""The population search: steady-state, asynchronous, noise-aware. Runs inside the Population actor (evo.driver).

    noise phase    the seed genome on `noise_seeds` seeds: the noise floor, and a first check that the task works
    search phase   whenever a worker is free it gets the next task: a confirm evaluation if an elite needs one,
                   else the next child; children are proposed ahead of the workers (LLM calls in threads)
    final phase    the best is confirmed on fresh seeds before it is reported

Seeds: every search evaluation uses the run's search seed, so parent and child are compared on the same draw;
confirm evaluations use the same fresh seeds for every individual, so confirmed individuals are compared paired too.

The engine is the store's only writer; each finished evaluation is committed before anything else happens.
"""

from __future__ import annotations

import logging
import random
import statistics
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone

import ray

from evo.config import RunConfig
from evo.errors import EvoError, OperatorUnavailable
from evo.selection import Member, elites, score, select_parents, survivors
from genome import Genome, content_hash, lowest_common_ancestor, validate
from operators.context import Attempt, LLMContext, Lineage, Step
from operators.registry import REGISTRY
from operators.variation import Variation

log = logging.getLogger(__name__)

MAX_INVALID_IN_A_ROW = 50
RECENT_ATTEMPTS = 12


@dataclass
class Task:
    individual: str
    seed: int
    purpose: str             # search, confirm, noise
    preflight: bool = False


@dataclass
class Running:
    task: Task
    worker: int
    started: float


@dataclass
class Counters:
    search_dispatched: int = 0
    search_done: int = 0
    confirm_done: int = 0
    noise_done: int = 0
    failed: int = 0
    invalid: int = 0
    active_seconds: float = 0.0
    busy_seconds: float = 0.0


class SeedFailed(EvoError):
    """The seed train.py failed its first evaluation: the run cannot start."""


class Engine:
    def __init__(self, config: RunConfig, store, workers: list, make_worker, *, run_id: str, seed_source: str,
                 program: str, llm_client=None, state: dict | None = None, environment: dict | None = None):
        """environment: where evaluations run (worker threads, the dataset's key), saved for replay."""
        self.config = config
        self.environment = dict(environment or {})
        self.store = store
        self.lock = threading.RLock()       # store and state: run() writes while status()/query() read
        self.workers = list(workers)
        self.make_worker = make_worker
        self.idle = set(range(len(self.workers)))
        self.run_id = run_id
        self.program = program
        self.llm = llm_client
        self.stopping = False
        self.phase = "starting"
        self.started = time.time()
        self.running: dict[object, Running] = {}
        self.ready: deque[str] = deque()      # proposed children waiting for a worker
        self.confirm_queue: deque[Task] = deque()
        self.proposing: list[Future] = []
        self.pool = ThreadPoolExecutor(max_workers=max(1, llm_client.settings.max_concurrent if llm_client else 1),
                                       thread_name_prefix="propose")
        self.genomes: dict[str, Genome] = {}
        self.parents: dict[str, tuple[str, ...]] = {}
        self.results: dict[str, list[tuple[int, float, str]]] = {}   # id -> [(seed, val_bpb, purpose)] ok only
        self.population: list[str] = []
        self.attempts: deque[Attempt] = deque(maxlen=RECENT_ATTEMPTS)
        self.invalid_in_a_row = 0
        self.weights = dict(config.operators) if llm_client else REGISTRY.offline(config.operators)
        self.rng = random.Random(config.seed)
        self.counters = Counters()
        self.noise_floor: float | None = None
        self.seed_id = content_hash(seed_source)
        seeds = random.Random(f"seeds-{config.seed}")
        self.search_seed = seeds.randrange(1, 2**31)
        self.fresh_seeds = [seeds.randrange(1, 2**31) for _ in range(max(config.noise_seeds, config.confirm_seeds))]
        if state:
            self._restore(state)
        else:
            self._start(seed_source)

    # -- start and resume ------------------------------------------------------------------------------------------

    def _start(self, seed_source: str) -> None:
        with self.lock:
            self.store.add_individual(self.run_id, source=seed_source, operator="seed", description="the seed train.py")
            self.genomes[self.seed_id] = Genome.seed(seed_source)
            self.parents[self.seed_id] = ()
            for i, s in enumerate(self._noise_seeds()):
                self.confirm_queue.append(Task(self.seed_id, s, "noise", preflight=self.config.preflight and i == 0))
            self.phase = "noise"
            self._save()

    def _restore(self, state: dict) -> None:
        """Back from the store: individuals, their results, the population, counters, the random state; children
        that were proposed but not finished go back in the queue."""
        with self.lock:
            self.rng.setstate(_tuples(state["rng"]))
            self.counters = Counters(**state["counters"])
            self.noise_floor = state.get("noise_floor")
            self.phase = state.get("phase", "search")
            self.counters.search_dispatched = self.counters.search_done
            for ind in self.store.individuals(self.run_id, with_source=True):
                self.parents[ind.id] = ind.parents
                if ind.source is not None:
                    self.genomes[ind.id] = Genome(ind.source, ind.parents, ind.operator, ind.description)
            for ev in self.store.evaluations(self.run_id):
                if ev.status == "ok" and ev.purpose in ("search", "confirm", "noise"):
                    self.results.setdefault(ev.individual_id, []).append((ev.seed, ev.val_bpb, ev.purpose))
            self.population = self.store.population(self.run_id)
            for ind in self.store.individuals(self.run_id, status="proposed"):
                if ind.id == self.seed_id and self.phase == "noise":
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

    def _save(self) -> None:
        state = {"rng": self.rng.getstate(), "counters": vars(self.counters), "noise_floor": self.noise_floor,
                 "phase": self.phase, "search_seed": self.search_seed, "fresh_seeds": self.fresh_seeds,
                 "program": self.program, "workers": len(self.workers), **self.environment}
        self.store.save_state(self.run_id, state)

    # -- the loop ----------------------------------------------------------------------------------------------------

    def run(self) -> dict:
        """Runs to a stop condition (or stop()); returns the final status."""
        last = time.time()
        while True:
            now = time.time()
            with self.lock:
                self.counters.active_seconds += now - last
                last = now
                if self.stopping:
                    self._interrupt()
                    return self.status()
                self._collect(timeout=0)
                self._collect_proposals()
                if self.phase == "noise" and not self.confirm_queue and not self.running:
                    self._end_noise_phase()
                if self.phase == "search":
                    self._propose_ahead()
                    if self._search_over() and not self.running:
                        self.phase = "final"
                if self.phase == "final" and not self.running and not self.confirm_queue:
                    if not self._queue_final_confirmation():
                        self.phase = "finished"
                        self._save()
                        self.store.finish_run(self.run_id, "finished")
                        self.pool.shutdown(wait=False, cancel_futures=True)
                        return self.status()
                self._dispatch()
            self._wait(0.25)

    def stop(self) -> None:
        self.stopping = True

    def _wait(self, timeout: float) -> None:
        refs = list(self.running)
        if refs:
            ray.wait(refs, num_returns=1, timeout=timeout)
        else:
            time.sleep(timeout / 5)

    def _search_over(self) -> bool:
        if self.config.evaluations is not None and self.counters.search_dispatched >= self.config.evaluations:
            return True
        if self.config.hours is not None and self.counters.active_seconds >= self.config.hours * 3600:
            return True
        return False

    # -- evaluations ---------------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        while self.idle:
            task = self._next_task()
            if task is None:
                return
            w = min(self.idle)
            self.idle.discard(w)
            genome = self.genomes[task.individual]
            ref = self.workers[w].evaluate.remote(
                genome.source, task.seed, self.config.budget_seconds, self.config.budget_tokens,
                self.config.time_limit, preflight=task.preflight)
            self.running[ref] = Running(task, w, time.time())

    def _next_task(self) -> Task | None:
        if self.confirm_queue:
            return self.confirm_queue.popleft()
        if self.phase != "search" or self._search_over() or not self.ready:
            return None
        self.counters.search_dispatched += 1
        return Task(self.ready.popleft(), self.search_seed, "search", preflight=self.config.preflight)

    def _collect(self, timeout: float) -> None:
        if not self.running:
            return
        done, _ = ray.wait(list(self.running), num_returns=len(self.running), timeout=timeout)
        for ref in done:
            job = self.running.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayActorError as e:
                result = self._no_result(job, "crash", f"worker died during the evaluation: {str(e).splitlines()[0]}")
                self.workers[job.worker] = self.make_worker(job.worker)
            except ray.exceptions.RayError as e:
                result = self._no_result(job, "crash", f"evaluation failed in Ray: {str(e).splitlines()[0]}")
            self.idle.add(job.worker)
            self.counters.busy_seconds += time.time() - job.started
            self._record(job, result)

    def _no_result(self, job: Running, status: str, error: str) -> dict:
        """The evaluation record of a job whose worker returned nothing (it died, or the run was stopped)."""
        return {"status": status, "error": error, "seed": job.task.seed, "worker": f"worker-{job.worker}",
                "budget_seconds": self.config.budget_seconds, "budget_tokens": self.config.budget_tokens}

    def _record(self, job: Running, result: dict) -> None:
        task = job.task

        def utc(t):
            return datetime.fromtimestamp(t, timezone.utc).replace(tzinfo=None) if t else None

        self.store.add_evaluation(self.run_id, task.individual, result, purpose=task.purpose,
                                  worker=result.get("worker"), started_at=utc(result.get("started_at", job.started)),
                                  finished_at=utc(result.get("finished_at")))
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
            self.store.finish_run(self.run_id, "failed")
            self.stopping = True
            raise SeedFailed(f"the seed train.py failed its first evaluation ({result['status']}): "
                             f"{result.get('error') or 'no reason given'}")
        if task.purpose == "search":
            self._place(task.individual, ok, result)
        self._queue_confirmations()
        self._save()

    def _place(self, child: str, ok: bool, result: dict) -> None:
        """A search result: the child joins the population, and the worst member leaves when it is full."""
        genome = self.genomes[child]
        parent = genome.parents[0] if genome.parents else None
        parent_mean = self._mean(parent)
        delta = result["val_bpb"] - parent_mean if ok and parent_mean is not None else None
        if not ok:
            self.attempts.append(Attempt(genome.description or genome.operator, result["status"], genome.operator,
                                         None, (result.get("error") or "")[:200]))
            return
        members = self._members(self.population + [child])
        kept, dropped = survivors(members, self.config.population)
        self.population = [m.id for m in kept]
        self.store.set_population(self.run_id, self.population)
        status = "kept" if child in self.population else "discarded"
        self.attempts.append(Attempt(genome.description or genome.operator, status, genome.operator, delta))

    def _queue_confirmations(self) -> None:
        """Each elite gets evaluated on the fresh seeds it has not had yet."""
        if self.phase not in ("search", "final"):
            return
        pending = {(t.individual, t.seed) for t in self.confirm_queue}
        pending |= {(r.task.individual, r.task.seed) for r in self.running.values()}
        for member in elites(self._members(self.population), self.config.elites):
            self._queue_confirm(member.id, pending)

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
        """Before the run ends, the best must have its confirm evaluations; True when some were queued."""
        best = self.best()
        if best is None:
            return False
        return self._queue_confirm(best["id"], set())

    def _end_noise_phase(self) -> None:
        values = [v for _, v, _ in self.results.get(self.seed_id, [])]
        self.noise_floor = statistics.stdev(values) if len(values) > 1 else None
        self.store.set_noise_floor(self.run_id, self.noise_floor)
        self.population = [self.seed_id]
        self.store.set_population(self.run_id, self.population)
        self.phase = "search"
        self._save()

    def _interrupt(self) -> None:
        """Ctrl-C: in-flight evaluations are recorded as interrupted (their children stay proposed for --resume)."""
        for ref, job in list(self.running.items()):
            try:
                ray.kill(self.workers[job.worker])
            except Exception:  # the worker may be gone already
                pass
            self.store.add_evaluation(self.run_id, job.task.individual,
                                      self._no_result(job, "interrupted", "the run was stopped"),
                                      purpose=job.task.purpose, worker=f"worker-{job.worker}")
        self.running.clear()
        self.phase = "interrupted"
        self._save()
        self.store.finish_run(self.run_id, "interrupted")
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- proposals -----------------------------------------------------------------------------------------------

    def _propose_ahead(self) -> None:
        """Keeps up to workers + 2 children proposed ahead of the workers (fewer near the end)."""
        if not self.population:
            return
        wanted = len(self.workers) + 2
        if self.config.evaluations is not None:
            wanted = min(wanted, self.config.evaluations - self.counters.search_dispatched)
        while len(self.ready) + len(self.proposing) < wanted:
            if not self._start_proposal():
                return

    def _start_proposal(self) -> bool:
        if not self.weights:
            return False
        spec = REGISTRY.pick(self.weights, self.rng)
        members = self._members(self.population)
        chosen = select_parents(members, spec.arity, self.rng, self.config.selection, self.config.tournament_size)
        parents = [self.genomes[m.id] for m in chosen]
        if spec.arity == 2 and len({p.id for p in parents}) < 2:
            parents = [parents[0]]
            spec = REGISTRY.get("hyper.mutate") if "hyper.mutate" in self.weights else spec
            if spec.arity == 2:
                return False
        settings = {}
        if spec.arity == 2:
            lca = lowest_common_ancestor(parents[0].id, parents[1].id, self.parents)
            settings["ancestor"] = self.genomes.get(lca) if lca else None
        if spec.needs_llm:
            settings["client"] = self.llm
            settings["context"] = self._llm_context(parents)
        rng = random.Random(self.rng.random())
        ids = tuple(p.id for p in parents)
        if spec.needs_llm:
            future = self.pool.submit(_call_operator, spec, parents, rng, settings)
        else:
            future = Future()
            future.set_result(_call_operator(spec, parents, rng, settings))
        future.parent_ids = ids
        self.proposing.append(future)
        return True

    def _collect_proposals(self) -> None:
        for future in [f for f in self.proposing if f.done()]:
            self.proposing.remove(future)
            variation, unavailable = future.result()
            if unavailable:  # no key that works, or the spend cap: the offline operators carry on alone
                log.warning("%s; continuing with the offline operators", variation.reason)
                self.weights = REGISTRY.offline(self.weights)
                self.store.add_individual(self.run_id, source=None, status="invalid", reason=variation.reason,
                                          operator=variation.operator, parents=future.parent_ids,
                                          llm_calls=variation.usage)
                continue
            self._register(variation, future.parent_ids)

    def _register(self, variation: Variation, parent_ids: tuple[str, ...]) -> None:
        """Stores a proposal as proposed, invalid, rejected or duplicate; a proposed child waits for a worker."""
        kwargs = dict(operator=variation.operator, parents=parent_ids, description=variation.description,
                      llm_calls=variation.usage)
        if not variation.ok:
            self.store.add_individual(self.run_id, source=None, status="invalid", reason=variation.reason, **kwargs)
            self.attempts.append(Attempt(variation.description or variation.operator, "invalid", variation.operator,
                                         None, variation.reason[:200]))
            self.counters.invalid += 1
            self._count_unusable(variation, variation.reason)
            return
        self.invalid_in_a_row = 0
        child_id = content_hash(variation.source)
        original = self.store.find_source(self.run_id, child_id)
        if original is not None:
            self.store.add_individual(self.run_id, source=variation.source, status="duplicate",
                                      reason=f"duplicate of {original}", **kwargs)
            self._count_unusable(variation, f"duplicate of {original}")
            return
        verdict = validate(variation.source)
        if not verdict.ok:
            self.store.add_individual(self.run_id, source=variation.source, status="rejected", reason=verdict.reason,
                                      **kwargs)
            self.attempts.append(Attempt(variation.description, "rejected", variation.operator, None,
                                         verdict.reason[:200]))
            return
        self.store.add_individual(self.run_id, source=variation.source, **kwargs)
        self.genomes[child_id] = Genome(variation.source, parent_ids, variation.operator, variation.description)
        self.parents[child_id] = parent_ids
        self.ready.append(child_id)

    def _count_unusable(self, variation: Variation, reason: str) -> None:
        """Invalid and duplicate children in a row: past a bound the operators cannot make progress."""
        self.invalid_in_a_row += 1
        if self.invalid_in_a_row >= MAX_INVALID_IN_A_ROW:
            raise EvoError(f"the operators produced {MAX_INVALID_IN_A_ROW} unusable children in a row (last: "
                           f"{variation.operator}: {reason}); check --operators")

    def _llm_context(self, parents: list[Genome]) -> LLMContext:
        lineages = [self._lineage(p.id) for p in parents]
        return LLMContext(program=self.program, parent=lineages[0], other=lineages[1] if len(lineages) > 1 else None,
                          recent=tuple(self.attempts), noise_bpb=self.noise_floor)

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

    # -- fitness and status ---------------------------------------------------------------------------------------

    def _mean(self, id: str | None) -> float | None:
        values = [v for _, v, _ in self.results.get(id, [])] if id else []
        return statistics.fmean(values) if values else None

    def _members(self, ids: list[str]) -> list[Member]:
        members = []
        for id in ids:
            values = [v for _, v, _ in self.results.get(id, [])]
            if not values:
                continue
            std = statistics.stdev(values) if len(values) > 1 else None
            members.append(Member(id, score(statistics.fmean(values), std, len(values), self.noise_floor),
                                  statistics.fmean(values), len(values)))
        return members

    def best(self) -> dict | None:
        """The population member with the best noise-aware score."""
        members = self._members(self.population)
        if not members:
            return None
        m = min(members, key=lambda m: (m.score, m.id))
        values = [v for _, v, _ in self.results[m.id]]
        n_confirm = sum(1 for _, _, p in self.results[m.id] if p == "confirm")
        return {"id": m.id, "mean_bpb": m.mean_bpb, "std_bpb": statistics.stdev(values) if len(values) > 1 else None,
                "n": m.n, "n_confirm": n_confirm, "score": m.score}

    def status(self) -> dict:
        with self.lock:
            elapsed = max(self.counters.active_seconds, 1e-9)
            c = self.counters
            done = c.search_done + c.confirm_done + c.noise_done
            busy = c.busy_seconds + sum(time.time() - r.started for r in self.running.values())
            spent = self.llm.spent_usd if self.llm else 0.0
            calls = len(self.llm.usage) if self.llm else 0
            return {
                "run_id": self.run_id, "status": {"finished": "finished", "interrupted": "interrupted",
                                                  "failed": "failed"}.get(self.phase, "running"),
                "phase": self.phase, "elapsed_s": elapsed, "best": self.best(),
                "evaluations": {"search_done": c.search_done, "confirm_done": c.confirm_done,
                                "noise_done": c.noise_done, "running": len(self.running), "failed": c.failed,
                                "invalid": c.invalid},
                "target_evaluations": self.config.evaluations, "noise_floor": self.noise_floor,
                "evals_per_hour": done / elapsed * 3600, "workers": len(self.workers),
                "utilisation": min(1.0, busy / (elapsed * max(1, len(self.workers)))),
                "population": len(self.population), "individuals": len(self.parents),
                "llm_cost_usd": spent, "llm_calls": calls,
            }


def _call_operator(spec, parents, rng, settings) -> tuple[Variation, bool]:
    """Runs one operator; whatever goes wrong becomes an invalid variation, never an exception in the loop.
    Returns (variation, whether the operator's family became unavailable: spend cap, refused key)."""
    try:
        return spec(parents, rng, **settings), False
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
