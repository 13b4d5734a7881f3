"""A run ends only for its own reasons: `evo run` without --address starts a Ray instance of its own, even while
another cluster on the machine is the one Ray would join by default, and a noise evaluation of the seed lost with
its worker is run again. Real `evo run` processes, real local Ray instances, real DuckDB files."""

import json
import os
import shutil
import signal
import tempfile
import time

import pytest

from evo.store import open_reader, read_lock
from tests.integration.test_run import _ray_task_processes
from tests.support.genomes import napper_source
from tests.support.runs import NAP_RUN, LiveRun, evo, task_dir


@pytest.fixture
def other_cluster(monkeypatch):
    """A one-node Ray cluster started as `ray start` starts one: written down as the machine's current cluster,
    the one ray.init() without an address joins. Under a Ray temp folder of the test's own (RAY_TMPDIR, which the
    runs inherit), so no other Ray user of this machine is pointed at it."""
    monkeypatch.setenv("RAY_TMPDIR", tempfile.mkdtemp(prefix="ray", dir="/tmp"))   # short: Ray's socket paths
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1})
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()
    shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)


@pytest.mark.slow   # two runs and a third cluster on one machine: about 90 s on 2 idle cores, more when loaded
def test_two_runs_side_by_side_each_run_on_their_own_ray_and_stopping_one_leaves_the_other(evo_bin, tmp_path,
                                                                                            other_cluster):
    dirs = [task_dir(tmp_path / name, napper_source(1.0)) for name in ("a", "b")]
    runs = [LiveRun(evo_bin, dirs[0], "--evaluations", "30", "--workers", "1", *NAP_RUN),
            LiveRun(evo_bin, dirs[1], "--evaluations", "4", "--workers", "1", *NAP_RUN)]
    try:
        for run in runs:
            run.wait_for(lambda line: "] search:" in line, "the search started")
        addresses = [read_lock(d / "evo.duckdb")["ray_address"] for d in dirs]
        assert len(set(addresses)) == 2 and other_cluster.address not in addresses, (addresses, other_cluster.address)
        other_cluster.shutdown()                # the cluster Ray would have joined goes away...
        runs[0].proc.send_signal(signal.SIGTERM)   # ...and so does the run beside it
        stopped, _, stopped_err = runs[0].finish(timeout=180)
        assert stopped == 130, stopped_err
        status = evo(evo_bin, dirs[1], "status", "--json", timeout=120)   # reached through its own instance
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["status"] in ("running", "finished")
        code, out, err = runs[1].finish(timeout=300)
    finally:
        for run in runs:
            run.kill()
    assert code == 0 and "Traceback" not in err, out + err
    assert "joined the Ray cluster" not in err
    with open_reader(dirs[1] / "evo.duckdb") as db:
        run_row = db.latest_run()
        assert run_row.status == "finished"
        assert sum(e.purpose == "search" and e.status == "ok" for e in db.evaluations(run_row.run_id)) == 4


def test_a_seed_evaluation_lost_with_its_worker_is_run_again(evo_bin, tmp_path):
    cwd = task_dir(tmp_path, napper_source(4.0))
    run = LiveRun(evo_bin, cwd, "--evaluations", "1", "--workers", "2", *NAP_RUN)
    try:
        run.wait_for(lambda line: " started: " in line, "the run started")
        deadline = time.time() + 120
        while not (victims := _ray_task_processes("ray::Worker.evaluate", run.proc.pid)) and time.time() < deadline:
            time.sleep(0.2)
        assert victims, "no worker started evaluating the seed"
        os.kill(victims[0], signal.SIGKILL)        # the worker dies under the seed's evaluation, not the seed
        code, out, err = run.finish(timeout=300)
    finally:
        run.kill()
    assert code == 0, out + err
    said = [line for line in err.splitlines() if "the seed's evaluation on seed" in line]
    assert len(said) == 1 and "worker died during the evaluation" in said[0], err
    assert said[0].endswith("run again (1 of 2 more tries))"), said
    with open_reader(cwd / "evo.duckdb") as db:
        run_row = db.latest_run()
        noise = [e for e in db.evaluations(run_row.run_id) if e.purpose == "noise"]
    assert run_row.status == "finished"
    assert sorted(e.status for e in noise) == ["crash", "ok", "ok"]
    assert len({e.seed for e in noise}) == 2                      # the lost one was run again on its own seed
