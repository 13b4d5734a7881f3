"""The run actor: where a live run's population lives, and the store's one writer.

- `evo run` (Ray's driver) starts it pinned to its own node, so the DuckDB file stays on the user's machine while
  the workers may be anywhere in the cluster; it calls run() and polls status()
- a threaded actor: status(), read() and stop() are answered while run() works; read() serves other processes the
  store's reads (evo.store.live)
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback

import ray

from evo.cluster import NAMESPACE, Placement
from evo.config import RunConfig
from evo.engine import Engine
from evo.errors import EvoError, StoreError, first_line
from evo.run_status import RunStatus
from evo.store import READS, acquire_lock, open_writer, release_lock
from evo.workers import start_workers

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0, max_concurrency=8, max_restarts=0)
class RunActor:
    def __init__(self, config: RunConfig, *, seed_source: str, program: str, bundle_ref, cache_root: str,
                 placement: Placement, llm_settings=None, resume_run_id: str | None = None,
                 environment: dict | None = None, driver_pid: int | None = None, passed_env: dict | None = None,
                 harness_api: tuple[str, ...] | None = None):
        """Keeps what open() starts the run from. passed_env: the values of the variables config.env names, read
        where `evo run` started; they go to the workers and never into the store (the config keeps only their
        names)."""
        self.error: str | None = None
        self._passed_env = dict(passed_env or {})
        self.config = config
        self._seed_source, self._program, self._llm_settings = seed_source, program, llm_settings
        self._resume_run_id, self._environment, self._driver_pid = resume_run_id, environment, driver_pid
        self._bundle_ref, self._cache_root, self._placement = bundle_ref, cache_root, placement
        self._harness_api = harness_api   # the names a child may import from the harness in use (its __all__)
        self.lock = self.store = None

    def open(self) -> str:
        """Takes the store's lock, opens the store, starts the workers and the engine; returns the run's id. What
        it raises reaches the caller as the exception itself (Ray's RayTaskError.cause); the lock and the store are
        let go of first."""
        try:
            return self._open()
        except BaseException:
            if self.store is not None:
                self.store.close()
            if self.lock is not None:
                release_lock(self.lock)
            raise

    def _open(self) -> str:
        config, placement, resume_run_id = self.config, self._placement, self._resume_run_id
        context = ray.get_runtime_context()
        self.lock = acquire_lock(config.db, {"ray_address": context.gcs_address, "namespace": NAMESPACE,
                                             "actor": context.get_actor_name(), "driver_pid": self._driver_pid})
        self.store = open_writer(config.db)
        llm = None
        if self._llm_settings is not None:
            from operators.llm_client import LLMClient

            spent = self.store.llm_cost(resume_run_id) if resume_run_id else 0.0
            llm = LLMClient(self._llm_settings, spent_usd=spent)
        state = None
        if resume_run_id:
            run = self.store.resume_run(resume_run_id)
            run_id, state = run.run_id, run.state
        else:
            run_id = self.store.new_run(config.stored())
        self.run_id = run_id
        self.lock.update(run_id=run_id)
        workers = [self._start_worker(i) for i in range(placement.count)]
        self.engine = Engine(config, self.store, workers, self._start_worker, run_id=run_id,
                             seed_source=self._seed_source, program=self._program, llm_client=llm, state=state,
                             harness_api=self._harness_api,
                             environment={**(self._environment or {}), "threads": placement.threads,
                                          "dataset": placement.dataset})
        return run_id

    def _start_worker(self, index: int):
        p = self._placement
        return start_workers(self._bundle_ref, 1, use_gpus=p.use_gpus, cpus_per_worker=p.cpus_per_worker,
                             threads=p.threads, memory_mb=self.config.memory_mb, disk_mb=self.config.disk_mb,
                             cache_root=self._cache_root,
                             name_prefix=f"worker-{index}", require_shield=not self.config.allow_unshielded,
                             env=self._passed_env)[0]

    def run(self) -> RunStatus:
        """Runs the search to its end; returns the final status, with an error when the run could not go on."""
        try:
            return self.engine.run()
        except EvoError as e:
            self.error = str(e)
        except Exception as e:  # a bug: keep the traceback in the log, tell the user one line
            log.error("the population loop failed:\n%s", traceback.format_exc())
            self.error = f"internal error: {first_line(e, typed=True)}"
        with self.engine.lock:
            try:
                self.store.finish_run(self.run_id, "failed")
            except EvoError:
                pass
        return self.engine.status().failed(self.error)

    def status(self) -> RunStatus:
        return self.engine.status()

    def stop(self) -> None:
        self.engine.stop()

    def stacks(self) -> str:
        """Where each of the actor's threads is now: for a run that does not stop when asked."""
        names = {t.ident: t.name for t in threading.enumerate()}
        return "\n".join(f"thread {names.get(ident, ident)}:\n" + "".join(traceback.format_stack(frame))
                         for ident, frame in sys._current_frames().items())

    def read(self, name: str, args: tuple, kwargs: dict):
        """One of the store's reads (evo.store.READS) for another process; the live run's status is the
        executor's own, which knows what is running now."""
        if name not in READS:
            raise StoreError(f"{name!r} is not a read of the store")
        if name == "run_status" and (args or (kwargs.get("run_id"),))[0] in (None, self.run_id):
            return self.engine.status()
        if name == "query":
            kwargs = {"timeout": 60.0, **kwargs}
        return getattr(self.store, name)(*args, **kwargs)

    def record_replay(self, individual: dict | None, evaluation: dict | None) -> str | None:
        """For `evo replay` against this live run: stores an ablated variant (returns its id) or a replay
        evaluation, so this actor stays the store's only writer."""
        return self.engine.record_replay(individual, evaluation)

    def close(self) -> None:
        with self.engine.lock:
            self.store.close()
            release_lock(self.lock)
