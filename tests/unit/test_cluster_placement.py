"""evo.cluster.placement: workers sized from what each node offers, one thread count per run; and which cluster a
run joins."""

import pytest

from evo import conditions
from evo.cluster import Placement, cluster_address, placement


def test_one_machine_keeps_its_defaults_and_shares_its_cores_among_the_workers_asked_for():
    assert placement(None, [{"CPU": 2}]) == Placement(count=1, use_gpus=False, cpus_per_worker=2, threads=2, fits=1,
                                                      largest="2 CPU")
    assert placement(None, [{"CPU": 16}]).count == 8
    three = placement(3, [{"CPU": 2}])
    assert three.count == three.fits == 3 and three.threads == 1
    assert three.cpus_per_worker == pytest.approx(2 / 3)


def test_nodes_smaller_than_a_share_get_workers_that_fit_them():
    # Two nodes of one core each: the old placement asked for one worker of 2 CPUs, which no node has.
    two = placement(None, [{"CPU": 1}, {"CPU": 1}])
    assert two.count == two.fits == 2 and two.cpus_per_worker == 1 and two.threads == 1


def test_every_worker_gets_the_smallest_nodes_thread_count():
    mixed = placement(None, [{"CPU": 8}, {"CPU": 2}])
    assert mixed.threads == 2 and mixed.count == 5          # 4 on the big node, 1 on the small one
    asked = placement(4, [{"CPU": 8}, {"CPU": 8}])
    assert asked.threads == 4 and asked.fits == 4


def test_a_resume_keeps_its_threads_and_says_how_many_workers_fit():
    kept = placement(2, [{"CPU": 2}], threads=1)
    assert kept.threads == 1 and kept.fits == 2
    shared = placement(3, [{"CPU": 2}], threads=1)   # more workers than cores: each keeps its share
    assert shared.count == shared.fits == 3 and shared.cpus_per_worker == pytest.approx(2 / 3)
    too_big = placement(2, [{"CPU": 1}, {"CPU": 1}], threads=2)
    assert too_big.fits == 0 and too_big.largest == "1 CPU"


def test_gpus_give_one_worker_each():
    where = placement(None, [{"CPU": 8, "GPU": 2}, {"CPU": 8, "GPU": 2}])
    assert where.use_gpus and where.count == 4 and where.fits == 4
    assert placement(6, [{"CPU": 8, "GPU": 4}]).fits == 4


def test_conditions_name_what_changed():
    before = {**conditions.machine(2), **conditions.task({"prepare.py": b"a"}, "data1")}
    assert conditions.changes(before, dict(before)) == []
    after = {**conditions.machine(1), **conditions.task({"prepare.py": b"b"}, "data1")}
    changed = conditions.changes(before, after)
    assert changed[0] == "threads 2 -> 1" and any(c.startswith("harness ") for c in changed)
    assert before["cpu"] and before["torch"] and before["device"] == "cpu"


def test_a_run_joins_a_cluster_only_where_one_is_named(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster_address(None) == (None, "")                      # an instance of its own, whatever else runs
    assert cluster_address("10.0.0.5:6379") == ("10.0.0.5:6379", "--address")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.7:6379")
    assert cluster_address(None) == ("10.0.0.7:6379", "RAY_ADDRESS")
    assert cluster_address("10.0.0.5:6379") == ("10.0.0.5:6379", "--address")
    monkeypatch.setenv("RAY_ADDRESS", "local")
    assert cluster_address(None) == (None, "")
