"""The Population actor: where the population lives, and the store's one writer.

`evo run` starts it pinned to its own node (so the DuckDB file stays on the user's machine while the workers may
be anywhere in the cluster), calls run() and polls status(). It is a threaded actor: status(), query() and stop()
are answered while run() works.
"""

from __future__ import annotations

import logging
import traceback

import ray

from evo.config import RunConfig
from evo.engine import Engine
from evo.errors import EvoError
from evo.store import acquire_lock, open_writer, release_lock
from evo.workers import start_workers

log = logging.getLogger(__name__)

NAMESPACE = "evo"


@ray.remote(num_cpus=0, max_concurrency=8, max_restarts=0)
class Population:
    def __init__(self, config: RunConfig, *, seed_source: str, program: str, bundle_ref, cache_root: str,
                 placement: dict, llm_settings=None, resume_run_id: str | None = None):
        self.error: str | None = None
        self.config = config
        context = ray.get_runtime_context()
        self.lock = acquire_lock(config.db, {"ray_address": context.gcs_address, "namespace": NAMESPACE,
                                             "actor": context.get_actor_name()})
        self.store = open_writer(config.db)
        llm = None
        if llm_settings is not None:
            from operators.llm_client import LLMClient

            spent = self.store.llm_cost(resume_run_id) if resume_run_id else 0.0
            llm = LLMClient(llm_settings, spent_usd=spent)
        state = None
        if resume_run_id:
            run = self.store.resume_run(resume_run_id)
            run_id, state = run.run_id, run.state
        else:
            run_id = self.store.new_run(config.stored())
        self.run_id = run_id
        self.lock.update(run_id=run_id)
        self._bundle_ref, self._cache_root, self._placement = bundle_ref, cache_root, placement
        workers = [self._start_worker(i) for i in range(placement["count"])]
        self.engine = Engine(config, self.store, workers, self._start_worker, run_id=run_id,
                             seed_source=seed_source, program=program, llm_client=llm, state=state,
                             environment={"threads": placement["threads"], "dataset": placement.get("dataset")})

    def _start_worker(self, index: int):
        p = self._placement
        return start_workers(self._bundle_ref, 1, use_gpus=p["use_gpus"], cpus_per_worker=p["cpus_per_worker"],
                             threads=p["threads"], memory_mb=self.config.memory_mb, cache_root=self._cache_root,
                             name_prefix=f"worker-{index}", require_shield=not self.config.allow_unshielded)[0]

    def run_id_(self) -> str:
        return self.run_id

    def run(self) -> dict:
        """Runs the search to its end; returns the final status, with "error" set when the run could not go on."""
        try:
            return self.engine.run()
        except EvoError as e:
            self.error = str(e)
        except Exception as e:  # a bug: keep the traceback in the log, tell the user one line
            log.error("the population loop failed:\n%s", traceback.format_exc())
            self.error = f"internal error: {type(e).__name__}: {e}"
        with self.engine.lock:
            try:
                self.store.finish_run(self.run_id, "failed")
            except EvoError:
                pass
        return {**self.engine.status(), "status": "failed", "error": self.error}

    def status(self) -> dict:
        return self.engine.status()

    def stop(self) -> None:
        self.engine.stop()

    def query(self, sql: str, max_rows: int | None = None, timeout: float | None = 60.0):
        """A read-only query on the live store (`evo sql` during a run), on a cursor of its own."""
        return self.store.query(sql, max_rows=max_rows, timeout=timeout)

    def record_replay(self, individual: dict | None, evaluation: dict | None) -> str | None:
        """For `evo replay` against this live run: stores an ablated variant (returns its id) or a replay
        evaluation, so the driver stays the store's only writer."""
        return self.engine.record_replay(individual, evaluation)

    def close(self) -> None:
        with self.engine.lock:
            self.store.close()
            release_lock(self.lock)
