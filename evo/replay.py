"""`evo replay ID`: re-evaluates the path from the seed to ID, and with --ablate removes each step from ID alone.

- seeds: every step is evaluated on the same seeds (paired): K fresh ones, or with --same-seeds each individual's
  recorded seeds (on CPU with the same thread count that reproduces the recorded val_bpb exactly)
- gains: a step's gain is the mean paired difference between its parent and itself, with a 95% t-interval; a gain
  whose interval holds 0 is within noise
- --ablate takes each step's change out of ID (reverse patch, or a three-way merge when later steps touched the
  same lines), evaluates the result on ID's seeds, and credits the step with what removing it costs
- storage: purpose `replay` (ablated variants as individuals made by `replay.ablate`), through the live run's actor
  when a run holds the store, else by this process as the store's one writer
- workers: a search's WorkerPool (evo.workers): a worker that dies is replaced, and its evaluation is stored as a
  crash
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from evo.config import ReplayConfig
from evo.errors import StoreError
from evo.sandbox.environment import passed_values
from evo.sandbox.supervise import Limits
from evo.store import LiveReader, open_view

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom; 1.96 beyond.
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def interval(diffs: list[float]) -> tuple[float, float | None]:
    """Mean of paired differences and the half-width of its 95% t-interval (None with one pair)."""
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, None
    t = _T95[len(diffs) - 2] if len(diffs) - 1 <= len(_T95) else 1.96
    return mean, t * statistics.stdev(diffs) / math.sqrt(len(diffs))


@dataclass
class Job:
    label: str
    individual: str
    source: str
    seeds: list[int]
    recorded: dict[int, float] = field(default_factory=dict)   # seed -> recorded val_bpb (for --same-seeds)
    results: dict[int, float | None] = field(default_factory=dict)


def ablate(winner: str, parent: str, child: str) -> tuple[str | None, str]:
    """winner without the change parent -> child: (source, how), or (None, why not)."""
    from genome import PatchError, apply_diff, merge3, unified_diff

    try:
        return apply_diff(winner, unified_diff(child, parent)), "reverse patch"
    except PatchError:
        merged = merge3(child, winner, parent)
        if merged.ok:
            return merged.source, "three-way merge"
        return None, f"conflict: {merged.reason}"


class _LiveSink:
    def __init__(self, actor):
        self.actor = actor

    def add_individual(self, **fields):
        import ray

        return ray.get(self.actor.record_replay.remote(fields, None))

    def add_evaluation(self, individual_id, result):
        import ray

        ray.get(self.actor.record_replay.remote(None, {**result, "individual_id": individual_id}))


class _OwnSink:
    def __init__(self, writer, run_id):
        self.writer, self.run_id = writer, run_id

    def add_individual(self, **fields):
        return self.writer.add_individual(self.run_id, **fields)

    def add_evaluation(self, individual_id, result):
        self.writer.add_evaluation(self.run_id, individual_id, result, purpose="replay", worker=result.get("worker"))


@dataclass
class Replay:
    """What a replay evaluated: the path's jobs (seed first), then one job per ablation that could be made;
    ablations lists (step number, the step, the ablated source or None, how it was made or why not)."""

    run_id: str
    individual: str
    path: list
    jobs: list[Job]
    ablations: list[tuple]


def plan(store, run_id: str, id: str, config: ReplayConfig) -> tuple[Replay, dict, dict]:
    """The jobs: every step of the path, and the ablations; returns (the replay to run, the run's state, config)."""
    path = store.lineage(run_id, id, with_source=True)
    run = store.load_run(run_id)
    used = store.seeds_used(run_id)
    fresh = []
    rng = random.Random(f"replay-{run_id}-{id}")
    count = None if config.same_seeds else (config.seeds or 3)
    while count and len(fresh) < count:
        s = rng.randrange(1, 2**31)
        if s not in used:
            fresh.append(s)
    jobs = []
    for n in path:
        recorded = store.scored_results(run_id, n.id)
        if config.same_seeds and not recorded:
            raise StoreError(f"{n.id} on the path has no recorded ok evaluation to replay")
        jobs.append(Job(f"{n.operator} {n.id}", n.id, n.source, sorted(recorded) if config.same_seeds else fresh,
                        recorded))
    ablations = []
    if config.ablate:
        winner = path[-1].source
        for i, (before, after) in enumerate(zip(path, path[1:]), 1):
            text, how = ablate(winner, before.source, after.source)
            ablations.append((i, after, text, how))
    return Replay(run_id, id, path, jobs, ablations), run.state or {}, run.config


def run_replay(db: str, run: str | None, id: str, config: ReplayConfig,
               say: Callable[[str], None] = lambda line: None, environ: Mapping[str, str] | None = None) -> Replay:
    """Replays the path from the seed to id (and its ablations, with config.ablate); say gets a line per
    evaluation. environ holds the values of the variables the run passed to its evaluations (its --env names).
    Returns what was evaluated, for the report."""
    from genome import content_hash

    if not Path(db).exists():
        raise StoreError(f"no database at {db}")
    with open_view(db) as store:
        run_id = store.run(run).run_id
        replay, state, run_config = plan(store, run_id, store.resolve(run_id, id), config)
        existing = {i: store.find_source(run_id, content_hash(text))
                    for i, _, text, _ in replay.ablations if text is not None}
        actor = store.actor if isinstance(store, LiveReader) else None
    if not state.get("dataset"):
        raise StoreError(f"run {run_id} did not record its dataset; it cannot be replayed")
    passed = passed_values(run_config.get("env") or (), environ or {})
    say(f"replaying run {run_id}: {len(replay.path)} individual(s) from the seed to {replay.individual}"
        + (f", {sum(1 for a in replay.ablations if a[2])} ablation(s)" if config.ablate else ""))
    _execute(db, actor, replay, existing, state, run_config, config, say, passed)
    return replay


def _execute(db, actor, replay: Replay, existing, state, run_config, config: ReplayConfig, say, passed: dict) -> None:
    import ray

    from evo.cluster import placement, start_ray
    from evo.store import acquire_lock, open_writer, release_lock
    from evo.task_files import fixed_files, harness_path, load_harness
    from evo.workers import WorkerPool, bundle_task, start_workers

    harness = harness_path()
    dataset = load_harness(harness).cache_dir() / "datasets" / state["dataset"]
    if not (dataset / "meta.json").is_file():
        raise StoreError(f"the run's dataset {state['dataset']} is not in the cache; prepare the same text again")
    lock = writer = None
    if actor is not None:
        sink = _LiveSink(actor)
    else:
        lock = acquire_lock(db, {"purpose": "replay"})
        writer = open_writer(db)
        sink = _OwnSink(writer, replay.run_id)
        start_ray(config.address)
    jobs, id = replay.jobs, replay.individual
    try:
        winner_seeds = jobs[-1].seeds
        for i, after, text, how in replay.ablations:
            if text is None:
                continue
            ind = existing.get(i) or sink.add_individual(
                source=text, operator="replay.ablate", parents=(id,),
                description=f"{id} without step {i} ({after.operator}: {after.description})"[:200])
            jobs.append(Job(f"without step {i}", ind, text, winner_seeds))
        where = placement(config.workers or state.get("workers"))
        bundle = ray.put(bundle_task([harness, *fixed_files(harness)], dataset))

        def start(count: int, prefix: str) -> list:
            # The run's own thread count, so that --same-seeds reproduces its numbers exactly, and its limits.
            return start_workers(bundle, count, use_gpus=where.use_gpus, cpus_per_worker=where.cpus_per_worker,
                                 threads=state.get("threads"), memory_mb=run_config.get("memory_mb") or 0,
                                 disk_mb=run_config.get("disk_mb", Limits.disk_mb),
                                 cache_root=str(load_harness(harness).cache_dir()), name_prefix=prefix, env=passed)

        pool = WorkerPool(start(where.count, "replay"), lambda i: start(1, f"replay-{i}")[0],
                          budget=ReplayConfig.budget_of(run_config), time_limit=run_config.get("time_limit"))

        def record(task, result):
            job, s = task
            sink.add_evaluation(job.individual, result)
            job.results[s] = result["val_bpb"] if result["status"] == "ok" else None
            say(f"  {job.label} seed {s}: {result['status']} {result['val_bpb']:.6f}" if result["status"] == "ok"
                else f"  {job.label} seed {s}: {result['status']} {result.get('error') or ''}")

        pool.map((((job, s), job.source, s) for job in jobs for s in job.seeds), record)
    finally:
        if writer is not None:
            writer.close()
            release_lock(lock)
            ray.shutdown()


def mean(job: Job) -> float | None:
    values = [v for v in job.results.values() if v is not None]
    return statistics.fmean(values) if values else None
