"""Ray worker actors: each holds one GPU (or a share of the CPUs) and runs one evaluation at a time; and the pool
that runs evaluations on them for `evo run` and `evo replay`.

- no shared filesystem: the harness files and the prepared dataset travel once, as a TaskBundle in Ray's object
  store, and each worker writes them into its own node's cache when they are missing there
- with each task: the child's source, its seed, the run's Budget (evo.sandbox.budget) and time limit
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from evo import conditions
from evo.errors import EvoError, first_line
from evo.sandbox import evaluation as sandbox
from evo.sandbox.budget import Budget
from evo.sandbox.evaluation import EvalRequest
from evo.sandbox.supervise import Limits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskBundle:
    """The fixed part of every evaluation: the harness files and one prepared dataset, as bytes."""

    harness_files: dict[str, bytes]       # file name -> contents; "prepare.py" first, then e.g. "kernels.py"
    dataset_key: str                      # the dataset folder's name (a digest of its inputs)
    dataset_files: dict[str, bytes]       # path relative to the dataset folder -> contents

    @property
    def digest(self) -> str:
        return conditions.files_digest({**self.harness_files, **self.dataset_files})


def bundle_task(harness_files: list[Path], dataset: Path) -> TaskBundle:
    """Reads the harness files and the prepared dataset folder into a bundle."""
    files = {}
    for path in sorted(p for p in dataset.rglob("*") if p.is_file() and not p.name.startswith(".")):
        files[str(path.relative_to(dataset))] = path.read_bytes()
    return TaskBundle({p.name: p.read_bytes() for p in harness_files}, dataset.name, files)


def _intact(bundle: TaskBundle, base: Path) -> bool:
    """Whether the bundle written at base still holds exactly the bundle's files (nothing changed them since)."""
    files = {**{f"harness/{k}": v for k, v in bundle.harness_files.items()},
             **{f"datasets/{bundle.dataset_key}/{k}": v for k, v in bundle.dataset_files.items()}}
    try:
        return all(hashlib.sha256((base / rel).read_bytes()).digest() == hashlib.sha256(data).digest()
                   for rel, data in files.items())
    except OSError:
        return False


def materialize(bundle: TaskBundle, root: Path) -> tuple[Path, tuple[Path, ...], Path, bool]:
    """Writes the bundle under root (once per content, again if its files changed since), returns (prepare.py,
    other harness files, dataset folder, whether a damaged copy was written again)."""
    base = root / "bundles" / bundle.digest
    dataset = base / "datasets" / bundle.dataset_key
    done = base / ".complete"
    repaired = done.exists() and not _intact(bundle, base)
    if repaired:
        shutil.rmtree(base, ignore_errors=True)
    if not done.exists():
        tmp = root / "bundles" / f".{bundle.digest}.tmp-{os.getpid()}"
        for rel, data in {**{f"harness/{k}": v for k, v in bundle.harness_files.items()},
                          **{f"datasets/{bundle.dataset_key}/{k}": v for k, v in bundle.dataset_files.items()}}.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
        (tmp / ".complete").write_text(json.dumps({"written": time.time()}))
        try:
            os.replace(tmp, base)
        except OSError:  # another worker on this node got there first
            shutil.rmtree(tmp, ignore_errors=True)
    harness = [base / "harness" / name for name in bundle.harness_files]
    return harness[0], tuple(harness[1:]), dataset, repaired


REPAIRED = "the task files in the cache were damaged (changed or missing) and were written again from the run's copy"


@ray.remote(max_restarts=0)
class Worker:
    """Evaluates children one at a time. The GPU it holds (if any) is the only one its subprocesses see."""

    def __init__(self, name: str, bundle: TaskBundle, cache_root: str, threads: int | None, memory_mb: float,
                 require_shield: bool = False, env: dict | None = None, disk_mb: float = Limits.disk_mb):
        self.name = name
        self.require_shield = require_shield
        self.threads = threads
        self.memory_mb, self.disk_mb = memory_mb, disk_mb
        self.bundle, self.cache_root = bundle, Path(cache_root)
        self.harness, self.fixed, self.dataset, self.repaired = materialize(bundle, self.cache_root)
        gpus = ray.get_gpu_ids()
        # the variables the run passes (--env), then the GPU this worker holds
        self.env = {**(env or {}), **({"CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in gpus)} if gpus else {})}
        self.node = socket.gethostname()
        self.node_id = ray.get_runtime_context().get_node_id()
        self.conditions = {**conditions.machine(threads, self.env.get("CUDA_VISIBLE_DEVICES")),
                           **conditions.task(bundle.harness_files, bundle.dataset_key)}

    def describe(self) -> dict:
        return {"name": self.name, "node": self.node, "node_id": self.node_id, "pid": os.getpid(),
                "cuda_visible_devices": self.env.get("CUDA_VISIBLE_DEVICES"), "conditions": self.conditions,
                "repaired": self.repaired}

    def evaluate(self, source: str, seed: int, budget: Budget, time_limit: float | None = None,
                 preflight: bool = False, test: bool = False) -> dict:
        """Trains and scores one child (after a pre-flight when asked; with test_bpb too when test); returns the
        sandbox's result with where and when it ran."""
        started = time.time()
        # The task files on disk are checked before each evaluation (a few MB hashed: milliseconds): a copy damaged
        # or removed since (a failing disk, a cleaned cache) is written again, so no score is made on other files.
        self.harness, self.fixed, self.dataset, repaired = materialize(self.bundle, self.cache_root)
        request = EvalRequest(source=source, budget=budget, seed=seed,
                              harness=self.harness, dataset=self.dataset, time_limit=time_limit,
                              threads=self.threads, memory_mb=self.memory_mb, disk_mb=self.disk_mb,
                              fixed_files=self.fixed, env=self.env,
                              require_shield=self.require_shield, cache_root=self.cache_root, test=test)
        checked = sandbox.preflight(request) if preflight else None
        outcome = checked if checked is not None and checked.status != "ok" else sandbox.evaluate(request)
        result = outcome.to_dict(with_log=True)
        if repaired:
            result["log"] = f"evo: {REPAIRED}\n" + (result.get("log") or "")
        if not _intact(self.bundle, self.cache_root / "bundles" / self.bundle.digest):
            result.update(status="crash", val_bpb=None, test_bpb=None,
                          error="the task files in the cache changed during this evaluation; its score is not used")
        result.update(worker=f"{self.name}@{self.node_id[:8]}", node=self.node, started_at=started,
                      finished_at=time.time(), conditions=self.conditions,
                      cuda_visible_devices=self.env.get("CUDA_VISIBLE_DEVICES"))
        return result


def start_workers(bundle_ref, count: int, *, use_gpus: bool, cpus_per_worker: float, threads: int | None,
                  memory_mb: float, cache_root: str, name_prefix: str = "worker", require_shield: bool = False,
                  env: dict | None = None, disk_mb: float = Limits.disk_mb) -> list:
    """Starts count worker actors: one GPU each when use_gpus, else cpus_per_worker CPUs each. With
    require_shield, a worker on a node where training cannot be shielded fails each evaluation instead. env: the
    variables named with --env and their values, for every evaluation's training and scoring. memory_mb, disk_mb:
    what each phase of an evaluation may use (--memory-mb, --disk-mb)."""
    options = {"num_gpus": 1, "num_cpus": 0} if use_gpus else {"num_cpus": cpus_per_worker}
    return [Worker.options(**options).remote(f"{name_prefix}-{i}", bundle_ref, cache_root, threads, memory_mb,
                                             require_shield, dict(env or {}), disk_mb)
            for i in range(count)]


@dataclass
class Finished:
    """An evaluation that came back: the caller's task, the evaluation record, the worker's index, when it was
    handed out (time.time()) and how long it took; lost when Ray returned no result of the evaluation's own (its
    worker or node died)."""

    task: Any
    result: dict
    worker: int
    started: float
    seconds: float
    lost: bool = False


@dataclass
class _Running:
    task: Any
    seed: int
    worker: int
    started: float


class WorkerPool:
    """Runs evaluations on worker actors, one at a time on each: submit() hands a task to a free worker, collect()
    returns what finished. The tasks are the caller's own objects, handed back with their results.

    A worker gets tasks only once Ray has placed and started it; one still waiting for a node after
    PLACEMENT_WAIT seconds is reported in one line (notes) and left out, and a pool none of whose workers could be
    placed raises EvoError. A worker that died is replaced (make_worker(index)) and its evaluation comes back as a
    crash with the reason; interrupt() kills the busy workers and returns their evaluations as interrupted."""

    PLACEMENT_WAIT = 60.0

    def __init__(self, workers: list, make_worker: Callable[[int], Any], *, budget: Budget,
                 time_limit: float | None, asks: str = "its share"):
        self.workers = list(workers)
        self.make_worker = make_worker
        self.budget, self.time_limit = budget, time_limit
        self.asks = asks                       # what one worker asks of a node, for the report
        self.free = set(range(len(self.workers)))
        self.running: dict[Any, _Running] = {}
        self.ready: set[int] = set()
        self.notes: list[str] = []             # what the user should hear about the workers, one line each
        self.conditions: dict | None = None    # the first started worker's (evo.conditions)
        self._machines: set[tuple] = set()
        self._pending = {w: (self.workers[w].describe.remote(), time.time()) for w in range(len(self.workers))}
        self._reported: set[int] = set()

    @property
    def size(self) -> int:
        return len(self.workers)

    def _poll(self) -> None:
        """Marks the workers Ray has started; reports those it could not place in time."""
        if not self._pending:
            return
        refs = {ref: w for w, (ref, _) in self._pending.items()}
        done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
        for ref in done:
            w = refs[ref]
            del self._pending[w]
            try:
                described = ray.get(ref)
                conditions = described.get("conditions") or {}
                if described.get("repaired"):
                    self.notes.append(f"worker-{w} on {described.get('node')}: {REPAIRED}")
                self.ready.add(w)
                self.conditions = self.conditions or conditions
                self._note_speed(conditions)
            except ray.exceptions.RayError as e:
                self.notes.append(f"worker-{w} failed to start ({first_line(e, 200)}); "
                                  f"going on with the others")
        now = time.time()
        for w, (_, since) in self._pending.items():
            if w not in self._reported and now - since > self.PLACEMENT_WAIT:
                self._reported.add(w)
                self.notes.append(f"worker-{w} was not placed within {self.PLACEMENT_WAIT:g} s: it asks for "
                                  f"{self.asks}, more than any node has free; going on without it")
        if not self.ready and not self.running and all(w in self._reported for w in self._pending):
            raise EvoError(f"no worker could be placed: each asks for {self.asks}, more than any node of the "
                           f"cluster has free; give --workers a larger count (smaller shares) or add nodes")

    def _note_speed(self, conditions: dict) -> None:
        machine = (conditions.get("cpu"), conditions.get("gpu"))
        if machine not in self._machines and self._machines and self.budget.seconds is not None:
            machines = sorted(self._machines | {machine}, key=str)
            self.notes.append("the workers run on different machines "
                              f"({'; '.join(f'{c}' + (f' + {g}' if g else '') for c, g in machines)}): "
                              "with a seconds budget the faster ones train their children further "
                              "(a token budget does not favour them)")
        self._machines.add(machine)

    @property
    def idle(self) -> bool:
        """Whether a started worker is free for the next task."""
        self._poll()
        return bool(self.free & self.ready)

    @property
    def running_count(self) -> int:
        """Evaluations a worker has now."""
        return len(self.running)

    def submit(self, task: Any, source: str, seed: int, preflight: bool = False, test: bool = False) -> None:
        """Starts one evaluation of source on seed on a free worker (a pre-flight first when asked; measuring
        test_bpb too when test)."""
        w = min(self.free & self.ready)
        self.free.discard(w)
        ref = self.workers[w].evaluate.remote(source, seed, self.budget, self.time_limit, preflight=preflight,
                                              test=test)
        self.running[ref] = _Running(task, seed, w, time.time())

    def finished(self) -> bool:
        """Whether an evaluation has finished and waits for collect()."""
        return bool(self.running) and bool(ray.wait(list(self.running), num_returns=1, timeout=0)[0])

    def wait(self, timeout: float | None) -> None:
        """Until an evaluation finishes or timeout seconds pass (None: until one finishes)."""
        refs = list(self.running)
        if refs:
            ray.wait(refs, num_returns=1, timeout=timeout)
        else:  # nothing to wait for yet (workers starting): do not spin
            time.sleep(0.05 if timeout is None else timeout / 5)

    def collect(self, timeout: float | None = 0) -> list[Finished]:
        """The evaluations that finished (waiting up to timeout for all of them); their workers are free again."""
        if not self.running:
            return []
        done, _ = ray.wait(list(self.running), num_returns=len(self.running), timeout=timeout)
        finished = []
        for ref in done:
            job = self.running.pop(ref)
            lost = True
            try:
                result = ray.get(ref)
                lost = False
            except ray.exceptions.RayActorError as e:
                result = self._no_result(job, "crash", f"worker died during the evaluation: {first_line(e)}")
                self.workers[job.worker] = self.make_worker(job.worker)
                self.ready.discard(job.worker)
                self._pending[job.worker] = (self.workers[job.worker].describe.remote(), time.time())
            except ray.exceptions.RayError as e:
                result = self._no_result(job, "crash", f"evaluation failed in Ray: {first_line(e)}")
            self.free.add(job.worker)
            finished.append(Finished(job.task, result, job.worker, job.started, time.time() - job.started, lost))
        return finished

    def interrupt(self) -> list[Finished]:
        """Kills the busy workers; returns their evaluations as interrupted."""
        stopped = []
        for job in self.running.values():
            try:
                ray.kill(self.workers[job.worker])
            except (ValueError, ray.exceptions.RayError) as e:  # not an actor (a stand-in), or one Ray no longer has
                log.info("worker-%d was not killed for the stop: %s", job.worker, first_line(e, typed=True))
            stopped.append(Finished(job.task, self._no_result(job, "interrupted", "the run was stopped"), job.worker,
                                    job.started, time.time() - job.started))
        self.running.clear()
        return stopped

    def map(self, items: Iterable[tuple[Any, str, int]], on_result: Callable[[Any, dict], None]) -> None:
        """Runs every (task, source, seed) to its end, in order as workers free up, and calls on_result(task,
        result) as each finishes."""
        queue = deque(items)
        while queue or self.running:
            while self.idle and queue:
                task, source, seed = queue.popleft()
                self.submit(task, source, seed)
            self.wait(None)
            for done in self.collect(0):
                on_result(done.task, done.result)

    def _no_result(self, job: _Running, status: str, error: str) -> dict:
        """The evaluation record of a job whose worker returned nothing (it died, or the run was stopped)."""
        return {"status": status, "error": error, "seed": job.seed, "worker": f"worker-{job.worker}",
                **self.budget.fields()}
