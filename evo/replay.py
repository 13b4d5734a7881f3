"""`evo replay ID`: re-evaluates the path from the seed to ID, and with --ablate removes each step from ID alone.

Every step is evaluated on the same seeds (paired): K fresh ones, or with --same-seeds each individual's recorded
seeds (on CPU with the same thread count that reproduces the recorded val_bpb exactly). A step's gain is the mean
paired difference between its parent and itself, with a 95% t-interval; a gain whose interval holds 0 is within
noise. --ablate takes each step's change out of ID (reverse patch, or a three-way merge when later steps touched
the same lines), evaluates the result on ID's seeds, and credits the step with what removing it costs.

Replay evaluations are stored with purpose `replay` (ablated variants as individuals made by `replay.ablate`),
through the live driver when a run holds the store, else by this process as the store's one writer. They run on a
search's WorkerPool (evo.workers): a worker that dies is replaced, and its evaluation is stored as a crash.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from evo import lookup
from evo.errors import ConfigError, StoreError

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


def _recorded(q, run_id: str, id: str) -> dict[int, float]:
    rows = q(f"SELECT seed, val_bpb FROM evaluations WHERE run_id = '{run_id}' AND individual_id = '{id}' "
             f"AND status = 'ok' AND purpose IN ('search', 'confirm', 'noise') ORDER BY id")[1]
    return {int(s): v for s, v in rows}


def plan(q, run_id: str, id: str, seeds: int | None, same_seeds: bool, do_ablate: bool):
    """The jobs: every step of the path, and the ablations; returns (path, jobs, ablation notes, run state)."""
    path = lookup.path_from_seed(q, run_id, id)
    sources = {n.id: lookup.source(q, run_id, n.id) for n in path}
    state_rows = q(f"SELECT state, config FROM runs WHERE run_id = '{run_id}'")[1]
    state = json.loads(state_rows[0][0] or "{}")
    config = json.loads(state_rows[0][1])
    used = {int(r[0]) for r in q(f"SELECT DISTINCT seed FROM evaluations WHERE run_id = '{run_id}' "
                                 "AND seed IS NOT NULL")[1]}
    fresh = []
    rng = random.Random(f"replay-{run_id}-{id}")
    while seeds and len(fresh) < seeds:
        s = rng.randrange(1, 2**31)
        if s not in used:
            fresh.append(s)
    jobs = []
    for n in path:
        recorded = _recorded(q, run_id, n.id)
        if same_seeds and not recorded:
            raise StoreError(f"{n.id} on the path has no recorded ok evaluation to replay")
        jobs.append(Job(f"{n.operator} {n.id}", n.id, sources[n.id], sorted(recorded) if same_seeds else fresh,
                        recorded))
    notes = []
    if do_ablate:
        winner = sources[path[-1].id]
        for i, (before, after) in enumerate(zip(path, path[1:]), 1):
            text, how = ablate(winner, sources[before.id], sources[after.id])
            notes.append((i, after, text, how))
    return path, jobs, notes, state, config


def run_replay(args) -> int:
    from genome import content_hash

    if args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1; got {args.seeds}")
    seeds = None if args.same_seeds else (args.seeds or 3)
    with lookup.store_query(args.db) as q:
        run_id = lookup.latest_run(q, args.run)
        id = lookup.resolve(q, run_id, args.id)
        path, jobs, notes, state, config = plan(q, run_id, id, seeds, args.same_seeds, args.ablate)
        ablations = []
        existing = {}
        for i, after, text, how in notes:
            if text is None:
                ablations.append((i, after, None, how))
                continue
            rows = q(f"SELECT id FROM individuals WHERE run_id = '{run_id}' AND source_hash = "
                     f"'{content_hash(text)}' AND status <> 'duplicate' LIMIT 1")[1]
            existing[i] = rows[0][0] if rows else None
            ablations.append((i, after, text, how))
    if not state.get("dataset"):
        raise StoreError(f"run {run_id} did not record its dataset; it cannot be replayed")
    print(f"replaying run {run_id}: {len(path)} individual(s) from the seed to {id}"
          + (f", {sum(1 for a in ablations if a[2])} ablation(s)" if args.ablate else ""), file=sys.stderr)
    return _execute(args, run_id, id, jobs, ablations, existing, state, config)


def _execute(args, run_id, id, jobs, ablations, existing, state, config) -> int:
    import ray

    from evo.launch import placement, start_ray
    from evo.status import live_actor
    from evo.store import acquire_lock, open_writer, release_lock
    from evo.task import fixed_files, harness_path, load_harness
    from evo.workers import WorkerPool, bundle_task, start_workers

    harness = harness_path()
    dataset = load_harness(harness).cache_dir() / "datasets" / state["dataset"]
    if not (dataset / "meta.json").is_file():
        raise StoreError(f"the run's dataset {state['dataset']} is not in the cache; prepare the same text again")
    actor = live_actor(args.db)
    lock = writer = None
    if actor is not None:
        sink = _LiveSink(actor)
    else:
        lock = acquire_lock(args.db, {"purpose": "replay"})
        writer = open_writer(args.db)
        sink = _OwnSink(writer, run_id)
        start_ray(args.address)
    try:
        winner_seeds = jobs[-1].seeds
        for i, after, text, how in ablations:
            if text is None:
                continue
            ind = existing.get(i) or sink.add_individual(
                source=text, operator="replay.ablate", parents=(id,),
                description=f"{id} without step {i} ({after.operator}: {after.description})"[:200])
            jobs.append(Job(f"without step {i}", ind, text, winner_seeds))
        where = placement(args.workers or state.get("workers"))
        bundle = ray.put(bundle_task([harness, *fixed_files(harness)], dataset))

        def start(count: int, prefix: str) -> list:
            # The run's own thread count, so that --same-seeds reproduces its numbers exactly.
            return start_workers(bundle, count, use_gpus=where["use_gpus"], cpus_per_worker=where["cpus_per_worker"],
                                 threads=state.get("threads"), memory_mb=0,
                                 cache_root=str(load_harness(harness).cache_dir()), name_prefix=prefix)

        pool = WorkerPool(start(where["count"], "replay"), lambda i: start(1, f"replay-{i}")[0],
                          budget_seconds=config.get("budget_seconds"), budget_tokens=config.get("budget_tokens"),
                          time_limit=config.get("time_limit"))

        def record(task, result):
            job, s = task
            sink.add_evaluation(job.individual, result)
            job.results[s] = result["val_bpb"] if result["status"] == "ok" else None
            print(f"  {job.label} seed {s}: {result['status']} "
                  f"{result['val_bpb']:.6f}" if result["status"] == "ok" else
                  f"  {job.label} seed {s}: {result['status']} {result.get('error') or ''}", file=sys.stderr)

        pool.map((((job, s), job.source, s) for job in jobs for s in job.seeds), record)
    finally:
        if writer is not None:
            writer.close()
            release_lock(lock)
            ray.shutdown()
    _report(jobs, ablations, args)
    return 0


def _mean(job: Job) -> float | None:
    values = [v for v in job.results.values() if v is not None]
    return statistics.fmean(values) if values else None


def _report(jobs, ablations, args) -> None:
    path_jobs = [j for j in jobs if not j.label.startswith("without")]
    print(f"{'step':<40} {'val_bpb':>10} {'gain':>10} {'95% CI':>10}  verdict")
    for before, after in zip([None] + path_jobs, path_jobs):
        mean = _mean(after)
        line = f"{after.label:<40} {mean if mean is not None else float('nan'):>10.4f}"
        if before is not None:
            pairs = [before.results[s] - after.results[s] for s in after.seeds
                     if before.results.get(s) is not None and after.results.get(s) is not None]
            if pairs:
                gain, half = interval(pairs)
                verdict = "n/a (one seed)" if half is None else \
                    "within noise" if abs(gain) <= half else ("gain" if gain > 0 else "loss")
                line += f" {gain:>+10.4f} {'±%.4f' % half if half is not None else '-':>10}  {verdict}"
        print(line)
    if args.same_seeds:
        diffs = [abs(j.results[s] - j.recorded[s]) for j in path_jobs for s in j.seeds
                 if j.results.get(s) is not None and s in j.recorded]
        if diffs:
            print(f"same seeds: {len(diffs)} evaluations replayed; largest difference from the recorded val_bpb "
                  f"{max(diffs):.2e}" + (" (reproduced exactly)" if max(diffs) == 0 else ""))
    if ablations:
        winner = path_jobs[-1]
        print(f"\nablation of {winner.individual}: what removing each step costs (positive: the step helped)")
        for i, after, text, how in ablations:
            job = next((j for j in jobs if j.label == f"without step {i}"), None)
            if job is None:
                print(f"  step {i} {after.operator:<16} cannot be removed: {how}")
                continue
            pairs = [job.results[s] - winner.results[s] for s in job.seeds
                     if job.results.get(s) is not None and winner.results.get(s) is not None]
            if not pairs:
                print(f"  step {i} {after.operator:<16} no ok evaluation")
                continue
            cost, half = interval(pairs)
            verdict = "n/a (one seed)" if half is None else "within noise" if abs(cost) <= half else \
                ("earned its gain" if cost > 0 else "hurt")
            print(f"  step {i} {after.operator:<16} {cost:+.4f} {'±%.4f' % half if half is not None else '':>9}  "
                  f"{verdict}  ({how}; {after.description[:60]})")
