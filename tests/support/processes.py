"""Finding an evaluation's processes from outside, by what they run: the pid a child prints is the one it has
inside the shield's PID namespace, not the one this machine knows it by."""

import os


def processes(needle: str) -> list[int]:
    """Live processes whose command line, or whose train.py in their working directory, contains needle."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
            if not cmd:
                continue  # a zombie: it has exited
            if needle in cmd:
                found.append(int(entry))
            elif "train.py" in cmd:
                with open(os.path.join(os.readlink(f"/proc/{entry}/cwd"), "train.py")) as f:
                    if needle in f.read():
                        found.append(int(entry))
        except OSError:
            continue
    return found
