"""Ray worker actors: each holds one GPU (or a share of the CPUs) and runs one evaluation at a time.

Nothing relies on a shared filesystem: the harness files and the prepared dataset travel once, as a TaskBundle in
Ray's object store, and each worker writes them into its own node's cache when they are missing there. A child's
source travels with each task.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import ray

from evo import sandbox
from evo.sandbox import Budget, EvalRequest


@dataclass(frozen=True)
class TaskBundle:
    """The fixed part of every evaluation: the harness files and one prepared dataset, as bytes."""

    harness_files: dict[str, bytes]       # file name -> contents; "prepare.py" first, then e.g. "kernels.py"
    dataset_key: str                      # the dataset folder's name (a digest of its inputs)
    dataset_files: dict[str, bytes]       # path relative to the dataset folder -> contents

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for name, data in sorted({**self.harness_files, **self.dataset_files}.items()):
            h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        return h.hexdigest()[:16]


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


def materialize(bundle: TaskBundle, root: Path) -> tuple[Path, tuple[Path, ...], Path]:
    """Writes the bundle under root (once per content, again if its files changed since), returns (prepare.py,
    other harness files, dataset folder)."""
    base = root / "bundles" / bundle.digest
    dataset = base / "datasets" / bundle.dataset_key
    done = base / ".complete"
    if done.exists() and not _intact(bundle, base):
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
    return harness[0], tuple(harness[1:]), dataset


@ray.remote(max_restarts=0)
class Worker:
    """Evaluates children one at a time. The GPU it holds (if any) is the only one its subprocesses see."""

    def __init__(self, name: str, bundle: TaskBundle, cache_root: str, threads: int | None, memory_mb: float,
                 require_shield: bool = False):
        self.name = name
        self.require_shield = require_shield
        self.threads = threads
        self.memory_mb = memory_mb
        self.harness, self.fixed, self.dataset = materialize(bundle, Path(cache_root))
        gpus = ray.get_gpu_ids()
        self.env = {"CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in gpus)} if gpus else {}
        self.node = socket.gethostname()
        self.node_id = ray.get_runtime_context().get_node_id()

    def describe(self) -> dict:
        return {"name": self.name, "node": self.node, "node_id": self.node_id, "pid": os.getpid(),
                "cuda_visible_devices": self.env.get("CUDA_VISIBLE_DEVICES")}

    def evaluate(self, source: str, seed: int, budget_seconds: float | None, budget_tokens: int | None,
                 time_limit: float | None = None, preflight: bool = False) -> dict:
        """Trains and scores one child (after a pre-flight when asked); returns the sandbox's result with where
        and when it ran."""
        started = time.time()
        request = EvalRequest(source=source, budget=Budget(seconds=budget_seconds, tokens=budget_tokens), seed=seed,
                              harness=self.harness, dataset=self.dataset, time_limit=time_limit,
                              threads=self.threads, memory_mb=self.memory_mb, fixed_files=self.fixed, env=self.env,
                              require_shield=self.require_shield)
        checked = sandbox.preflight(request) if preflight else None
        outcome = checked if checked is not None and checked.status != "ok" else sandbox.evaluate(request)
        result = outcome.to_dict(with_log=True)
        result.update(worker=f"{self.name}@{self.node_id[:8]}", node=self.node, started_at=started,
                      finished_at=time.time(),
                      cuda_visible_devices=self.env.get("CUDA_VISIBLE_DEVICES"))
        return result


def start_workers(bundle_ref, count: int, *, use_gpus: bool, cpus_per_worker: float, threads: int | None,
                  memory_mb: float, cache_root: str, name_prefix: str = "worker", require_shield: bool = False) -> list:
    """Starts count worker actors: one GPU each when use_gpus, else cpus_per_worker CPUs each. With
    require_shield, a worker on a node where training cannot be shielded fails each evaluation instead."""
    options = {"num_gpus": 1, "num_cpus": 0} if use_gpus else {"num_cpus": cpus_per_worker}
    return [Worker.options(**options).remote(f"{name_prefix}-{i}", bundle_ref, cache_root, threads, memory_mb,
                                             require_shield)
            for i in range(count)]
