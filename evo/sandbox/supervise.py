"""The supervisor that stands between a worker and one phase of an evaluation.

    python -m evo.sandbox.supervise MARKER LIMITS_JSON -- python train.py

It runs the command, and
- dies with its parent: the kernel sends it SIGTERM when the worker (or whatever started it) dies, and on SIGTERM
  it ends every process of the evaluation, also those that left its session (see evo.sandbox.proctree); if it is killed
  outright, the command still dies with it (PR_SET_PDEATHSIG), and evo.sandbox.proctree.sweep_orphans ends the rest;
- enforces the memory limit by summing the resident memory of every process of the evaluation twice a second,
  which works with CUDA (an address-space limit does not: CUDA reserves far more address space than it uses);
- keeps the phase from exhausting the machine for everything else (the store, the other workers): at most
  Limits.processes processes at a time, and at most Limits.disk_mb written into the folders it may write (its
  scratch folder and /tmp, counted by the blocks their files take at any depth, files deleted while still open
  included; what cannot be counted, such as folders nested past MAX_DEPTH, ends the phase as over the limit) and
  at most Limits.files files there; a single file cannot grow past the disk limit at all (RLIMIT_FSIZE);
- exits with the command's status (128 + N when a signal N ended it), or MEMORY_EXIT, PROCESS_EXIT or DISK_EXIT
  when it hit a limit.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import stat
import subprocess
import sys
from dataclasses import asdict, dataclass

from evo.sandbox.cgroup import PhaseGroup
from evo.sandbox.proctree import die_with_parent, kill_tree, marked_pids

MEMORY_EXIT = 86
PROCESS_EXIT = 87
DISK_EXIT = 88
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Limits:
    """What one phase may use. memory_mb: resident memory of all its processes together (0: no limit);
    processes: how many processes it may have at once; disk_mb and files: what it may leave in the folders of
    `watch` (the only ones it can write); 0 turns a limit off."""

    memory_mb: float = 0
    processes: int = 1024
    disk_mb: float = 4096
    files: int = 100_000
    watch: tuple[str, ...] = ()
    cgroup: tuple[str, ...] = ()   # the folders of the cgroup the command joins (evo.sandbox.cgroup), if one was made
    cgroup_kind: str = ""

    def text(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def parse(cls, text: str) -> Limits:
        fields = json.loads(text)
        return cls(**{**fields, "watch": tuple(fields.get("watch", ())), "cgroup": tuple(fields.get("cgroup", ()))})

    def group(self) -> PhaseGroup | None:
        """The cgroup that keeps the memory and process limits in the kernel, if the phase has one."""
        return PhaseGroup(self.cgroup_kind, self.cgroup, self.memory_mb, self.processes) if self.cgroup else None


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


def _is_memfd(link: str) -> bool:
    return link.startswith("/memfd:")


def _memfd_blocks(pids: list[int]) -> int:
    """Bytes held in memfds the processes have open or mapped (each file once): memory no resident size shows
    until it is mapped and touched. Mapped files are seen through /proc/PID/map_files, which only a privileged
    supervisor may read; an open descriptor is seen by anyone."""
    seen: dict[tuple[int, int], int] = {}
    for pid in pids:
        for folder in (f"/proc/{pid}/fd", f"/proc/{pid}/map_files"):
            try:
                names = os.listdir(folder)
            except OSError:
                continue
            for name in names:
                try:
                    if not _is_memfd(os.readlink(f"{folder}/{name}")):
                        continue
                    info = os.stat(f"{folder}/{name}")
                except OSError:
                    continue
                seen[(info.st_dev, info.st_ino)] = info.st_blocks * 512
    return sum(seen.values())


def _shm_blocks(pids: list[int]) -> int:
    """Bytes in the private /dev/shm of the processes' own root (the shield's, a tmpfs of its own), seen through
    /proc/PID/root; a process that shares this process's root writes to the machine's /dev/shm, which is not its
    own to count."""
    try:
        ours = os.stat("/")
    except OSError:
        return 0
    roots: dict[tuple[int, int], str] = {}
    for pid in pids:
        try:
            info = os.stat(f"/proc/{pid}/root")
        except OSError:
            continue
        if (info.st_dev, info.st_ino) != (ours.st_dev, ours.st_ino):
            roots.setdefault((info.st_dev, info.st_ino), f"/proc/{pid}/root/dev/shm")
    total = 0
    for shm in roots.values():
        try:
            total += _blocks_under(shm, 100_000, 0)[0]
        except Uncountable:
            pass
    return total


def held_mb(pids: list[int]) -> float:
    """Memory the processes hold, in MiB, as a poller can count it: resident memory, plus memfd pages and their own
    /dev/shm (a page both mapped and resident counts twice: the count errs on the side of the limit)."""
    return resident_mb(pids) + (_memfd_blocks(pids) + _shm_blocks(pids)) / 2**20


MAX_DEPTH = 256   # folders nested deeper than this in a phase's folders are not counted: the phase ends instead


class Uncountable(Exception):
    """What a phase left in its folders cannot be counted (nested too deep, or a folder it made unreadable)."""


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _blocks_under(root: str, max_files: int, count: int) -> tuple[int, int]:
    """(bytes in allocated blocks, entries seen so far) under root, walked by directory descriptors, so no path
    grows with the depth: a tree deeper than PATH_MAX is counted like any other. An entry that vanished during the
    walk is skipped; anything else that cannot be read raises Uncountable, since skipping it would hide what it
    holds."""
    total = 0
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    try:
        top = os.open(root, flags)
    except FileNotFoundError:
        return 0, count
    except OSError as e:
        raise Uncountable(f"{root} cannot be read ({e.strerror})") from None
    stack = [(top, os.scandir(top))]
    try:
        while stack:
            fd, entries = stack[-1]
            try:
                entry = next(entries, None)
            except FileNotFoundError:
                entry = None
            if entry is None:
                entries.close()
                os.close(fd)
                stack.pop()
                continue
            count += 1
            if max_files and count > max_files:
                return total, count
            try:
                info = entry.stat(follow_symlinks=False)
                if not stat.S_ISDIR(info.st_mode):
                    total += info.st_blocks * 512
                    continue
                if len(stack) >= MAX_DEPTH:
                    raise Uncountable(f"folders nested deeper than {MAX_DEPTH} levels")
                sub = os.open(entry.name, flags, dir_fd=fd)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise Uncountable(f"a folder it wrote cannot be read ({e.strerror})") from None
            stack.append((sub, os.scandir(sub)))
    except OSError as e:
        raise Uncountable(f"a folder it wrote cannot be read ({e.strerror})") from None
    finally:
        for fd, entries in stack:
            entries.close()
            os.close(fd)
    return total, count


def written(folders: tuple[str, ...], pids: list[int], max_files: int) -> tuple[float, int]:
    """(MiB, files) that the files under folders take on disk (allocated blocks, so a sparse file counts what it
    really holds), plus the files the given processes hold open after deleting them. Stops counting once past
    max_files entries (0: no cap), so a folder of millions of empty files cannot stall the supervisor. Raises
    Uncountable where something under folders cannot be counted."""
    total, count = 0, 0
    for folder in folders:
        blocks, count = _blocks_under(folder, max_files, count)
        total += blocks
        if max_files and count > max_files:
            return total / 2**20, count
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                info = os.stat(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode) and info.st_nlink == 0 and not _is_memfd(_link(f"/proc/{pid}/fd/{fd}")):
                total += info.st_blocks * 512  # a memfd is memory (held_mb), not disk
    return total / 2**20, count


def _kernel_hit(group: PhaseGroup) -> tuple[int, str] | None:
    """(exit status, message) where the kernel's own record says a limit of the phase's cgroup bit, or None."""
    memory, processes = group.hits()
    if memory:
        return MEMORY_EXIT, f"evo: memory limit exceeded: {memory}"
    if processes:
        return PROCESS_EXIT, f"evo: process limit exceeded: {processes}"
    return None


def _over(limits: Limits, pids: list[int]) -> tuple[int, str] | None:
    """(exit status, message) for the first limit the phase's processes are past, or None. Memory and processes
    are the kernel's to count where the phase has a cgroup; otherwise they are polled here."""
    group = limits.group()
    if group is not None:
        hit = _kernel_hit(group)
        if hit is not None:
            return hit
    elif limits.processes and len(pids) > limits.processes:
        return PROCESS_EXIT, f"evo: process limit exceeded: {len(pids)} processes > {limits.processes}"
    elif limits.memory_mb > 0:
        used = held_mb(pids)
        if used > limits.memory_mb:
            return MEMORY_EXIT, f"evo: memory limit exceeded: {used:.0f} MiB held > {limits.memory_mb:.0f} MiB"
    if limits.watch and (limits.disk_mb > 0 or limits.files):
        try:
            mb, files = written(limits.watch, pids, limits.files)
        except Uncountable as e:
            return DISK_EXIT, f"evo: disk limit exceeded: what it wrote cannot be counted: {e}"
        if limits.files and files > limits.files:
            return DISK_EXIT, f"evo: file limit exceeded: more than {limits.files:,} files in its folders"
        if limits.disk_mb > 0 and mb > limits.disk_mb:
            return DISK_EXIT, f"evo: disk limit exceeded: {mb:.1f} MiB written > {limits.disk_mb:g} MiB"
    return None


def _start(limits: Limits):
    """What the command runs before exec: it dies with the supervisor, and no one file it writes may grow past
    the disk limit (RLIMIT_FSIZE; Python then gets EFBIG on the write)."""
    group = limits.group()

    def start():
        if group is not None:
            group.join()
        die_with_parent()
        if limits.disk_mb > 0:
            size = int(limits.disk_mb * 2**20)
            hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
            resource.setrlimit(resource.RLIMIT_FSIZE, (size if hard == resource.RLIM_INFINITY else min(size, hard),
                                                       hard))
    return start


def main(argv: list[str]) -> int:
    try:
        marker, limits_text, sep, *cmd = argv
        limits = Limits.parse(limits_text)
    except (ValueError, TypeError):
        sep, cmd = None, []
    if sep != "--" or not cmd:
        sys.stderr.write("usage: python -m evo.sandbox.supervise MARKER LIMITS_JSON -- COMMAND...\n")
        return 2
    die_with_parent(signal.SIGTERM)
    if os.getppid() == 1:  # the parent died before prctl took effect
        return 128 + signal.SIGTERM
    # the command gets SIGKILL if the supervisor dies, even by SIGKILL (Ray kills a dead worker's children)
    # close_fds=False: the only inheritable descriptors here are those the evaluating process passed on purpose
    # (the harness channel, the scorer's result pipe); Python opens everything else non-inheritable
    try:
        child = subprocess.Popen(cmd, preexec_fn=_start(limits), close_fds=False)
    except subprocess.SubprocessError as e:  # the command could not join its cgroup: it is not run unheld
        sys.stderr.write(f"evo: the phase could not be started in its cgroup: {e}\n")
        return 2

    def end(signum, _frame):
        kill_tree(child.pid, marker)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, end)
    signal.signal(signal.SIGINT, end)
    group = limits.group()
    while True:
        try:
            code = child.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            pass
        over = _over(limits, marked_pids(marker))
        if over is not None:
            kill_tree(child.pid, marker)
            sys.stderr.write(over[1] + "\n")
            return over[0]
    hit = _kernel_hit(group) if group is not None else None
    if hit is not None:  # the kernel ended or refused something: name the limit, whatever the exit status says
        kill_tree(child.pid, marker)
        sys.stderr.write(hit[1] + "\n")
        return hit[0]
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
