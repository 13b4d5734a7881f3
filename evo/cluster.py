"""Ray for evo: starting or joining a cluster, sizing the workers, and reaching the actor of a live run.

    start_ray(address)      joins --address (else RAY_ADDRESS) with that cluster's own authentication (RAY_AUTH_MODE,
                            RAY_AUTH_TOKEN as for any Ray client), saying so in one line; without either, starts a
                            local Ray instance of the run's own, with authentication off
    placement(workers)      a Placement: how many workers, and what each holds (one GPU, or a share of the CPUs)
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from evo.errors import ConfigError

NAMESPACE = "evo"


def check_reachable(address: str, asked: str = "--address") -> None:
    """One line, quickly, instead of Ray's long retries when --address (or RAY_ADDRESS: asked) points nowhere."""
    if address in ("auto", "local"):
        return
    match = re.fullmatch(r"(?:ray://)?\[?([^\]]+?)\]?:(\d+)", address)
    if not match:
        raise ConfigError(f"{asked} must be HOST:PORT (a Ray head's GCS address); got {address!r}")
    host, port = match.group(1), int(match.group(2))
    try:
        with socket.create_connection((host, port), timeout=5):
            pass
    except OSError as e:
        raise ConfigError(f"{asked} {address}: cannot reach a Ray cluster there ({e.strerror or e})") from None


def cluster_address(address: str | None) -> tuple[str | None, str]:
    """The cluster to join and who asked for it: --address, else the RAY_ADDRESS environment variable (Ray's own way
    of naming one); (None, "") for a Ray instance of the run's own. Never the cluster last started on the machine
    (Ray's default for ray.init() without an address): a run must not end because another cluster did."""
    if address:
        return address, "--address"
    from_env = os.environ.get("RAY_ADDRESS", "").strip()
    if from_env and from_env != "local":
        return from_env, "RAY_ADDRESS"
    return None, ""


def start_ray(address: str | None) -> str | None:
    """Joins the cluster at address (or RAY_ADDRESS's), or starts a local Ray instance of its own. Returns the line
    saying which cluster it joined, None for its own instance."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address, asked = cluster_address(address)
    if address:
        check_reachable(address, asked)
        try:
            with _from_code_root():
                ray.init(address=address, namespace=NAMESPACE, logging_level=logging.WARNING, log_to_driver=False)
        except ray.exceptions.AuthenticationError:  # token authentication asked for (RAY_AUTH_MODE), and no token
            raise ConfigError(f"{asked} {address}: no token for the cluster's authentication; set RAY_AUTH_TOKEN "
                              f"(or RAY_AUTH_TOKEN_PATH) as for any Ray client of that cluster") from None
        except ConnectionError as e:  # the GCS answers (check_reachable) but refused this client: a missing or
            # wrong token, which Ray reports only in its log lines, or another Ray version
            raise ConfigError(f"{asked} {address}: the Ray cluster there refused this client ({e}); a cluster with "
                              f"token authentication needs RAY_AUTH_MODE=token and its RAY_AUTH_TOKEN (or "
                              f"RAY_AUTH_TOKEN_PATH), as for any Ray client of it") from None
        unset = "; unset RAY_ADDRESS for a Ray instance of the run's own" if asked == "RAY_ADDRESS" else ""
        return f"joined the Ray cluster at {address} ({asked}){unset}"
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # "local": a new instance even where another is running (ray.init() alone would join the one last started)
    with _from_code_root():
        ray.init(address="local", namespace=NAMESPACE, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False)
    return None


# The folder that holds this evo package (a checkout's root, or site-packages): ray.init runs there.
CODE_ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def _from_code_root() -> Iterator[None]:
    """Runs ray.init in CODE_ROOT. Ray puts the driver's working directory first on every worker's sys.path, so
    from the root of another checkout the run actor and the workers would import that checkout's evo while the
    `evo` command uses this one, as do the sandbox's `python -I -m evo.sandbox....` processes (the installed evo,
    whatever the working directory). The driver's own working directory comes back at once; the local instance's
    processes keep CODE_ROOT as theirs."""
    here = os.getcwd()
    os.chdir(CODE_ROOT)
    try:
        yield
    finally:
        os.chdir(here)


def nodes() -> list[dict]:
    """What each alive node of the cluster offers: {"CPU": ..., "GPU": ...}."""
    import ray

    return [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]


@dataclass(frozen=True)
class Placement:
    """Where a run's workers go, built once by placement(); launch narrows it with dataclasses.replace."""

    count: int                  # workers to start
    use_gpus: bool              # one GPU each; else cpus_per_worker CPUs each
    cpus_per_worker: float
    threads: int | None         # torch threads of every evaluation (None on GPUs: torch's own choice)
    fits: int                   # how many of them the nodes can hold at once
    largest: str                # what the largest node offers, for messages ("8 CPU", "2 GPU")
    dataset: str | None = None  # the prepared dataset's key (launch sets it), saved with the run for replay

    @property
    def asks(self) -> str:
        """What one worker asks of a node."""
        return "1 GPU" if self.use_gpus else f"{self.cpus_per_worker:g} CPU"


def placement(workers: int | None, offered: list[dict] | None = None, threads: int | None = None) -> Placement:
    """How many workers, and what each holds, from what each node offers (offered; default: the cluster's nodes).

    Where there are GPUs, one GPU per worker (by default one worker per GPU). On CPU nodes every worker gets the
    same thread count, so every evaluation of a run is scored at the same threads and stays paired: threads (the
    run's own, on --resume), else 2 where the smallest node has 2 cores or more, else 1; never more than the
    smallest node has. By default there are as many workers as the nodes can hold at that count; with --workers N
    and one node, the node's cores are shared among them as before. fits is how many of them the nodes can hold
    at once (the rest wait for a node, and are reported)."""
    offered = nodes() if offered is None else offered
    gpus = sum(int(n.get("GPU", 0)) for n in offered)
    if gpus:
        count = workers or gpus
        return Placement(count=count, use_gpus=True, cpus_per_worker=0, threads=threads, fits=min(count, gpus),
                         largest=f"{max(int(n.get('GPU', 0)) for n in offered)} GPU")
    cores = [int(n.get("CPU", 0)) for n in offered if n.get("CPU", 0) >= 1] or [1]
    smallest = min(cores)
    if workers and len(cores) == 1 and threads in (None, max(1, cores[0] // workers)):
        # One machine: its cores are shared among the workers asked for (a share may be a fraction of a core); a
        # resume with the threads that sharing gives keeps it, so a run of more workers than cores resumes whole.
        return Placement(count=workers, use_gpus=False, cpus_per_worker=cores[0] / workers,
                         threads=max(1, cores[0] // workers), fits=workers, largest=f"{cores[0]} CPU")
    if threads is None:
        threads = max(1, min(smallest, sum(cores) // workers)) if workers else min(2, smallest)
    capacity = sum(c // threads for c in cores)
    count = workers or max(1, capacity)
    return Placement(count=count, use_gpus=False, cpus_per_worker=threads, threads=threads,
                     fits=min(count, capacity), largest=f"{max(cores)} CPU")
