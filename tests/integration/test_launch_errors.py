"""How `evo run` learns why its run actor could not start: from the exception the actor raised (Ray hands it back as
the cause of its RayTaskError), never from the text of Ray's message."""

import os
import subprocess
import sys

import pytest
import ray

from evo.errors import StoreError, StoreInUse
from evo.launch import _opened
from tests.support.genomes import ROOT, tiny_source
from tests.support.runs import evo

TINY_RUN = ["--population", "4", "--budget-tokens", "4096", "--workers", "1", "--operators", "hyper",
            "--no-preflight", "--noise-seeds", "2", "--confirm-seeds", "1", "--evaluations", "2"]


@pytest.fixture
def local_ray():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@ray.remote(num_cpus=0, max_restarts=0)
class Opening:
    """A stand-in for the run actor: open() raises what it was given."""

    def __init__(self, error: Exception):
        self.error = error

    def open(self) -> str:
        raise self.error


def test_what_open_raised_reaches_the_caller_as_itself(local_ray):
    # A message naming no error class: text parsing looked for "StoreError" in Ray's lines and could not find it.
    with pytest.raises(StoreInUse) as caught:
        _opened(Opening.remote(StoreInUse("x.duckdb is in use by process 7")))
    assert str(caught.value) == "x.duckdb is in use by process 7"
    with pytest.raises(StoreError) as caught:
        _opened(Opening.remote(ValueError("a bug")))
    assert str(caught.value) == "the run actor failed to start: ValueError: a bug"


def test_a_store_held_by_another_process_is_one_line_and_the_lock_is_let_go(evo_bin, tmp_path):
    (tmp_path / "train.py").write_text(tiny_source())
    (tmp_path / "program.md").write_text((ROOT / "program.md").read_text())
    db = tmp_path / "held.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time\n"
                               f"c = duckdb.connect({str(db)!r})\nprint('held', flush=True)\ntime.sleep(300)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = evo(evo_bin, tmp_path, "run", "--db", db.name, *TINY_RUN, timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"evo run: error: held.duckdb is in use by process {holder.pid}"], proc.stderr
    assert not (tmp_path / "held.duckdb.lock").exists()   # the run actor let go of the lock it had taken


HEAD = """
import sys
from ray.cluster_utils import Cluster
head = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1})
print(head.address, flush=True)
sys.stdin.read()
head.shutdown()
"""


@pytest.mark.slow
def test_a_cluster_that_refuses_the_token_is_one_line(evo_bin, tmp_path):
    # Ray reports a refused token only in its log lines and raises a plain ConnectionError; the old check searched
    # the exception's text for "auth" or "token" and let the traceback through.
    token = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "a" * 32}
    head = subprocess.Popen([sys.executable, "-c", HEAD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=token)
    try:
        address = head.stdout.readline().strip()
        assert address, "the token cluster did not start"
        (tmp_path / "train.py").write_text(tiny_source())
        (tmp_path / "program.md").write_text((ROOT / "program.md").read_text())
        wrong = {**token, "EVO_LOG_LEVEL": "ERROR", "RAY_AUTH_TOKEN": "b" * 32}
        proc = evo(evo_bin, tmp_path, "run", "--address", address, *TINY_RUN, timeout=300, env=wrong)
    finally:
        head.communicate("", timeout=120)   # the head shuts its cluster down when its stdin closes
    assert proc.returncode == 1, proc.stderr
    ours = [line for line in proc.stderr.splitlines() if line.startswith("evo run")]   # Ray logs its retries too
    assert len(ours) == 1 and ours[0].startswith(f"evo run: error: --address {address}: the Ray cluster there "
                                                 f"refused this client"), proc.stderr
    assert "RAY_AUTH_TOKEN" in ours[0] and "Traceback" not in proc.stderr
