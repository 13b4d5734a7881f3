"""The search methods benchmarks/search.py compares, each as ask/tell over the same box, and the loop that runs one
of them on an executor (the real Ray workers, or the surrogate) for a budget of evaluations.

Every method asks for jobs (a source and the seed to train it on) and is told each result; every job it asks for is
one training run and counts against its budget, whatever its purpose (evo's noise and confirm evaluations too).

    evo            evo's own search policy (evo.search.policy.SearchPolicy), the code `evo run` executes, with the
                   offline operators and the box as its --bounds (search.py's EVO); under a setting without
                   bounds, children outside the box are moved onto its edge
    autoresearch   one lineage: a hyper.mutate child of the current head, kept only if it beats its parent
    random         uniform over the box (on each constant's scale)
    tpe            optuna's TPESampler over the box (defaults, constant_liar for parallel asks)

Each starts by evaluating its start point; all use the repetition's one search seed (so they are paired).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import random
import warnings
from dataclasses import dataclass
from typing import Any, Callable

from benchmarks.search_box import BOX, at, box_values, clipped, inside, start_source
from evo.choices import Phase
from evo.config import RunConfig
from evo.search.policy import Proposal, SearchPolicy, vary
from genome import Genome, content_hash, rewrite
from operators.registry import parse_weights
from operators.variation import Variation

METHODS = ("evo", "autoresearch", "random", "tpe")


@dataclass(frozen=True, eq=False)
class Job:
    """One training run a method asked for."""

    source: str
    seed: int
    purpose: str = "search"      # search, noise, confirm (evo's own), benchmark (the final re-evaluation)
    tag: Any = None              # the method's own handle


def boxed(variation: Variation) -> Variation:
    """A child whose boxed constants left the box, with them moved onto its edge (said in the description)."""
    if not variation.ok:
        return variation
    current = box_values(variation.source)
    if inside(current):
        return variation
    fixed = clipped(current)
    changes = {n: v for n, v in fixed.items() if v != current[n]}
    source = rewrite(variation.source, changes)
    return Variation.child(variation.operator, source, variation.description + " (kept in the box: "
                           + ", ".join(f"{n} {v:g}" for n, v in changes.items()) + ")", variation.usage)


class Evo:
    """evo's SearchPolicy driven as evo.engine drives it: proposals made by vary() with the registered operators,
    children placed, confirmations queued, all by the policy."""

    name = "evo"

    def __init__(self, config: RunConfig, start: str, workers: int):
        self.policy = SearchPolicy(config, start, lookahead=workers + 2)

    def ask(self) -> Job | None:
        p = self.policy
        p.close_noise_phase()
        for _ in range(100):   # invalid and duplicate children cost no evaluation: propose until one waits
            if p.ready or p.confirm_queue or p.phase != Phase.SEARCH:
                break
            proposals = p.proposals()
            if not proposals:
                break
            for proposal in proposals:
                variation, unavailable = vary(proposal)
                verdict = p.child(proposal, boxed(variation), unavailable)
                if verdict.give_up:
                    raise RuntimeError(verdict.give_up)
        p.close_search()
        task = p.next_task()
        return None if task is None else Job(p.genome(task.individual).source, task.seed, task.purpose, task)

    def tell(self, job: Job, result: dict) -> None:
        self.policy.report(job.tag, result)
        self.policy.close_noise_phase()    # as the engine does on its next pass: the seed joins the population

    def reported(self) -> tuple[str, float] | None:
        best = self.policy.best()
        return None if best is None else (self.policy.genome(best["id"]).source, best["mean_bpb"])


class Autoresearch:
    """autoresearch's loop on the offline mutation operator: one head; each child is hyper.mutate of the head,
    trained on the search seed, and becomes the head only if it beats it. With several workers, several children
    of the head train at once."""

    name = "autoresearch"

    def __init__(self, start: str, search_seed: int, rng: random.Random):
        self.head = Genome.seed(start)
        self.head_value: float | None = None
        self.seed, self.rng = search_seed, rng
        self.tried: set[str] = set()
        self.started = False

    def ask(self) -> Job | None:
        if not self.started:
            self.started = True
            self.tried.add(self.head.id)
            return Job(self.head.source, self.seed, tag=self.head)
        if self.head_value is None:
            return None
        for _ in range(100):
            variation, _ = vary(Proposal("hyper.mutate", (self.head,), random.Random(self.rng.random())))
            variation = boxed(variation)
            if variation.ok and content_hash(variation.source) not in self.tried:
                child = variation.genome(self.head)
                self.tried.add(child.id)
                return Job(child.source, self.seed, tag=child)
        return None

    def tell(self, job: Job, result: dict) -> None:
        if result["status"] != "ok":
            return
        if self.head_value is None or (job.tag is not self.head and result["val_bpb"] < self.head_value):
            self.head, self.head_value = job.tag, result["val_bpb"]

    def reported(self) -> tuple[str, float] | None:
        return None if self.head_value is None else (self.head.source, self.head_value)


class _BestSeen:
    """What random search and TPE report: the best value seen and its source."""

    def __init__(self):
        self.best: tuple[str, float] | None = None

    def seen(self, source: str, result: dict) -> None:
        if result["status"] == "ok" and (self.best is None or result["val_bpb"] < self.best[1]):
            self.best = (source, result["val_bpb"])

    def reported(self) -> tuple[str, float] | None:
        return self.best


class RandomSearch(_BestSeen):
    name = "random"

    def __init__(self, seed_source: str, start: str, search_seed: int, rng: random.Random):
        super().__init__()
        self.seed_source, self.start, self.seed, self.rng = seed_source, start, search_seed, rng
        self.asked = 0

    def ask(self) -> Job:
        self.asked += 1
        if self.asked == 1:
            return Job(self.start, self.seed)
        return Job(at(self.seed_source, {n: b.at(self.rng.random()) for n, b in BOX.items()}), self.seed)

    def tell(self, job: Job, result: dict) -> None:
        self.seen(job.source, result)


def _optuna_params(values: dict) -> dict:
    """The box's constants as TPE's parameters (pow2 sizes as exponents, betas as 1 - beta)."""
    out = {}
    for n, v in values.items():
        b = BOX[n]
        out[n] = (int(math.log2(v)) if b.scale == "pow2" else round(1.0 - v, 12) if b.scale == "beta" else v)
    return out


def _suggest(trial) -> dict:
    values = {}
    for n, b in BOX.items():
        if b.scale == "int":
            values[n] = trial.suggest_int(n, int(b.low), int(b.high))
        elif b.scale == "pow2":
            values[n] = 2 ** trial.suggest_int(n, int(math.log2(b.low)), int(math.log2(b.high)))
        elif b.scale == "beta":
            values[n] = b.clip(1.0 - float(f"{trial.suggest_float(n, 1.0 - b.high, 1.0 - b.low, log=True):.2g}"))
        elif b.scale == "log":
            values[n] = b.clip(float(f"{trial.suggest_float(n, b.low, b.high, log=True):.3g}"))
        else:
            values[n] = b.clip(round(trial.suggest_float(n, b.low, b.high), 4))
    return values


class TPE(_BestSeen):
    name = "tpe"

    def __init__(self, seed_source: str, start: str, search_seed: int, sampler_seed: int):
        import optuna

        super().__init__()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # constant_liar is marked experimental
            sampler = optuna.samplers.TPESampler(seed=sampler_seed, constant_liar=True)
        self.study = optuna.create_study(direction="minimize", sampler=sampler)
        self.study.enqueue_trial(_optuna_params(box_values(start)))
        self.seed_source, self.seed = seed_source, search_seed
        self.optuna = optuna

    def ask(self) -> Job:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = self.study.ask()
            source = at(self.seed_source, _suggest(trial))
        return Job(source, self.seed, tag=trial)

    def tell(self, job: Job, result: dict) -> None:
        self.seen(job.source, result)
        if result["status"] == "ok":
            self.study.tell(job.tag, result["val_bpb"])
        else:
            self.study.tell(job.tag, state=self.optuna.trial.TrialState.FAIL)


def search_seed_of(config: RunConfig, seed_source: str) -> int:
    """The search seed evo's policy uses for this config: every method of a repetition trains on it."""
    return SearchPolicy(config, seed_source).search_seed


def make_method(name: str, *, seed_source: str, start: str, config: RunConfig, workers: int):
    """One method, seeded from config.seed, starting from the named start."""
    source = start_source(seed_source, start)
    search_seed = search_seed_of(config, seed_source)
    rng = random.Random(f"{name}-{config.seed}")
    if name == "evo":
        return Evo(config, source, workers)
    if name == "autoresearch":
        return Autoresearch(source, search_seed, rng)
    if name == "random":
        return RandomSearch(seed_source, source, search_seed, rng)
    if name == "tpe":
        return TPE(seed_source, source, search_seed, rng.randrange(2**31))
    raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")


# -- executors ---------------------------------------------------------------------------------------------------

class SurrogateExecutor:
    """Runs jobs on the surrogate as if on `workers` workers: each takes about one time unit (a little more or less,
    deterministically), and results come back in the order they would finish, so the policy sees the same
    asynchrony as on real workers."""

    def __init__(self, surrogate: Callable[[str, int], float], workers: int):
        self.surrogate, self.workers = surrogate, workers
        self.clock = 0.0
        self.running: list[tuple[float, int, Job]] = []
        self.count = 0

    @property
    def idle(self) -> bool:
        return len(self.running) < self.workers

    @property
    def busy(self) -> bool:
        return bool(self.running)

    def submit(self, job: Job) -> None:
        self.count += 1
        jitter = (int(content_hash(job.source)[:6], 16) + job.seed) % 1000 / 2500.0
        heapq.heappush(self.running, (self.clock + 0.8 + jitter, self.count, job))

    def collect(self) -> list[tuple[Job, dict]]:
        end, _, job = heapq.heappop(self.running)
        self.clock = end
        return [(job, {"status": "ok", "val_bpb": self.surrogate(job.source, job.seed)})]


def run_search(method, executor, evaluations: int, checkpoints: tuple[int, ...]) -> dict:
    """Runs method for `evaluations` training runs on executor. Returns {checkpoint: (source, reported value)} after
    each checkpoint's number of finished runs, "failed" (runs that did not finish ok) and "purposes"."""
    dispatched = finished = failed = 0
    snapshots: dict[int, tuple[str, float] | None] = {}
    purposes: dict[str, int] = {}
    while finished < evaluations:
        while executor.idle and dispatched < evaluations:
            job = method.ask()
            if job is None:
                break
            executor.submit(job)
            dispatched += 1
            purposes[job.purpose] = purposes.get(job.purpose, 0) + 1
        if not executor.busy:
            raise RuntimeError(f"{method.name} has nothing to run after {finished} of {evaluations} evaluations")
        for job, result in executor.collect():
            finished += 1
            failed += result["status"] != "ok"
            method.tell(job, result)
            if finished in checkpoints:
                snapshots[finished] = method.reported()
    return {"snapshots": snapshots, "failed": failed, "purposes": purposes}


def evo_config(operators: str = "hyper,merge", **overrides) -> RunConfig:
    """evo's setting for the benchmark: the offline operators (as --operators spells them), `evo run`'s other
    defaults, overrides on top. The search evaluations are not capped: the benchmark stops at its budget."""
    base = {"operators": parse_weights(operators), "preflight": False, "evaluations": 10**6}
    return RunConfig(**{**base, **overrides})


def with_seed(config: RunConfig, seed: int) -> RunConfig:
    return dataclasses.replace(config, seed=seed)
