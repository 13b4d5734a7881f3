"""Caught once, out, through the engine and the store: real Ray, a real DuckDB file, workers that only sleep
(tests/support/sleeping_workers.py), the first child to be confirmed caught by the causality check, and the CLI
reading the file afterwards."""

import asyncio
import os
import time

import pytest
import ray

from evo.config import RunConfig
from evo.engine import Engine
from evo.store import open_reader, open_writer
from operators.registry import REGISTRY
from tests.support.genomes import seed_source
from tests.support.runs import evo
from tests.support.sleeping_workers import Slot

CAUGHT = ("causality check failed: changing the tokens after position 11 of a row moved the log-probabilities at "
          "or before it by 0.73 nats")


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@ray.remote(num_cpus=0.01, max_restarts=0)
class CatchingWorkers:
    """Simulated workers sharing one process: the first child they see scores best of all until its confirmation
    (an evaluation that measures the test split), which comes back late and rejected by the causality check, as the
    harness rejects a model that reads ahead; meanwhile children of it are made and run."""

    def __init__(self, seed: str):
        self.seed, self.star = seed, None
        self.node_id = ray.get_runtime_context().get_node_id()

    async def evaluate(self, slot, source, seed, budget, time_limit=None, preflight=False, test=False):
        started = time.time()
        await asyncio.sleep(0.05)
        if source != self.seed and self.star is None:
            self.star = source
        if test and source == self.star:
            await asyncio.sleep(1.5)
            record = {"status": "rejected", "val_bpb": None, "test_bpb": None, "error": CAUGHT}
        else:
            val = 3.2 if source == self.seed else 2.9 if source == self.star else 3.0
            val += (seed % 3) * 0.001
            record = {"status": "ok", "val_bpb": val, "test_bpb": val if test else None, "error": None}
        return {**record, "seed": seed, **budget.fields(),
                "training_seconds": 0.05, "total_seconds": time.time() - started, "log": "",
                "worker": f"{slot}@{self.node_id[:8]}", "started_at": started, "finished_at": time.time()}

    async def describe(self, slot):
        return {"name": slot, "node": "simulated", "node_id": self.node_id, "pid": os.getpid(),
                "cuda_visible_devices": None, "conditions": {"threads": 1, "device": "simulated"}}


def test_a_member_caught_on_confirmation_is_out_and_the_store_and_lineage_say_why(local_ray, tmp_path, evo_bin):
    source = seed_source()
    actor = CatchingWorkers.remote(source)
    slots = [Slot(actor, "sim-0"), Slot(actor, "sim-1")]
    db = tmp_path / "evo.duckdb"
    store = open_writer(db)
    config = RunConfig(population=4, evaluations=10, budget_tokens=1000, noise_seeds=2, confirm_seeds=1, elites=2,
                       selection="best", operators=REGISTRY.parse_weights("hyper"), preflight=False, seed=3)
    run_id = store.new_run(config.stored())
    engine = Engine(config, store, slots, lambda i: None, run_id=run_id, seed_source=source, program="")
    try:
        final = engine.run()
        assert final.status == "finished", final
        (child, reason), = engine.policy.disqualified.items()
        assert final.best.id != child
        # On --resume the store is the truth: an individual caught before its status was stored is marked then.
        store.set_status(run_id, child, "evaluated", reason="")
        state = store.load_run(run_id).state
        resumed = Engine(config, store, slots, lambda i: None, run_id=run_id, seed_source=source, program="",
                         state=state)
        assert resumed.policy.disqualified == {child: reason}
    finally:
        ray.kill(actor)
        store.close()
    assert reason.startswith("disqualified: its confirm evaluation on seed ") and reason.endswith(CAUGHT)
    with open_reader(db) as reader:
        me = reader.individual(run_id, child, with_source=False)
        assert (me.status, me.reason, me.in_population) == ("rejected", reason, False)
        ranked = reader.query(f"SELECT individual_id FROM leaderboard WHERE run_id = '{run_id}'")[1]
        assert child not in {r[0] for r in ranked} and ranked
        assert any(e.status == "ok" for e in reader.evaluations(run_id, child))   # it scored before it was caught
        descendants = [i for i, depth in reader.descendants(child, run_id) if depth > 0]
    shown = evo(evo_bin, tmp_path, "lineage", child, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert f"[rejected: {reason}]" in shown.stdout
    source_shown = evo(evo_bin, tmp_path, "show", child, timeout=120)
    assert source_shown.returncode == 0 and source_shown.stderr.strip() == f"evo show: {child} is {reason}"
    assert descendants, "no child of the caught member was proposed"
    lineage = evo(evo_bin, tmp_path, "lineage", descendants[0], timeout=120)
    assert lineage.returncode == 0, lineage.stderr
    assert f"  descends from {child}, {reason}" in lineage.stdout.splitlines()


def test_the_stored_status_crowns_a_descendant_of_a_disqualified_member_only_after_its_own_confirmation(tmp_path):
    from genome import content_hash

    store = open_writer(tmp_path / "evo.duckdb")
    run_id = store.new_run({"evaluations": 2})
    sources = {name: seed_source().replace("# ", f"# {name} ", 1) for name in ("seed", "cheat", "heir")}
    ids = {name: content_hash(text) for name, text in sources.items()}
    store.add_individual(run_id, source=sources["seed"], operator="seed")
    store.add_individual(run_id, source=sources["cheat"], operator="hyper.mutate", parents=[ids["seed"]])
    store.add_individual(run_id, source=sources["heir"], operator="hyper.mutate", parents=[ids["cheat"]])
    ok = lambda v, seed: {"status": "ok", "val_bpb": v, "seed": seed}   # noqa: E731
    for seed in (1, 2):
        store.add_evaluation(run_id, ids["seed"], ok(3.2, seed), purpose="noise")
    store.add_evaluation(run_id, ids["cheat"], ok(2.9, 1))
    store.add_evaluation(run_id, ids["heir"], ok(2.8, 1))
    store.add_evaluation(run_id, ids["cheat"], {"status": "rejected", "error": CAUGHT, "seed": 2}, purpose="confirm")
    store.set_status(run_id, ids["cheat"], "rejected", f"disqualified: its confirm evaluation on seed 2 was "
                                                       f"rejected: {CAUGHT}")
    store.set_population(run_id, [ids["seed"], ids["heir"]])
    try:
        assert store.run_status(run_id).best.id == ids["seed"]        # the heir has no confirmation of its own
        store.add_evaluation(run_id, ids["heir"], ok(2.8, 2), purpose="confirm")
        assert store.run_status(run_id).best.id == ids["heir"]
    finally:
        store.close()
