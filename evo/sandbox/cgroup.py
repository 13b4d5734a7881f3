"""Kernel-kept limits for one phase of an evaluation: a control group of its own with a memory and a process limit.

    group, why_not = make(name, memory_mb, processes)     # None, and why, where no cgroup can be made here
    ... the phase's command joins it before it execs (group.join(), in the child) ...
    group.hits()                                          # what the kernel refused or killed, from its own record
    group.remove()                                        # ends what is left in it, and removes it
    sweep()                                               # removes the groups of owners that are gone

The kernel then counts what a poller cannot see: shared memory and memfd pages are charged to the group like any
other memory, and a fork past the process limit fails at once. cgroup v2 (one hierarchy: `memory.max`, `pids.max`,
`memory.events`, `pids.events`) is used where this process's own group may have children with the memory and pids
controllers; otherwise cgroup v1 (separate `memory` and `pids` hierarchies: `memory.limit_in_bytes`,
`memory.oom_control`, `memory.failcnt`, `pids.max`, `pids.events`). The group is made below the group this process
is in, so whatever limits the machine already holds it to still hold. Making one needs write access there (root, or
a delegated subtree); where none can be made, `make` says why, and the supervisor's polling limits stand alone.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from evo.sandbox.proctree import owner_gone

ROOT = Path("/sys/fs/cgroup")
PREFIX = "evo-"


def _own_paths() -> dict[str, str]:
    """controller name ('' for the v2 hierarchy) -> this process's group path, from /proc/self/cgroup."""
    paths = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return paths
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read_fields(path: Path) -> dict[str, int]:
    """A flat keyed file (`oom_kill 3`) as a dict; missing or unreadable: empty."""
    try:
        pairs = (line.split() for line in path.read_text().splitlines())
        return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].lstrip("-").isdigit()}
    except OSError:
        return {}


def _v2_parent(own: dict[str, str]) -> Path | None:
    """Where a v2 group with memory and pids may be made: this process's own group, when it already hands those
    controllers to its children (a delegated subtree does). Enabling them here would need this group to have no
    processes of its own, which a running process's group cannot promise."""
    if "" not in own or not (ROOT / "cgroup.controllers").is_file():
        return None
    parent = ROOT / own[""].lstrip("/")
    try:
        enabled = (parent / "cgroup.subtree_control").read_text().split()
    except OSError:
        return None
    return parent if {"memory", "pids"} <= set(enabled) else None


@dataclass
class PhaseGroup:
    """One phase's group: `dirs` are its folders (one on v2; the memory and the pids one on v1)."""

    kind: str                 # "cgroup v2" or "cgroup v1"
    dirs: tuple[str, ...]
    memory_mb: float
    processes: int

    def join(self) -> None:
        """Moves the calling process into the group (call it in the child, before exec: all it starts follows)."""
        for folder in self.dirs:
            _write(Path(folder) / "cgroup.procs", "0")

    def pids(self) -> list[int]:
        """Every process in the group now."""
        found: set[int] = set()
        for folder in self.dirs:
            try:
                found.update(int(p) for p in (Path(folder) / "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                pass
        return sorted(found)

    def hits(self) -> tuple[str | None, str | None]:
        """(memory, processes): what the kernel's own record says each limit did, or None where it never bit."""
        memory = processes = None
        if self.kind == "cgroup v2":
            folder = Path(self.dirs[0])
            kills = _read_fields(folder / "memory.events").get("oom_kill", 0)
            refused = _read_fields(folder / "pids.events").get("max", 0)
        else:
            folder = Path(self.dirs[0])
            kills = _read_fields(folder / "memory.oom_control").get("oom_kill", 0)
            refused = _read_fields(Path(self.dirs[1]) / "pids.events").get("max", 0)
        if kills:
            memory = (f"the kernel ended {kills} process{'es' if kills > 1 else ''} of it at the memory limit of "
                      f"{self.memory_mb:g} MiB ({self.kind})")
        if refused:
            processes = (f"the kernel refused {refused} fork{'s' if refused > 1 else ''} past the limit of "
                         f"{self.processes:,} tasks ({self.kind})")
        return memory, processes

    def remove(self, wait: float = 5.0) -> None:
        """Kills whatever is still in the group and removes its folders; tries for up to `wait` seconds."""
        remove(self.dirs, wait)


def make(name: str, memory_mb: float, processes: int) -> tuple[PhaseGroup | None, str]:
    """(a new group called PREFIX + name with the given limits (0: none), ""), or (None, why none can be made)."""
    own = _own_paths()
    made: list[Path] = []
    try:
        parent = _v2_parent(own)
        if parent is not None:
            group = parent / f"{PREFIX}{name}"
            group.mkdir()
            made.append(group)
            if memory_mb > 0:
                _write(group / "memory.max", str(int(memory_mb * 2**20)))
                if (group / "memory.swap.max").exists():
                    _write(group / "memory.swap.max", "0")
            if processes > 0:
                _write(group / "pids.max", str(processes))
            return PhaseGroup("cgroup v2", (str(group),), memory_mb, processes), ""
        if "memory" not in own or "pids" not in own:
            return None, "no cgroup v2 subtree with memory and pids delegated, and no cgroup v1 memory and pids"
        memory = ROOT / "memory" / own["memory"].lstrip("/") / f"{PREFIX}{name}"
        pids = ROOT / "pids" / own["pids"].lstrip("/") / f"{PREFIX}{name}"
        for group in (memory, pids):
            group.mkdir()
            made.append(group)
        if memory_mb > 0:
            limit = str(int(memory_mb * 2**20))
            _write(memory / "memory.limit_in_bytes", limit)
            if (memory / "memory.memsw.limit_in_bytes").exists():  # swap may not take what memory may not
                _write(memory / "memory.memsw.limit_in_bytes", limit)
        if processes > 0:
            _write(pids / "pids.max", str(processes))
        return PhaseGroup("cgroup v1", (str(memory), str(pids)), memory_mb, processes), ""
    except OSError as e:
        remove(tuple(str(g) for g in reversed(made)), wait=1.0)
        return None, f"no cgroup could be made ({e.strerror or e})"


def _parents() -> list[Path]:
    """The folders this process's phase groups are made in (one on v2; the memory and the pids one on v1)."""
    own = _own_paths()
    parent = _v2_parent(own)
    if parent is not None:
        return [parent]
    return [ROOT / name / own[name].lstrip("/") for name in ("memory", "pids") if name in own]


def sweep() -> list[str]:
    """Removes the phase groups whose owner (named by the marker in the group's name, evo.sandbox.proctree) is gone,
    with anything still in them: what a killed worker left behind. Returns the folders it removed."""
    gone = []
    for parent in _parents():
        try:
            groups = [g for g in parent.iterdir() if g.name.startswith(PREFIX) and g.is_dir()]
        except OSError:
            continue
        gone += [str(g) for g in groups if owner_gone(g.name[len(PREFIX):])]
    remove(tuple(gone), wait=2.0)
    return gone


def remove(dirs: tuple[str, ...], wait: float = 5.0) -> None:
    """Kills every process in the given group folders and removes them (idempotent: gone folders are skipped)."""
    deadline = time.monotonic() + wait
    for folder in dirs:
        path = Path(folder)
        while path.is_dir():
            kill = path / "cgroup.kill"   # v2: the kernel kills every process, also those forking meanwhile
            if kill.exists():
                try:
                    _write(kill, "1")
                except OSError:
                    pass
            try:
                for pid in (path / "cgroup.procs").read_text().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (ProcessLookupError, ValueError):
                        pass
                path.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
