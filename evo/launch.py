"""`evo run`: settles the settings, starts or joins Ray, starts the Population actor and shows the run live.

The Population actor holds the store and its lock file (`<db>.lock`, see evo.store.lock) for the whole run, and
writes into it where it can be reached (Ray's address, namespace and its own name): that is how `evo status` and
`evo sql` reach a live run. API keys are read here, kept in memory for the driver, and removed from
the environment before Ray starts, so no worker or training process inherits them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import socket
import sys
import time
from pathlib import Path

from evo import shield
from evo.config import RunConfig, read_text_file
from evo.errors import ConfigError, EvoError, StoreError
from evo.live import LiveView
from evo.sandbox import is_secret

log = logging.getLogger(__name__)


def _check_reachable(address: str) -> None:
    """One line, quickly, instead of Ray's long retries when --address points nowhere."""
    if address in ("auto", "local"):
        return
    match = re.fullmatch(r"(?:ray://)?\[?([^\]]+?)\]?:(\d+)", address)
    if not match:
        raise ConfigError(f"--address must be HOST:PORT (a Ray head's GCS address); got {address!r}")
    host, port = match.group(1), int(match.group(2))
    try:
        with socket.create_connection((host, port), timeout=5):
            pass
    except OSError as e:
        raise ConfigError(f"--address {address}: cannot reach a Ray cluster there ({e.strerror or e})") from None


def start_ray(address: str | None) -> None:
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from evo.driver import NAMESPACE

    if address:
        _check_reachable(address)
        ray.init(address=address, namespace=NAMESPACE, logging_level=logging.WARNING, log_to_driver=False)
    else:
        ray.init(namespace=NAMESPACE, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)


def placement(workers: int | None) -> dict:
    """How many workers (workers, or by default one per GPU, else one per 2 CPUs), and what each holds: one GPU
    each when the cluster has GPUs, else an equal share of the CPUs, with torch threads to match."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = float(resources.get("CPU", 1))
    if gpus:
        count = workers or gpus
        return {"count": count, "use_gpus": True, "cpus_per_worker": 0, "threads": None}
    count = workers or max(1, int(cpus // 2))
    per = cpus / count
    return {"count": count, "use_gpus": False, "cpus_per_worker": per, "threads": max(1, int(per))}


def _scrub_secrets() -> None:
    for key in [k for k in os.environ if is_secret(k)]:
        del os.environ[key]


def run(config: RunConfig, given: set[str]) -> int:
    """The whole of `evo run`; returns the exit status."""
    from evo.evaluate_file import ensure_dataset
    from evo.store import describe_lock, lock_is_live, open_reader, read_lock
    from evo.task import fixed_files, harness_path, load_harness, read_genome_file
    from evo.workers import bundle_task
    from genome import validate
    from operators.llm_client import UNAVAILABLE, settings_from_env
    from operators.registry import REGISTRY

    resume_run_id = None
    if config.resume:
        if not Path(config.db).exists():
            raise ConfigError(f"--resume: no database at {config.db}")
        with open_reader(config.db) as reader:
            stored = reader.latest_run()
            if stored is None:
                raise ConfigError(f"--resume: {config.db} has no run to resume")
            if stored.state is None:
                raise ConfigError(f"--resume: run {stored.run_id} in {config.db} never got past its start")
            config = config.with_stored(stored.config, given)
            seed = reader.individuals(stored.run_id, with_source=True)[0]
            seed_source, program = seed.source, stored.state.get("program", "")
            resume_run_id = stored.run_id
    else:
        seed_source = read_genome_file(config.train)
        program = read_text_file(config.program, "--program")
        verdict = validate(seed_source)
        if not verdict.ok:
            raise ConfigError(f"--train {config.train} is refused by the validator: {verdict.reason}")

    if (why := shield.unavailable()) is not None and not config.allow_unshielded:
        raise ConfigError(f"training cannot be shielded on this machine ({why}), so children could forge their "
                          f"scores; pass --allow-unshielded to search anyway")
    # The driver may run in another working directory (a cluster's worker): it gets an absolute path.
    config = dataclasses.replace(config, db=str(Path(config.db).expanduser().resolve()))
    llm_settings = None
    if any(REGISTRY.get(name).needs_llm for name in config.operators):
        settings = settings_from_env(os.environ, model=config.model, max_cost_usd=config.max_llm_cost)
        if settings.available:
            llm_settings = settings
        else:
            print(f"evo run: {UNAVAILABLE}", file=sys.stderr)
    _scrub_secrets()

    harness = harness_path()
    if config.budget_seconds is None and config.budget_tokens is None:  # the harness's own default budget
        config = dataclasses.replace(config, budget_seconds=float(load_harness(harness).DEFAULT_BUDGET_SECONDS))
    dataset, _ = ensure_dataset(harness, notify=lambda m: print(m, file=sys.stderr))
    bundle = bundle_task([harness, *fixed_files(harness)], dataset)

    holder = read_lock(config.db)
    if holder and lock_is_live(holder):  # the driver takes the lock itself; this only fails early and clearly
        raise StoreError(f"{Path(config.db).name} is in use by a live run ({describe_lock(holder)})")
    cache_root = str(load_harness(harness).cache_dir())  # where workers put the bundle: prepare.py's cache
    return _run_live(config, bundle, cache_root, seed_source, program, llm_settings, resume_run_id)


def _run_live(config, bundle, cache_root, seed_source, program, llm_settings, resume_run_id) -> int:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from evo.driver import NAMESPACE, Population

    start_ray(config.address)
    try:
        where = {**placement(config.workers), "dataset": bundle.dataset_key}
        name = f"evo-population-{os.getpid()}-{int(time.time())}"
        node = ray.get_runtime_context().get_node_id()
        actor = Population.options(
            name=name, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False)).remote(
            config, seed_source=seed_source, program=program, bundle_ref=ray.put(bundle), cache_root=cache_root,
            placement=where, llm_settings=llm_settings, resume_run_id=resume_run_id)
        try:
            run_id = ray.get(actor.run_id_.remote())
        except ray.exceptions.RayActorError as e:
            raise StoreError(_actor_error(e)) from None
        what = "resumed" if resume_run_id else "started"
        each = "one GPU each" if where["use_gpus"] else f"{where['threads']} thread(s) each"
        print(f"run {run_id} {what}: {where['count']} worker(s) ({each}), db {config.db}", flush=True)
        if (why := shield.unavailable()) is not None:
            print(f"note: training runs without the shield on this machine ({why}): --allow-unshielded", flush=True)
        final = _watch(actor, config)
    finally:
        ray.shutdown()
    return _report(final, config)


def _actor_error(e: Exception) -> str:
    text = str(e)
    for line in text.splitlines():
        if "StoreError" in line or "ConfigError" in line or "EvoError" in line:
            return line.split(":", 1)[-1].strip()
    return text.splitlines()[-1] if text else "the population actor failed to start"


def _watch(actor, config: RunConfig) -> dict:
    import ray

    done_ref = actor.run.remote()
    stopping = False
    with LiveView(quiet=config.quiet) as view:
        while True:
            try:
                ready, _ = ray.wait([done_ref], timeout=1.0)
                if ready:
                    try:
                        final = ray.get(done_ref)
                    except ray.exceptions.RayActorError as e:
                        final = {"status": "failed", "error": f"the population actor died: {str(e).splitlines()[0]}"}
                    break
                view.update(ray.get(actor.status.remote(), timeout=30))
            except KeyboardInterrupt:
                if stopping:
                    raise
                stopping = True
                print("\nstopping: recording in-flight evaluations as interrupted (Ctrl-C again to abandon)",
                      file=sys.stderr, flush=True)
                actor.stop.remote()
        if "best" in final:
            view.update(final)
    try:
        ray.get(actor.close.remote(), timeout=30)
    except Exception:  # the actor may be gone
        pass
    return final


def _report(final: dict, config: RunConfig) -> int:
    if final.get("error"):
        print(f"evo run: error: {final['error']}", file=sys.stderr)
        return 1
    ev = final.get("evaluations", {})
    print(f"run {final.get('run_id')} {final.get('status')}: {ev.get('search_done', 0)} search, "
          f"{ev.get('confirm_done', 0)} confirm, {ev.get('noise_done', 0)} noise evaluations; "
          f"{ev.get('failed', 0)} failed")
    best = final.get("best")
    if best:
        spread = f" ± {best['std_bpb']:.4f}" if best.get("std_bpb") is not None else ""
        print(f"best: {best['id']}  val_bpb {best['mean_bpb']:.4f}{spread} over {best['n']} evaluations "
              f"({best['n_confirm']} confirm)")
        print(f"lineage: evo lineage {best['id']} --db {config.db}")
    if final.get("status") == "interrupted":
        print(f"resume with: evo run --resume --db {config.db}")
        return 130
    return 0
