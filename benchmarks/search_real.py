"""The real evaluation path of benchmarks/search.py: evo's Ray worker actors and WorkerPool (the ones `evo run` and
`evo replay` use), running every method's jobs through the sandbox and the harness, with a file of finished
evaluations so that a stopped benchmark resumes without training anything twice.

On CPU an evaluation is deterministic at a fixed thread count (every worker here has the same), so a source
trained on a seed it was already trained on (by another method, or before a stop) under the same harness is taken
from the file. It still counts against the budget of the method that asked for it. The benchmark's final
re-evaluations (purpose "benchmark") also measure the test split; no method's search ever sees it.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from benchmarks.search_methods import Job
from genome import content_hash

KEPT = ("status", "val_bpb", "test_bpb", "error", "training_seconds", "total_seconds", "tokens")


class EvaluationFile:
    """Finished evaluations, one JSON line each, keyed by (source hash, seed, token budget, harness); only ok ones
    are reused (a timeout on a loaded machine may not happen again). harness: a digest of the harness files (another
    prepare.py may score the same model differently)."""

    def __init__(self, path: Path, budget_tokens: int, harness: str | None = None):
        self.path, self.budget, self.harness = Path(path), budget_tokens, harness
        self.known: dict[tuple[str, int], dict] = {}
        self.failed = 0
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    r = json.loads(line)
                    if r.get("budget_tokens") == budget_tokens and r.get("harness") == harness:
                        self.failed += r["status"] != "ok"
                        if r["status"] == "ok":
                            self.known[(r["hash"], r["seed"])] = r

    def get(self, source: str, seed: int) -> dict | None:
        return self.known.get((content_hash(source), seed))

    def add(self, source: str, seed: int, result: dict, purpose: str) -> None:
        record = {"hash": content_hash(source), "seed": seed, "budget_tokens": self.budget, "harness": self.harness,
                  "purpose": purpose,
                  **{k: result.get(k) for k in KEPT}, "source": source}
        if result["status"] == "ok":
            self.known[(record["hash"], seed)] = record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def records(self) -> list[dict]:
        return list(self.known.values())


class RealExecutor:
    """Jobs on the WorkerPool; a job already in the evaluation file comes back at once without a worker."""

    def __init__(self, pool, evaluations: EvaluationFile, on_result=None):
        self.pool, self.file, self.on_result = pool, evaluations, on_result
        self.ready: list[tuple[Job, dict]] = []
        self.trained = 0

    @property
    def idle(self) -> bool:
        return self.pool.idle

    @property
    def busy(self) -> bool:
        return bool(self.ready or self.pool.running)

    def submit(self, job: Job) -> None:
        test = job.purpose == "benchmark"
        known = self.file.get(job.source, job.seed)
        if known is not None and (known.get("test_bpb") is not None or not test):
            self.ready.append((job, {k: known.get(k) for k in KEPT}))
        else:
            self.pool.submit(job, job.source, job.seed, test=test)

    def collect(self) -> list[tuple[Job, dict]]:
        if self.ready:
            out, self.ready = self.ready, []
            return out
        self.pool.wait(None)
        out = []
        for done in self.pool.collect(0):
            result = {k: done.result.get(k) for k in KEPT}
            self.file.add(done.task.source, done.task.seed, result, done.task.purpose)
            self.trained += 1
            if self.on_result:
                self.on_result(done.task, result, done.seconds)
            out.append((done.task, result))
        return out


@contextmanager
def real_executor(evaluations: EvaluationFile, *, workers: int | None, budget_tokens: int, on_result=None):
    """Starts local Ray and `workers` Worker actors on the prepared dataset (prepared first if there is none), as
    `evo run` places them, and yields a RealExecutor over them."""
    import ray

    from evo.cluster import placement, start_ray
    from evo.evaluate_file import ensure_dataset
    from evo.sandbox.budget import Budget
    from evo.task_files import fixed_files, harness_path, load_harness
    from evo.workers import WorkerPool, bundle_task, start_workers

    harness = harness_path()
    dataset, _ = ensure_dataset(harness)
    start_ray(None)
    try:
        where = placement(workers)
        bundle = ray.put(bundle_task([harness, *fixed_files(harness)], dataset))
        cache_root = str(load_harness(harness).cache_dir())

        def start(count: int, prefix: str) -> list:
            return start_workers(bundle, count, use_gpus=where.use_gpus, cpus_per_worker=where.cpus_per_worker,
                                 threads=where.threads, memory_mb=0, cache_root=cache_root, name_prefix=prefix)

        pool = WorkerPool(start(where.count, "bench"), lambda i: start(1, f"bench-{i}")[0],
                          budget=Budget(tokens=budget_tokens), time_limit=None)
        while not pool.idle:    # the pool hands out work only once Ray has started a worker
            pool.wait(1.0)
        yield RealExecutor(pool, evaluations, on_result)
    finally:
        ray.shutdown()


def evaluate_all(executor, jobs: list[Job]) -> list[dict]:
    """Runs jobs to their end on executor, as workers free up; results in the jobs' order."""
    results: dict[int, dict] = {}
    queue = list(jobs)
    index = {id(j): i for i, j in enumerate(jobs)}
    while len(results) < len(jobs):
        while queue and executor.idle:
            executor.submit(queue.pop(0))
        for job, result in executor.collect():
            results[index[id(job)]] = result
    return [results[i] for i in range(len(jobs))]
