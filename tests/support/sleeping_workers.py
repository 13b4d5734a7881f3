"""Workers that only sleep, for driving the engine without training: a Ray actor method that sleeps instead of
starting the sandbox's subprocess and returns a record shaped like the sandbox's.

    pool = SimulatedWorkers(count, sleep, seed_source)
    Engine(config, store, pool.slots, pool.make, ...)      # what the WorkerPool calls: slot.evaluate.remote(...)
    pool.calls()                                           # the call id of every evaluation run (in its record's log)
    pool.stop()

Several simulated workers share one actor process (SLOTS_PER_PROCESS); each takes one evaluation at a time through
Ray, as a real worker does. val_bpb is a fixed function of the source's hyperparameters, lowest at a hidden optimum,
plus seed noise: children inherit most of their parents' fitness, so lineages grow as in a search.
"""

import asyncio
import functools
import hashlib
import math
import os
import random
import time
import uuid
from types import SimpleNamespace

import ray

SLOTS_PER_PROCESS = 8


def hidden_optimum(seed_source: str) -> dict[str, float]:
    """Where the simulated val_bpb is lowest: each positive numeric hyperparameter of the seed times a factor
    between 1/2 and 2 fixed by its name."""
    from genome import values

    out = {}
    for name, v in values(seed_source).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            out[name] = v * 2 ** (int(hashlib.sha256(name.encode()).hexdigest()[:4], 16) / 2**15 - 1)
    return out


def simulated_bpb(source: str, seed: int, optimum: dict[str, float]) -> float:
    """A fixed function of the source's hyperparameters (the further from the hidden optimum, the higher), plus
    seed noise of std 0.01, so a child inherits most of its parent's fitness and lineages deepen as in a search."""
    from genome import values

    found = values(source)
    loss = 0.0
    for name, best in optimum.items():
        v = found.get(name)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
        loss += min(1.0, math.log(v / best) ** 2) if ok else 1.0
    digest = hashlib.sha256(source.encode()).hexdigest()
    return round(1.6 + 0.05 * loss + random.Random(f"{seed}-{digest}").gauss(0, 0.01), 6)


@ray.remote(num_cpus=0.01, max_restarts=0)
class SleepingWorkers:
    """Simulated workers sharing one process: evaluate() sleeps and returns a sandbox-shaped record."""

    def __init__(self, sleep: float, optimum: dict[str, float]):
        self.sleep, self.optimum = sleep, optimum
        self.served: list[str] = []
        self.node_id = ray.get_runtime_context().get_node_id()

    async def evaluate(self, slot: str, source: str, seed: int, budget, time_limit=None, preflight: bool = False,
                       test: bool = False) -> dict:
        started = time.time()
        await asyncio.sleep(self.sleep)
        call = uuid.uuid4().hex
        self.served.append(call)
        val_bpb = simulated_bpb(source, seed, self.optimum)
        return {"status": "ok", "val_bpb": val_bpb, "test_bpb": val_bpb - 0.02 if test else None,
                "training_seconds": self.sleep,
                "eval_seconds": 0.0, "total_seconds": time.time() - started, "tokens": budget.tokens,
                "num_steps": 1, "num_params": 1000, "peak_memory_mb": 1.0, "device": "simulated", "seed": seed,
                **budget.fields(), "error": None, "shielded": None,
                "log": f"call {call}", "worker": f"{slot}@{self.node_id[:8]}", "node": "simulated",
                "started_at": started, "finished_at": time.time(), "cuda_visible_devices": None}

    async def calls(self) -> list[str]:
        return list(self.served)

    async def describe(self, slot: str) -> dict:
        return {"name": slot, "node": "simulated", "node_id": self.node_id, "pid": os.getpid(),
                "cuda_visible_devices": None, "conditions": {"threads": 1, "device": "simulated"}}


class Slot:
    """One simulated worker as the WorkerPool holds it: evaluate.remote(...) runs on its shared process."""

    def __init__(self, actor, name: str):
        self.actor, self.name = actor, name
        self.evaluate = SimpleNamespace(remote=functools.partial(actor.evaluate.remote, name))
        self.describe = SimpleNamespace(remote=functools.partial(actor.describe.remote, name))


class SimulatedWorkers:
    def __init__(self, count: int, sleep: float, seed_source: str):
        self.sleep, self.optimum = sleep, hidden_optimum(seed_source)
        self.actors = [SleepingWorkers.remote(sleep, self.optimum) for _ in range(-(-count // SLOTS_PER_PROCESS))]
        self.slots = [Slot(self.actors[i % len(self.actors)], f"sim-{i}") for i in range(count)]

    def make(self, index: int) -> Slot:
        """A replacement for a dead worker (the pool's make_worker): a process of its own."""
        actor = SleepingWorkers.remote(self.sleep, self.optimum)
        self.actors.append(actor)
        return Slot(actor, f"sim-{index}-new")

    def calls(self) -> list[str]:
        return [c for calls in ray.get([a.calls.remote() for a in self.actors]) for c in calls]

    def stop(self) -> None:
        for a in self.actors:
            ray.kill(a)
