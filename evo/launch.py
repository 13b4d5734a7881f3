"""Starting a run: settles its settings, checks what it needs, and starts the run actor on Ray.

    launch = settle(config, given, notify)      # refusals are ConfigError/StoreError/TaskError, one line each
    with start(launch) as run:                  # Ray started or joined, the run actor holding the store
        run.status(); run.done(timeout); run.stop()

- the run actor holds the store and its lock file (`<db>.lock`, see evo.store.lock) for the whole run, and writes
  into it where it can be reached (Ray's address, namespace and its own name): that is how `evo status` and `evo sql`
  reach a live run
- this process is Ray's driver: API keys are read here, kept in memory for the run actor's LLM client, and removed
  from the environment before Ray starts, so no worker or training process inherits them
- the workers' Placement (evo.cluster) is built once and narrowed with dataclasses.replace; what the run actor's
  open() raises comes back as the exception itself (Ray's RayTaskError.cause), and an EvoError is raised again as it
  was
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from evo.config import RunConfig, read_text_file, with_default_budget
from evo.errors import ConfigError, EvoError, StoreError, StoreInUse, first_line
from evo.run_status import RunStatus
from evo.sandbox import shield
from evo.sandbox.environment import is_secret, passed_values

if TYPE_CHECKING:
    from evo.cluster import Placement

log = logging.getLogger(__name__)


@dataclass
class Launch:
    """What a run starts from, once every check has passed."""

    config: RunConfig
    bundle: object                      # evo.workers.TaskBundle
    cache_root: str
    seed_source: str
    program: str
    llm_settings: object | None
    resume_run_id: str | None
    stored_state: dict | None = None    # the resumed run's saved state (its workers, threads and conditions)
    passed_env: dict | None = None      # the values of the variables config.env names (--env), read here
    harness_api: tuple[str, ...] = ()   # the names a train.py may import from the harness in use (its __all__)


# Ray's own credentials for joining a cluster that requires a token: the driver needs them to connect, and the
# sandbox still keeps them (like every secret) out of training and scoring processes.
RAY_CREDENTIALS = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def _scrub_secrets() -> None:
    for key in [k for k in os.environ if is_secret(k) and k not in RAY_CREDENTIALS]:
        del os.environ[key]


def settle(config: RunConfig, given: set[str], notify: Callable[[str], None]) -> Launch:
    """The run's settings (the stored ones on --resume), its seed, program, data and LLM settings, checked.
    notify gets the notes worth a line (no API key, data being prepared)."""
    from evo.errors import TaskError
    from evo.evaluate_file import ensure_dataset
    from evo.store import describe_lock, lock_is_live, read_lock
    from evo.task_files import fixed_files, harness_path, load_harness, read_genome_file
    from evo.workers import bundle_task
    from genome import HarnessAPIError, read_harness_api, validate
    from operators.llm_client import UNAVAILABLE, settings_from_env
    from operators.registry import REGISTRY

    _check_writable(config.db)
    harness = harness_path()
    try:  # the validator checks against the harness this run uses (a task folder's own), not the packaged one
        harness_api = read_harness_api(harness)
    except HarnessAPIError as e:
        raise TaskError(str(e)) from None
    resume_run_id = stored_state = None
    if config.resume:
        if not Path(config.db).exists():
            raise ConfigError(f"--resume: no database at {config.db}")
        with _open_when_released(config.db, notify) as reader:
            stored = reader.latest_run()
            if stored is None:
                raise ConfigError(f"--resume: {config.db} has no run to resume")
            if stored.state is None:
                raise ConfigError(f"--resume: run {stored.run_id} in {config.db} never got past its start")
            config = config.with_stored(stored.config, given)
            if "workers" not in given and stored.state.get("workers"):
                config = dataclasses.replace(config, workers=stored.state["workers"])  # the run's own count
            stored_state = stored.state
            individuals = reader.individuals(stored.run_id, with_source=True)
            if not individuals or individuals[0].source is None:
                raise ConfigError(f"--resume: run {stored.run_id} in {config.db} holds no seed to resume from")
            seed_source, program = individuals[0].source, stored.state.get("program", "")
            resume_run_id = stored.run_id
    else:
        seed_source = read_genome_file(config.train)
        program = read_text_file(config.program, "--program")
        verdict = validate(seed_source, harness_api)
        if not verdict.ok:
            raise ConfigError(f"--train {config.train} is refused by the validator: {verdict.reason}")

    _check_bounds(config.bounds, seed_source)
    if (why := shield.unavailable()) is not None and not config.allow_unshielded:
        raise ConfigError(f"training cannot be shielded on this machine ({why}), so children could forge their "
                          f"scores; pass --allow-unshielded to search anyway")
    # The run actor may run in another working directory (a cluster's worker): it gets an absolute path.
    config = dataclasses.replace(config, db=str(Path(config.db).expanduser().resolve()))
    llm_settings = None
    if any(REGISTRY.get(name).needs_llm for name in config.operators):
        settings = settings_from_env(os.environ, model=config.model, max_cost_usd=config.max_llm_cost,
                                     timeout_s=config.llm_timeout)
        if settings.available:
            llm_settings = settings
        else:
            notify(UNAVAILABLE)
    passed_env = passed_values(config.env, os.environ)  # before the scrub: a named variable goes whatever its name
    _scrub_secrets()

    config = with_default_budget(config, load_harness(harness).DEFAULT_BUDGET_SECONDS)
    dataset, _ = ensure_dataset(harness, notify=notify)
    bundle = bundle_task([harness, *fixed_files(harness)], dataset)

    holder = read_lock(config.db)
    if holder and lock_is_live(holder):  # the run actor takes the lock itself; this only fails early and clearly
        raise StoreInUse(f"{Path(config.db).name} is in use by a live run ({describe_lock(holder)})")
    cache_root = str(load_harness(harness).cache_dir())  # where workers put the bundle: prepare.py's cache
    return Launch(config, bundle, cache_root, seed_source, program, llm_settings, resume_run_id, stored_state,
                  passed_env, harness_api)


def _check_bounds(bounds: dict, seed_source: str) -> None:
    """--bounds names constants the hyper operators change in the seed, and holds the seed's own values."""
    from genome import hyperparameters, infer_rules

    if not bounds:
        return
    view, domains = hyperparameters(seed_source), infer_rules(seed_source).domains
    for name, (low, high) in bounds.items():
        if name not in domains:
            raise ConfigError(f"--bounds {name}: the seed has no such constant for the hyper operators to change "
                              f"(they change {', '.join(sorted(domains))})")
        value = view[name].value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"--bounds {name}: the seed's {name} = {view[name].text} is not a number")
        if not low <= value <= high:
            raise ConfigError(f"--bounds {name}={low:g}:{high:g} leaves out the seed's own {name} = "
                              f"{view[name].text}")


def _check_writable(db: str) -> None:
    """The run writes the store and its lock file beside it: a folder or file it cannot write (a read-only mount;
    root ignores file modes, not those) is refused here in one line, before Ray starts."""
    path = Path(db).expanduser()
    for target in (path.parent, path) if path.exists() else (path.parent,):
        try:
            read_only = bool(os.statvfs(target).f_flag & os.ST_RDONLY)
        except OSError:
            continue  # a folder that does not exist: DuckDB says so when it opens the store
        if read_only or not os.access(target, os.W_OK):
            why = "it is on a read-only file system" if read_only else "no permission to write it"
            raise StoreError(f"--db {db}: cannot write {target} ({why}); a run writes its store there")


RELEASE_WAIT = 20.0   # seconds a resume waits for a run actor that is still letting go of the store


def _open_when_released(db: str, notify: Callable[[str], None]):
    """A reader of db; while the actor of the run being resumed is still letting go of the file (a killed `evo
    run` whose run actor is shutting down), waits up to RELEASE_WAIT for it, saying so once."""
    from evo.store import lock_is_live, open_reader, read_lock

    deadline = time.monotonic() + RELEASE_WAIT
    said = False
    while True:
        try:
            return open_reader(db)
        except StoreInUse:
            holder = read_lock(db) or {}
            # The lock's own liveness check, on the driver that started the run actor (another host: live).
            driver_live = not holder.get("driver_pid") or \
                lock_is_live({**holder, "pid": holder["driver_pid"], "pid_start": None})
            if time.monotonic() > deadline or driver_live:
                raise
            if not said:
                notify(f"waiting up to {RELEASE_WAIT:g} s for the previous run to let go of {Path(db).name}")
                said = True
            time.sleep(0.5)


class LiveRun:
    """A started run: its actor, its id, where its workers are, and the calls `evo run` watches it with."""

    def __init__(self, actor, run_id: str, where: Placement, resumed: bool, notes: list[str] = ()):
        self.actor, self.run_id, self.where, self.resumed = actor, run_id, where, resumed
        self.notes = list(notes)            # what the user should hear before the run's own notes
        self._done = actor.run.remote()

    def describe(self) -> str:
        each = "one GPU each" if self.where.use_gpus else f"{self.where.threads} thread(s) each"
        return f"{self.where.count} worker(s) ({each})"

    def status(self) -> RunStatus:
        import ray

        return ray.get(self.actor.status.remote(), timeout=30)

    def done(self, timeout: float) -> RunStatus | None:
        """The final status once the run has ended (None while it goes on, after waiting up to timeout)."""
        import ray

        ready, _ = ray.wait([self._done], timeout=timeout)
        if not ready:
            return None
        try:
            return ray.get(self._done)
        except ray.exceptions.RayActorError as e:
            return _died(self.run_id, f"the run actor died: {first_line(e)}")

    def stop(self) -> None:
        """Asks the run to stop: in-flight evaluations are stored as interrupted, and done() then returns."""
        self.actor.stop.remote()

    def stacks(self, timeout: float = 5.0) -> str:
        """Where the run actor's threads are (its answer within timeout seconds, or why there is none)."""
        import ray

        try:
            return ray.get(self.actor.stacks.remote(), timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            return f"the run actor did not answer within {timeout:g} s"
        except ray.exceptions.RayError as e:
            return f"the run actor could not answer: {first_line(e)}"

    def close(self) -> None:
        import ray

        try:
            ray.get(self.actor.close.remote(), timeout=30)
        except ray.exceptions.RayError as e:  # the actor is gone, did not answer in time, or its close() failed
            log.warning("the run actor did not close the store: %s", first_line(e))


def _died(run_id: str, error: str) -> RunStatus:
    from evo.choices import Phase
    from evo.run_status import EvaluationCounts

    return RunStatus.build(run_id=run_id, phase=Phase.FAILED, active_seconds=0.0, busy_seconds=0.0, workers=0,
                           best=None, evaluations=EvaluationCounts(), target_evaluations=None, noise_floor=None,
                           population=0, individuals=0, llm_cost_usd=0.0, llm_calls=0).failed(error)


@contextmanager
def start(launch: Launch) -> Iterator[LiveRun]:
    """Starts Ray (an instance of the run's own; a cluster only when --address or RAY_ADDRESS names one, said in
    the first note) and the run actor; shuts Ray down on the way out."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from evo.cluster import placement, start_ray
    from evo.run_actor import RunActor

    config = launch.config
    joined = start_ray(config.address)
    try:
        stored = launch.stored_state or {}
        where = placement(config.workers, threads=stored.get("threads") if launch.resume_run_id else None)
        if where.fits == 0 and launch.resume_run_id and not where.use_gpus:
            if not config.accept_changes:
                raise ConfigError(f"--resume cannot reproduce the run's conditions (threads {where.threads}: the "
                                  f"largest node has {where.largest}): pass --accept-changes to go on with fewer "
                                  f"threads (the store records the change)")
            where = placement(config.workers)
        notes = [joined] if joined else []
        where, narrowed = _check_placement(where)
        notes += narrowed
        where = dataclasses.replace(where, dataset=launch.bundle.dataset_key)
        environment = {"changes": list(stored.get("changes", []))}
        if stored.get("conditions"):
            changed = _changed_conditions(stored["conditions"], where, launch.bundle)
            if changed and not config.accept_changes:
                raise ConfigError(f"--resume cannot reproduce the run's conditions ({'; '.join(changed)}): scores "
                                  f"from here on would not be paired with those before; pass --accept-changes to "
                                  f"go on anyway (the store records the change)")
            if changed:
                environment["changes"].append({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                               "changed": changed})
                notes.append(f"resuming with changed conditions ({'; '.join(changed)}), as --accept-changes asks")
        name = f"evo-run-{os.getpid()}-{int(time.time())}"
        node = ray.get_runtime_context().get_node_id()
        actor = RunActor.options(
            name=name, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False)).remote(
            config, seed_source=launch.seed_source, program=launch.program, bundle_ref=ray.put(launch.bundle),
            cache_root=launch.cache_root, placement=where, llm_settings=launch.llm_settings,
            resume_run_id=launch.resume_run_id, environment=environment, driver_pid=os.getpid(),
            passed_env=launch.passed_env, harness_api=launch.harness_api)
        run_id = _opened(actor)
        yield LiveRun(actor, run_id, where, resumed=launch.resume_run_id is not None, notes=notes)
    finally:
        ray.shutdown()


def _check_placement(where: Placement) -> tuple[Placement, list[str]]:
    """Leaves out the workers no node can hold, with a line saying so; ConfigError when none fits."""
    if where.fits == 0:
        raise ConfigError(f"no worker fits on this cluster: each asks for {where.asks} and the largest node has "
                          f"{where.largest}; give --workers a larger count or add nodes")
    if where.fits < where.count:
        note = (f"{where.count - where.fits} of {where.count} workers cannot be placed: each asks for "
                f"{where.asks} and the nodes hold {where.fits} (the largest has {where.largest}); going on with "
                f"{where.fits}")
        return dataclasses.replace(where, count=where.fits), [note]
    return where, []


def _changed_conditions(before: dict, where: Placement, bundle) -> list[str]:
    """What a resume here would change in the stored run's conditions (threads, device, CPU, GPU, torch, harness,
    data), as seen from this machine (the driver's node)."""
    from evo import conditions

    now = {**conditions.machine(where.threads, "0" if where.use_gpus else None),
           **conditions.task(bundle.harness_files, bundle.dataset_key)}
    keys = ("threads", "device", "cpu", "torch", "harness", "dataset") + (("gpu",) if where.use_gpus else ())
    return conditions.changes(before, now, keys)


def _opened(actor) -> str:
    """The run actor's open(): its run id. What open() raised comes back as Ray's RayTaskError with the exception
    itself as its cause: an EvoError is raised again as it was (one line for the user); anything else, or an actor
    that died before it could answer, is a StoreError saying so."""
    import ray

    try:
        return ray.get(actor.open.remote())
    except ray.exceptions.RayTaskError as e:
        ray.kill(actor)  # it let go of the store; nothing else of it is needed
        if isinstance(e.cause, EvoError):
            raise e.cause from None
        raise StoreError(f"the run actor failed to start: {first_line(e.cause, typed=True)}") from None
    except ray.exceptions.RayActorError as e:
        raise StoreError(f"the run actor died before the run started: {first_line(e)}") from None
