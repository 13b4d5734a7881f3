"""The supervisor that stands between a worker and one phase of an evaluation.

    python -m evo.supervise MARKER MEMORY_MB -- python train.py

It runs the command, and
- dies with its parent: the kernel sends it SIGTERM when the worker (or whatever started it) dies, and on SIGTERM
  it ends every process of the evaluation, also those that left its session (see evo.proctree); if it is killed
  outright, the command still dies with it (PR_SET_PDEATHSIG), and evo.proctree.sweep_orphans ends the rest;
- enforces the memory limit by summing the resident memory of every process of the evaluation twice a second,
  which works with CUDA (an address-space limit does not: CUDA reserves far more address space than it uses);
- exits with the command's status (128 + N when a signal N ended it), or MEMORY_EXIT when it hit the limit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from evo.proctree import die_with_parent, kill_tree, marked_pids

MEMORY_EXIT = 86
_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_mb(pids: list[int]) -> float:
    """Resident memory of the given processes, in MiB (processes that vanished count 0)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total / 2**20


def main(argv: list[str]) -> int:
    marker, memory_mb, sep, *cmd = argv
    if sep != "--" or not cmd:
        sys.stderr.write("usage: python -m evo.supervise MARKER MEMORY_MB -- COMMAND...\n")
        return 2
    limit = float(memory_mb)
    die_with_parent(signal.SIGTERM)
    if os.getppid() == 1:  # the parent died before prctl took effect
        return 128 + signal.SIGTERM
    # the command gets SIGKILL if the supervisor dies, even by SIGKILL (Ray kills a dead worker's children)
    # close_fds=False: the only inheritable descriptors here are those the evaluating process passed on purpose
    # (the harness channel, the scorer's result pipe); Python opens everything else non-inheritable
    child = subprocess.Popen(cmd, preexec_fn=die_with_parent, close_fds=False)

    def end(signum, _frame):
        kill_tree(child.pid, marker)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, end)
    signal.signal(signal.SIGINT, end)
    while True:
        try:
            code = child.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            pass
        if limit > 0:
            used = resident_mb(marked_pids(marker))
            if used > limit:
                kill_tree(child.pid, marker)
                sys.stderr.write(f"evo: memory limit exceeded: {used:.0f} MiB resident > {limit:.0f} MiB\n")
                return MEMORY_EXIT
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
