"""`evo run --address` on Ray clusters started by the test: fake GPUs, and two nodes on this host."""

import os
import re
import subprocess
import sys

import pytest

from evo.store import open_reader
from tests.support.genomes import ROOT, napper_source

NAP_RUN = ["--population", "4", "--budget-tokens", "1000", "--operators", "hyper", "--no-preflight",
           "--noise-seeds", "2", "--confirm-seeds", "1"]


@pytest.fixture
def cluster():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ray.cluster_utils import Cluster

    made = []

    def start(*nodes):
        c = Cluster(initialize_head=True, connect=False, head_node_args=nodes[0])
        for args in nodes[1:]:
            c.add_node(**args)
        c.wait_for_nodes()
        made.append(c)
        return c

    yield start
    for c in made:
        c.shutdown()


def run_on(evo_bin, tmp_path, address, *args):
    (tmp_path / "train.py").write_text(napper_source(3.0))
    (tmp_path / "program.md").write_text((ROOT / "program.md").read_text())
    proc = subprocess.run([evo_bin, "run", "--address", address, *NAP_RUN, *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert f"evo run: joined the Ray cluster at {address} (--address)\n" in proc.stderr   # said, in one line
    return open_reader(tmp_path / "evo.duckdb")


def test_four_fake_gpus_run_four_evaluations_at_once_one_gpu_each(evo_bin, tmp_path, cluster):
    c = cluster({"num_cpus": 2, "num_gpus": 4})
    with run_on(evo_bin, tmp_path, c.address, "--evaluations", "8") as db:
        run_id = db.latest_run().run_id
        evaluations = [e for e in db.evaluations(run_id) if e.status == "ok"]
        assert len({e.worker.split("@")[0] for e in evaluations}) == 4
        seen = {}
        for e in evaluations:
            devices = re.findall(r"CUDA_VISIBLE_DEVICES=(\S+)", db.evaluation_log(e.id))
            assert len(devices) == 1 and devices[0] in {"0", "1", "2", "3"}, devices
            seen.setdefault(e.worker, set()).add(devices[0])
        assert all(len(v) == 1 for v in seen.values())            # a worker keeps its GPU
        assert sorted(d for v in seen.values() for d in v) == ["0", "1", "2", "3"]  # four distinct GPUs
        peak = max(sum(1 for o in evaluations if o.started_at <= e.started_at < o.finished_at) for e in evaluations)
        assert peak == 4


def test_evaluations_run_on_both_nodes_of_a_two_node_cluster(evo_bin, tmp_path, cluster):
    c = cluster({"num_cpus": 1}, {"num_cpus": 1})
    with run_on(evo_bin, tmp_path, c.address, "--evaluations", "4", "--workers", "2") as db:
        run_id = db.latest_run().run_id
        nodes = {e.worker.split("@")[1] for e in db.evaluations(run_id)}
        assert nodes == {n[:8] for n in _node_ids(c.address)} and len(nodes) == 2


def _node_ids(address):
    """The ids of the cluster's live nodes, asked from a separate Ray client process."""
    import json

    out = subprocess.run([sys.executable, "-c", f"import ray, json; ray.init(address={address!r}, "
                          "logging_level='ERROR'); "
                          "print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive']]))"],
                         capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])
