"""What an evaluation's score depends on besides its seed and budget: the threads it trains on, the device, the CPU
model, the torch version, and the harness and dataset it was scored with. Each evaluation stores them; a resumed run
must reproduce them, or say which changed."""

from __future__ import annotations

import glob
import hashlib
import platform
from importlib import metadata
from pathlib import Path

# The conditions a resume compares (the dataset and harness are compared through the run's bundle).
COMPARED = ("threads", "device", "cpu", "gpu", "torch")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_model(visible: str | None) -> str | None:
    """The model of the first GPU a worker sees (from the NVIDIA driver's files; no CUDA needed), or None."""
    if not visible:
        return None
    for info in sorted(glob.glob("/proc/driver/nvidia/gpus/*/information")):
        try:
            for line in Path(info).read_text().splitlines():
                if line.startswith("Model:"):
                    return line.split(":", 1)[1].strip()
        except OSError:
            continue
    return "GPU"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine(threads: int | None, visible_gpus: str | None = None) -> dict:
    """This process's machine, as a worker with threads and the visible GPUs would train on it."""
    return {"threads": threads, "device": "cuda" if visible_gpus else "cpu", "cpu": cpu_model(),
            "gpu": gpu_model(visible_gpus), "torch": _version("torch"), "python": platform.python_version()}


def files_digest(files: dict[str, bytes]) -> str:
    """A digest of named files' bytes (16 hex digits), whatever order they come in."""
    h = hashlib.sha256()
    for name, data in sorted(files.items()):
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:16]


def task(harness_files: dict[str, bytes], dataset_key: str) -> dict:
    """The harness's fingerprint (its files' bytes) and the dataset's key."""
    return {"harness": files_digest(harness_files), "dataset": dataset_key}


def changes(before: dict, now: dict, keys=COMPARED + ("harness", "dataset")) -> list[str]:
    """What differs between two sets of conditions, one phrase each ("threads 2 -> 1")."""
    return [f"{k} {before.get(k)} -> {now.get(k)}" for k in keys if k in before and before.get(k) != now.get(k)]
