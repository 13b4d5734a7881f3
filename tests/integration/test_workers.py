"""Ray worker actors on a real local Ray with fake GPUs: placement, isolation, a worker dying mid-evaluation."""

import os
import re
import time

import pytest
import ray

from evo.sandbox.budget import Budget
from evo.workers import bundle_task, start_workers
from tests.support.genomes import ROOT, sleeper_source
from tests.support.processes import processes


@pytest.fixture(scope="module")
def ray_fake_gpus():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, num_gpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def bundle_ref(ray_fake_gpus, dataset):
    return ray.put(bundle_task([ROOT / "prepare.py"], dataset))


def interval(log):
    start = float(re.search(r"^START ([\d.]+)", log, re.M).group(1))
    end = float(re.search(r"^END ([\d.]+)", log, re.M).group(1))
    return start, end


def test_four_gpu_workers_run_at_once_each_on_its_own_gpu(bundle_ref, tmp_path):
    workers = start_workers(bundle_ref, 4, use_gpus=True, cpus_per_worker=0, threads=1, memory_mb=0,
                            cache_root=str(tmp_path))
    budget = Budget(tokens=1000)
    results = ray.get([w.evaluate.remote(sleeper_source(4, str(i)), 1, budget) for i, w in enumerate(workers)])
    assert [r["status"] for r in results] == ["ok"] * 4, [r["error"] for r in results]
    seen = [re.search(r"CUDA_VISIBLE_DEVICES=(\S+)", r["log"]).group(1) for r in results]
    assert sorted(seen) == ["0", "1", "2", "3"]  # exactly one, distinct GPU each
    spans = [interval(r["log"]) for r in results]
    assert max(s for s, _ in spans) < min(e for _, e in spans)  # all four were sleeping at the same moment
    for w in workers:
        ray.kill(w)


ESCAPE = """
import subprocess, sys
escaped = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
print("ESCAPED", escaped.pid, flush=True)
"""


def test_a_worker_killed_mid_evaluation_costs_only_that_evaluation(bundle_ref, tmp_path):
    doomed, healthy = start_workers(bundle_ref, 2, use_gpus=False, cpus_per_worker=1, threads=1, memory_mb=0,
                                    cache_root=str(tmp_path))
    source = sleeper_source(60, "doomed").replace("torch.manual_seed(seed())", ESCAPE + "torch.manual_seed(seed())")
    lost = doomed.evaluate.remote(source, 1, Budget(tokens=1000))
    kept = healthy.evaluate.remote(sleeper_source(3, "kept"), 1, Budget(tokens=1000))
    deadline = time.time() + 60
    while not (processes("# doomed") and processes("time.sleep(300)")) and time.time() < deadline:
        time.sleep(0.2)
    escaped = processes("time.sleep(300)")
    assert processes("# doomed") and escaped
    ray.kill(doomed)
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(lost, timeout=30)
    assert ray.get(kept, timeout=60)["status"] == "ok"
    _wait_until(lambda: not processes("# doomed"))  # the training process died with its worker
    # What it started outside its session is swept before the next evaluation on this machine.
    assert ray.get(healthy.evaluate.remote(sleeper_source(0, "next"), 1, Budget(tokens=1000)))["status"] == "ok"
    _wait_until(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in escaped))
    ray.kill(healthy)


def _wait_until(condition, seconds=10):
    deadline = time.time() + seconds
    while not condition() and time.time() < deadline:
        time.sleep(0.2)
    assert condition()

