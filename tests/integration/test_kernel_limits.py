"""Limits the kernel keeps: each phase of an evaluation runs in a cgroup of its own, so memory a resident size does
not show (a memfd, /dev/shm) and forks past the process limit are held by the kernel, named from its own record,
and the group is gone afterwards. Where this machine offers no cgroup, the cgroup cases skip and the polling
supervisor's own count (memfd pages as memory) is tested instead."""

import json
import os
import subprocess
import sys
import uuid

import pytest

from evo.sandbox import cgroup
from evo.sandbox.evaluation import Budget, EvalRequest, evaluate
from evo.sandbox.proctree import MARKER_VAR, new_marker
from evo.sandbox.supervise import MEMORY_EXIT, Limits
from tests.support.genomes import ROOT, tiny_source
from tests.support.runs import evo

MEMFD = """
import os
fd = os.memfd_create("hoard")
block = b"x" * 2**20
for _ in range({mib}):
    os.write(fd, block)
import time
time.sleep(30)
"""
SHM = """
block = b"x" * 2**20
with open("/dev/shm/hoard", "wb") as f:
    for _ in range(250):
        f.write(block)
import time
time.sleep(30)
"""
FORKS = """
import subprocess, sys
spawned = [subprocess.Popen(["sleep", "60"]) for _ in range(100)]
import time
time.sleep(30)
"""


def _groups_of_this_process() -> set[str]:
    return {str(g) for parent in cgroup._parents() if parent.is_dir() for g in parent.iterdir()
            if g.name.startswith(f"{cgroup.PREFIX}{os.getpid()}.")}


@pytest.fixture(scope="module")
def kernel_kind():
    group, why = cgroup.make(f"probe-{uuid.uuid4().hex[:8]}", 64, 16)
    if group is None:
        pytest.skip(f"this machine offers no cgroup to this process: {why}")
    group.remove()
    return group.kind


def evaluated(dataset, code: str, **limits):
    source = tiny_source().replace("submit(model)\n", code + "submit(model)\n")
    return evaluate(EvalRequest(source=source, seed=1, harness=ROOT / "prepare.py", dataset=dataset, threads=1,
                                fixed_files=(ROOT / "kernels.py",), budget=Budget(tokens=8192), **limits))


@pytest.mark.parametrize("code, status, named", [
    pytest.param("", "ok", None, id="honest"),
    pytest.param(MEMFD.format(mib=800), "oom", "memory limit exceeded: the kernel ended", id="memfd"),
    pytest.param(SHM, "oom", "memory limit exceeded: the kernel ended", id="dev-shm"),
    pytest.param(FORKS, "crash", "process limit exceeded: the kernel refused", id="fork-bomb"),
])
def test_the_kernel_holds_what_a_phase_may_use_and_names_the_limit(dataset, kernel_kind, code, status, named):
    before = _groups_of_this_process()
    # the fork bomb is held to processes alone: its processes' memory would otherwise reach the memory limit first
    result = evaluated(dataset, code, memory_mb=0 if code is FORKS else 450, processes=64)
    assert result.status == status, (result.error, result.log[-1000:])
    assert result.limits == kernel_kind
    if named:
        assert named in result.error and f"({kernel_kind})" in result.error, result.error
    assert _groups_of_this_process() <= before   # nothing left behind


def test_a_group_whose_owner_is_gone_is_swept(kernel_kind):
    # a marker whose owner pid cannot be running: what a worker killed outright leaves
    orphan, _ = cgroup.make(f"999999999.1.{uuid.uuid4().hex[:12]}", 64, 16)
    mine, _ = cgroup.make(new_marker(), 64, 16)
    try:
        swept = cgroup.sweep()
        assert set(orphan.dirs) <= set(swept) and not any(os.path.exists(d) for d in orphan.dirs)
        assert all(os.path.isdir(d) for d in mine.dirs)
    finally:
        mine.remove()
        orphan.remove()


def test_without_a_cgroup_the_supervisor_counts_a_memfd_as_memory(tmp_path):
    limits = Limits(memory_mb=200, processes=64, watch=(str(tmp_path),))
    marker = new_marker()
    proc = subprocess.run([sys.executable, "-m", "evo.sandbox.supervise", marker, limits.text(), "--",
                           sys.executable, "-c", MEMFD.format(mib=400)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, MARKER_VAR: marker})
    assert proc.returncode == MEMORY_EXIT, proc.stderr
    assert "memory limit exceeded" in proc.stderr and "MiB held" in proc.stderr, proc.stderr
    assert json.loads(limits.text())["cgroup"] == []


DISK = """
import os
block = os.urandom(2**20)
with open("hoard.bin", "wb") as f:
    for _ in range(100):
        f.write(block)
import time
time.sleep(30)
"""


@pytest.mark.parametrize("flags, code, named", [
    pytest.param(("--disk-mb", "64"), DISK, "evo: disk limit exceeded", id="disk"),
    pytest.param(("--memory-mb", "450"), MEMFD.format(mib=800), "evo: memory limit exceeded", id="memory",
                 marks=pytest.mark.slow),
])
def test_evo_run_and_evo_eval_hold_a_child_to_the_same_limits(evo_bin, tmp_path, flags, code, named):
    (tmp_path / "train.py").write_text(tiny_source().replace("submit(model)\n", code + "submit(model)\n"))
    (tmp_path / "program.md").write_text((ROOT / "program.md").read_text())
    single = evo(evo_bin, tmp_path, "eval", "train.py", "--budget-tokens", "4096", "--threads", "1", "--json", *flags)
    result = json.loads(single.stdout)
    assert single.returncode == 1 and named in result["error"], single.stdout + single.stderr
    run = evo(evo_bin, tmp_path, "run", "--population", "4", "--evaluations", "2", "--budget-tokens", "4096",
              "--workers", "1", "--no-preflight", "--quiet", *flags)
    assert run.returncode != 0 and "the seed train.py failed its first evaluation" in run.stderr, run.stderr
    assert named in run.stderr, run.stderr
    # the store says what held each evaluation's limits, as evo eval's result does
    stored = evo(evo_bin, tmp_path, "sql", "SELECT DISTINCT limits FROM evaluations", "--format", "json")
    assert stored.returncode == 0, stored.stderr
    assert [row["limits"] for row in json.loads(stored.stdout)] == [result["limits"]], stored.stdout
    assert result["limits"].startswith(("cgroup v", "the supervisor's polling"))
