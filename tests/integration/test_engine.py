"""The engine (evo.engine) on real Ray with workers that only sleep (tests/support/sleeping_workers.py) and a real
store: how soon a finished worker is back at work."""

import os
import time

import pytest
import ray

from evo.config import RunConfig
from evo.engine import Engine
from evo.store import open_writer
from operators.registry import REGISTRY
from tests.support.genomes import seed_source
from tests.support.sleeping_workers import SimulatedWorkers

SLOW = 0.3   # seconds each stored evaluation takes on the slow disk


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


class SlowDisk:
    """The real store, on a disk where each evaluation takes SLOW seconds to store; keeps when each was stored."""

    def __init__(self, store):
        self.store = store
        self.stored: list[tuple[str, float]] = []   # (the evaluation's call id, when its commit returned)

    def __getattr__(self, name):
        return getattr(self.store, name)

    def add_evaluation(self, run_id, individual_id, result, **kw):
        time.sleep(SLOW)
        id = self.store.add_evaluation(run_id, individual_id, result, **kw)
        self.stored.append((result["log"], time.time()))
        return id


def test_finished_workers_are_back_at_work_before_the_rest_of_their_batch_is_stored(local_ray, tmp_path):
    source = seed_source()
    pool = SimulatedWorkers(4, 0.5, source)
    store = SlowDisk(open_writer(tmp_path / "evo.duckdb"))
    config = RunConfig(population=8, evaluations=12, budget_tokens=1000, noise_seeds=2, confirm_seeds=1,
                       operators=REGISTRY.parse_weights("hyper"), preflight=False)
    run_id = store.new_run(config.stored())
    try:
        final = Engine(config, store, pool.slots, pool.make, run_id=run_id, seed_source=source, program="").run()
    finally:
        pool.stop()
    assert final.status == "finished" and final.evaluations.search_done == 12
    rows = store.store.conn.execute(
        "SELECT worker, purpose, log, epoch_us(started_at) / 1e6 FROM evaluations WHERE run_id = ? ORDER BY started_at",
        [run_id]).fetchall()
    store.store.close()
    # Each worker's next search evaluation started before the engine stored the result it stored after this one.
    stored_at = dict(store.stored)
    order = [log for log, _ in store.stored]
    checked = 0
    for i, (worker, purpose, log, _) in enumerate(rows):
        later = [r for r in rows[i + 1:] if r[0] == worker]
        if purpose != "search" or not later or later[0][1] != "search" or order.index(log) == len(order) - 1:
            continue  # only where a child was waiting for the worker
        stored_next = stored_at[order[order.index(log) + 1]]   # the evaluation the engine stored after this one
        assert later[0][3] < stored_next, f"{worker} waited for the next evaluation to be stored ({purpose})"
        checked += 1
    assert checked >= 6
