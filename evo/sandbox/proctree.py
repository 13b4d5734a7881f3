"""Finding and ending every process an evaluation started.

- Each evaluation's processes carry a marker in their environment (inherited by everything they start) and start
  in a session of their own.
- Ending an evaluation kills its process group, then every process on the machine that still carries its marker
  (which catches processes that left the session with setsid() or double-forked). evo.sandbox.supervise does this
  when the worker dies, and the training process dies with the supervisor.
- A marker names the process that owns the evaluation, so whatever a SIGKILLed worker or driver left behind is
  swept before the next evaluation on that machine (sweep_orphans).
- Not caught here: a process that both leaves the session and execs itself with a cleared environment
  (/proc/PID/environ keeps the environment a process started with). Where evo.sandbox.shield runs the training
  process, its PID namespace catches that too; this layer does not assume namespaces are available.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
import uuid
from pathlib import Path

MARKER_VAR = "EVO_EVAL_MARKER"
_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Asks the kernel to send this process sig when its parent dies, even by SIGKILL (Linux's PR_SET_PDEATHSIG).
    Returns whether it took; False where libc has no prctl."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _start_time(pid: int) -> str | None:
    """The kernel's start time of pid (field 22 of /proc/PID/stat), which tells a reused pid from the original."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def new_marker() -> str:
    """A marker naming this process as the owner of the evaluation: OWNERPID.STARTTIME.RANDOM."""
    return f"{os.getpid()}.{_start_time(os.getpid())}.{uuid.uuid4().hex[:12]}"


def owner_gone(marker: str) -> bool:
    """Whether the process a marker names as the evaluation's owner is gone (its pid ended, or now names another
    process); a string that is not a marker is never an owner's."""
    owner, _, rest = marker.partition(".")
    started = rest.partition(".")[0]
    return owner.isdigit() and _start_time(int(owner)) != started


def sweep_orphans() -> list[int]:
    """Kills every marked process whose owner (the process that ran the evaluation) is gone: what a SIGKILLed
    worker or driver left behind. Returns the pids it killed."""
    killed = []
    for pid, marker in _all_markers().items():
        if owner_gone(marker):
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except (ProcessLookupError, PermissionError):
                pass
    return killed


def _all_markers() -> dict[int, str]:
    prefix = f"{MARKER_VAR}=".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        for item in env.split(b"\0"):
            if item.startswith(prefix):
                found[int(entry.name)] = item[len(prefix):].decode(errors="replace")
    return found


def marked_pids(marker: str) -> list[int]:
    """Every live process whose environment holds MARKER_VAR=marker."""
    return [pid for pid, value in _all_markers().items() if value == marker]


def kill_tree(pid: int, marker: str, grace: float = 0.0) -> None:
    """Ends the process group led by pid and every process carrying the marker. With grace > 0, sends SIGTERM
    first and waits that long before SIGKILL."""
    me = os.getpid()
    for sig in ((signal.SIGTERM, signal.SIGKILL) if grace > 0 else (signal.SIGKILL,)):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        for other in marked_pids(marker):
            if other != me:
                try:
                    os.kill(other, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        if sig == signal.SIGTERM:
            time.sleep(grace)
