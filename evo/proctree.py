"""Finding and ending every process an evaluation started.

Each evaluation's processes carry a marker in their environment (inherited by everything they start) and start
in a session of their own. Ending an evaluation kills its process group and then every process on the machine that
still carries its marker, which also catches processes that left the session with setsid() or double-forked.
evo.supervise, which stands between a worker and each phase, does this when the worker dies.

What this cannot catch: a process that both leaves the session and execs itself with a cleared environment
(/proc/PID/environ keeps the environment a process started with). Containing that needs
cgroups or a PID namespace, which this layer does not assume are available.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

MARKER_VAR = "EVO_EVAL_MARKER"


def marked_pids(marker: str) -> list[int]:
    """Every live process whose environment holds MARKER_VAR=marker."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:  # gone already, or not ours to read
            continue
        if needle in env.split(b"\0"):
            found.append(int(entry.name))
    return found


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
