"""The executor of a search: runs what the policy (evo.search.policy) asks for on the Ray workers, stores every
result, and reports it back. Runs inside the run actor (evo.run_actor).

Each pass of its loop:
- finished evaluations are stored, each committed as soon as the loop gets to it, and reported to the policy; the
  workers they freed get their next tasks right after the first of them is committed, before the rest of the batch
  and the bookkeeping (population, the policy's state), so workers that finish together do not all wait for the
  whole batch to be stored;
- finished proposals are stored and handed to the policy, and the policy moves through its phases;
- new proposals start: the LLM ones in threads, so they overlap with training; the offline ones here, until
  PROPOSING_SLICE seconds are up or an evaluation finishes, so a finished evaluation never waits behind them;
- every free worker gets the next task.

Failures and stops:
- a worker that dies costs its evaluation (stored as a crash) and is replaced; a noise evaluation of the seed lost
  so (its worker or node died, not the seed) is run again, up to SEED_RETRIES times, with a line saying so, so a
  run stops on the seed only when the seed itself fails;
- a stopped run stores its in-flight evaluations as interrupted, and their children stay proposed for --resume;
- an individual the policy disqualifies (evo.integrity) is stored as `rejected` with its reason, "disqualified:
  ..." (on --resume too, where the run stopped before it was).

Who writes the store: the run actor opens the one writer of a live run, creates or resumes the run's row and marks
it failed when the loop raises; the engine writes everything else through that writer (individuals, evaluations,
population, state, and `evo replay`'s results against the live run). `evo replay` on a run that is not live opens a
writer of its own (evo.replay).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone

from evo.config import RunConfig
from evo.errors import EvoError
from evo.fitness import TEST_PURPOSES
from evo.integrity import DISQUALIFIED
from evo.results import score_problem, typed
from evo.run_status import EvaluationCounts, RunStatus
from evo.search.policy import History, Proposal, SearchPolicy, SeedFailed, Task, vary
from evo.workers import Finished, WorkerPool

log = logging.getLogger(__name__)

PROPOSING_SLICE = 0.05   # seconds of proposing per pass of the loop while the policy wants more children
SEED_RETRIES = 2         # more tries for a noise evaluation of the seed lost to a dead worker or node


class Engine:
    def __init__(self, config: RunConfig, store, workers: list, make_worker, *, run_id: str, seed_source: str,
                 program: str, llm_client=None, state: dict | None = None, environment: dict | None = None,
                 harness_api: tuple[str, ...] | None = None):
        """environment: where evaluations run (worker threads, the dataset's key), saved for replay; harness_api:
        the names a child may import from the run's harness (its prepare.py's `__all__`)."""
        self.config = config
        self.environment = dict(environment or {})
        self.store = store
        self.lock = threading.RLock()       # store and state: run() writes while status()/query() read
        self.pool = WorkerPool(workers, make_worker, budget=config.budget, time_limit=config.time_limit)
        self.run_id = run_id
        self.program = program
        self.llm = llm_client
        self.stopping = False
        self.seed_retries = 0
        self.busy_seconds = 0.0
        self.test_bpb: dict[str, list[float]] = {}   # individual -> its test_bpb values; reported, never selected on
        self.proposing: list[tuple[Proposal, Future]] = []
        self.threads = ThreadPoolExecutor(max_workers=max(1, llm_client.settings.max_concurrent if llm_client else 1),
                                          thread_name_prefix="propose")
        options = {"lookahead": len(workers) + 2, "llm": bool(llm_client), "program": program,
                   "harness_api": harness_api}
        with self.lock:
            if state:
                self.busy_seconds = state["counters"].get("busy_seconds", 0.0)
                evaluations = store.evaluations(run_id)
                for e in evaluations:
                    self._note_test(e.individual_id, e.test_bpb)
                history = History(state, store.individuals(run_id, with_source=True), evaluations,
                                  store.population(run_id))
                self.policy = SearchPolicy(config, seed_source, history=history, **options)
                stored = {i.id: i for i in history.individuals}
                for id, reason in self.policy.disqualified.items():
                    if stored[id].status != "rejected" or not (stored[id].reason or "").startswith(DISQUALIFIED):
                        store.set_status(run_id, id, "rejected", reason)
            else:
                self.policy = SearchPolicy(config, seed_source, **options)
                store.add_individual(run_id, source=seed_source, operator="seed", description="the seed train.py")
                self._save()

    def _save(self) -> None:
        state = self.policy.state()
        state["counters"]["busy_seconds"] = self.busy_seconds
        self.store.save_state(self.run_id, {**state, "program": self.program, "workers": self.pool.size,
                                            **self.environment,
                                            "conditions": self.pool.conditions or self.environment.get("conditions")})

    # -- the loop ----------------------------------------------------------------------------------------------------

    def run(self) -> dict:
        """Runs to a stop condition (or stop()); returns the final status."""
        last = time.time()
        while True:
            now = time.time()
            with self.lock:
                self.policy.elapse(now - last)
                last = now
                if self.stopping:
                    self._interrupt()
                    return self.status()
                for done in self.pool.collect(timeout=0):
                    self._record(done)
                self._collect_proposals()
                if self.policy.close_noise_phase():
                    self.store.set_noise_floor(self.run_id, self.policy.noise_floor)
                    self.store.set_population(self.run_id, self.policy.population)
                    self._save()
                more = self._propose(until=time.monotonic() + PROPOSING_SLICE)
                if self.policy.close_search():
                    self._save()
                    self.store.finish_run(self.run_id, "finished")
                    self.threads.shutdown(wait=False, cancel_futures=True)
                    return self.status()
                self._dispatch()
            self.pool.wait(0 if more else 0.25)

    def stop(self) -> None:
        self.stopping = True

    def _dispatch(self) -> None:
        while self.pool.idle:
            task = self.policy.next_task()
            if task is None:
                return
            self.pool.submit(task, self.policy.genome(task.individual).source, task.seed, preflight=task.preflight,
                             test=task.purpose in TEST_PURPOSES)

    def _record(self, done: Finished) -> None:
        """Stores a finished evaluation, reports it to the policy, hands the free workers their next tasks, and
        stores what changed (the population, the policy's state)."""
        task: Task = done.task
        result = typed(done.result)  # malformed or non-finite: a failed evaluation with its reason (evo.results)
        self.busy_seconds += done.seconds

        def utc(t):
            return datetime.fromtimestamp(t, timezone.utc).replace(tzinfo=None) if t else None

        retry = done.lost and task.purpose == "noise" and self.seed_retries < SEED_RETRIES
        if retry:
            self.seed_retries += 1
            result = {**result, "error": f"{result.get('error')}; run again ({self.seed_retries} of "
                                         f"{SEED_RETRIES} more tries)"}
        self.store.add_evaluation(self.run_id, task.individual, result, purpose=task.purpose,
                                  worker=result.get("worker"), started_at=utc(result.get("started_at", done.started)),
                                  finished_at=utc(result.get("finished_at")))
        self._note_test(task.individual, result.get("test_bpb") if result.get("status") == "ok" else None)
        population = list(self.policy.population)
        caught = dict(self.policy.disqualified)
        if retry:
            self.pool.notes.append(f"the seed's evaluation on seed {task.seed} was lost ({result['error']})")
            self.policy.lost(task)
        else:
            try:
                self.policy.report(task, result)
            except SeedFailed:
                self.store.finish_run(self.run_id, "failed")
                self.stopping = True
                raise
        self._dispatch()  # the free workers' next tasks go out before the bookkeeping below
        for id, reason in self.policy.disqualified.items():
            if id not in caught:
                self.store.set_status(self.run_id, id, "rejected", reason)
        if self.policy.population != population:
            self.store.set_population(self.run_id, self.policy.population)
        self._save()

    def _interrupt(self) -> None:
        """Ctrl-C: in-flight evaluations are stored as interrupted (their children stay proposed for --resume)."""
        for done in self.pool.interrupt():
            self.store.add_evaluation(self.run_id, done.task.individual, done.result, purpose=done.task.purpose,
                                      worker=done.result["worker"])
        self.policy.interrupt()
        self._save()
        self.store.finish_run(self.run_id, "interrupted")
        self.threads.shutdown(wait=False, cancel_futures=True)

    # -- proposals -------------------------------------------------------------------------------------------------

    def _propose(self, until: float) -> bool:
        """Starts the children the policy wants, one at a time, until it wants no more, the time is up or an
        evaluation has finished; the offline ones are made here and handed over at once. True when the policy
        wants more: the loop comes back after serving the workers, so proposing never keeps a finished evaluation
        waiting long."""
        while True:
            started = self.policy.proposals(limit=1)
            if not started:
                return False
            self._start_proposal(started[0])
            self._collect_proposals()
            if time.monotonic() >= until or self.pool.finished():
                return True

    def _start_proposal(self, proposal: Proposal) -> None:
        """An LLM operator runs in a thread, so its calls overlap with training; an offline one runs here."""
        if proposal.needs_llm:
            future = self.threads.submit(vary, proposal, self.llm)
        else:
            future = Future()
            future.set_result(vary(proposal, self.llm))
        self.proposing.append((proposal, future))

    def _collect_proposals(self) -> None:
        for pair in [p for p in self.proposing if p[1].done()]:
            self.proposing.remove(pair)
            proposal, future = pair
            variation, unavailable = future.result()
            if unavailable:  # no key that works, or the spend cap: the offline operators carry on alone
                log.warning("%s; continuing with the offline operators", variation.reason)
            verdict = self.policy.child(proposal, variation, unavailable)
            self.store.add_individual(self.run_id, source=variation.source, status=verdict.status,
                                      reason=verdict.reason, operator=variation.operator,
                                      parents=proposal.parent_ids, description=variation.description,
                                      llm_calls=variation.usage)
            if verdict.give_up:
                raise EvoError(verdict.give_up)

    def record_replay(self, individual: dict | None, evaluation: dict | None) -> str | None:
        """For `evo replay` against this live run: stores an ablated variant (returns its id; the policy counts its
        source for the duplicate check) or a replay evaluation."""
        with self.lock:
            if individual is not None:
                id = self.store.add_individual(self.run_id, **individual)
                if individual.get("source") is not None:
                    self.policy.note_individual(id, individual["source"])
                return id
            self.store.add_evaluation(self.run_id, evaluation.pop("individual_id"), evaluation, purpose="replay",
                                      worker=evaluation.get("worker"))
            return None

    def _note_test(self, individual: str, test_bpb: float | None) -> None:
        if test_bpb is not None and score_problem(test_bpb) is None:   # a store may hold a NaN from an older evo
            self.test_bpb.setdefault(individual, []).append(test_bpb)

    # -- status ------------------------------------------------------------------------------------------------------

    def status(self) -> RunStatus:
        with self.lock:
            p, c = self.policy, self.policy.counters
            busy = self.busy_seconds + sum(time.time() - r.started for r in self.pool.running.values())
            return RunStatus.build(
                run_id=self.run_id, phase=p.phase, active_seconds=c.active_seconds, busy_seconds=busy,
                workers=self.pool.size, best=self._best(),
                evaluations=EvaluationCounts.of(c, running=self.pool.running_count),
                target_evaluations=self.config.evaluations, noise_floor=p.noise_floor,
                population=len(p.population), individuals=len(p.parents),
                llm_cost_usd=self.llm.spent_usd if self.llm else 0.0,
                llm_calls=len(self.llm.usage) if self.llm else 0, notes=tuple(self.pool.notes))

    def _best(self) -> dict | None:
        best = self.policy.best()
        if best is None:
            return None
        tests = self.test_bpb.get(best["id"])
        return {**best, "test_bpb": sum(tests) / len(tests) if tests else None}
