"""The store's one writer: the run actor's. Every method commits before it returns, so a killed run loses nothing a
method returned for.

In:  plain values and the engine's own records (sandbox.EvalResult, operators.usage.LLMUsage, or mappings with the
same fields).   Out: ids (run id, individual id, evaluation id); StoreError, one line, for anything the store
refuses (an unknown run or parent, a bad status, an id already taken).

    lock = acquire_lock("evo.duckdb", {"namespace": ..., "actor": ...})    # in the process that will write
    store = open_writer("evo.duckdb")
    run_id = store.new_run(config)                    # or: run = store.resume_run(store.latest_run().run_id)
    lock.update(run_id=run_id)
    store.add_individual(run_id, source=seed_text, operator="seed", id=genome.id)
    child = store.add_individual(run_id, source=text, operator="hyper.mutate", parents=(genome.id,),
                                 description="LEARNING_RATE 3e-3 -> 4.1e-3", llm_calls=variation.usage)
    store.add_evaluation(run_id, child, result, purpose="search", worker="w0")
    store.set_population(run_id, ids)
    store.save_state(run_id, {"rng": ..., "counters": ...})
    store.finish_run(run_id, "finished")
    store.close(); lock.release()
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb

from evo.errors import StoreError, StoreInUse, first_line
from evo.results import typed
from evo.store.lock import describe_lock, lock_is_live, read_lock
from evo.store.reader import StoreReader, connect
from evo.store.records import Run, as_mapping
from evo.store.schema import (
    EVALUATION_STATUSES,
    INDIVIDUAL_STATUSES,
    PURPOSES,
    RUN_STATUSES,
    create_schema,
)
from genome.individual import content_hash, normalise

log = logging.getLogger(__name__)

# The evaluation record's fields (sandbox.EvalResult) that become columns of the same name.
_EVALUATION_FIELDS = ("seed", "budget_seconds", "budget_tokens", "status", "val_bpb", "test_bpb", "training_seconds",
                      "eval_seconds", "total_seconds", "tokens", "num_steps", "num_params", "peak_memory_mb",
                      "device", "error", "log", "conditions", "limits")
_LLM_FIELDS = ("operator", "model", "purpose", "status", "input_tokens", "output_tokens", "cache_read_tokens",
               "cache_write_tokens", "latency_s", "cost_usd", "error", "note")


def utcnow() -> datetime:
    """Now, in UTC, without a zone (the store's TIMESTAMP columns are UTC)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _one_of(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise StoreError(f"unknown {what} {value!r} (one of: {', '.join(allowed)})")
    return value


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError) as e:
        raise StoreError(f"the {what} cannot be stored as JSON: {e}") from None


class StoreWriter(StoreReader):
    """Writes through one read-write connection. One per file, in the run actor; thread-safe (calls serialise)."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, path):
        super().__init__(conn, path)
        self._births: dict[str, int] = {}  # the last birth number given out, per run

    @contextmanager
    def _transaction(self):
        with self._mutex:
            self.conn.begin()
            try:
                yield self.conn
                self.conn.commit()  # inside: a commit fails too (a full disk), and must say so in one line
            except duckdb.Error as e:
                self._rollback()
                raise StoreError(f"{self.path.name}: {first_line(e)}") from None
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        try:
            self.conn.rollback()
        except duckdb.Error:
            pass  # the failed commit already ended the transaction

    def _require_run(self, conn, run_id: str) -> None:
        if not conn.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]).fetchone()[0]:
            raise StoreError(f"{self.path.name} has no run {run_id!r}")

    # Runs -------------------------------------------------------------------------------------------------------

    def new_run(self, config: Mapping, state: Mapping | None = None, run_id: str | None = None) -> str:
        """Starts a run with its full settings (JSON-able; paths become strings). Returns its id (8 hex digits)."""
        run_id = run_id or uuid.uuid4().hex[:8]
        with self._transaction() as conn:
            conn.execute("INSERT INTO runs (run_id, started_at, status, config, state, state_saved_at, hostname, pid) "
                         "VALUES (?, ?, 'running', ?, ?, ?, ?, ?)",
                         [run_id, utcnow(), _json(dict(config), "run config"),
                          None if state is None else _json(dict(state), "run state"),
                          None if state is None else utcnow(), socket.gethostname(), os.getpid()])
        log.info("run %s started in %s", run_id, self.path)
        return run_id

    def resume_run(self, run_id: str) -> Run:
        """Marks a stopped run as running again (for --resume) and returns it with its saved config and state."""
        with self._transaction() as conn:
            self._require_run(conn, run_id)
            conn.execute("UPDATE runs SET status = 'running', finished_at = NULL, hostname = ?, pid = ? "
                         "WHERE run_id = ?", [socket.gethostname(), os.getpid(), run_id])
        return self.load_run(run_id)

    def save_state(self, run_id: str, state: Mapping) -> None:
        """Replaces a run's resumable state (random generator state, counters: anything JSON-able)."""
        with self._transaction() as conn:
            self._require_run(conn, run_id)
            conn.execute("UPDATE runs SET state = ?, state_saved_at = ? WHERE run_id = ?",
                         [_json(dict(state), "run state"), utcnow(), run_id])

    def finish_run(self, run_id: str, status: str = "finished") -> None:
        """Ends a run: finished, interrupted or failed."""
        _one_of(status, RUN_STATUSES[1:], "final run status")
        with self._transaction() as conn:
            self._require_run(conn, run_id)
            conn.execute("UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?", [status, utcnow(), run_id])
        log.info("run %s %s", run_id, status)

    def set_noise_floor(self, run_id: str, noise_floor: float | None) -> None:
        """Records the run's seed noise (std of val_bpb over seeds); the fitness score uses it."""
        if noise_floor is not None and not noise_floor >= 0:
            raise StoreError(f"a noise floor is a standard deviation (>= 0); got {noise_floor}")
        with self._transaction() as conn:
            self._require_run(conn, run_id)
            conn.execute("UPDATE runs SET noise_floor = ? WHERE run_id = ?", [noise_floor, run_id])

    # Individuals ------------------------------------------------------------------------------------------------

    def add_individual(self, run_id: str, *, source: str | None, operator: str, parents: Iterable[str] = (),
                       description: str = "", status: str = "proposed", reason: str | None = None,
                       id: str | None = None, in_population: bool = False,
                       llm_calls: Iterable[Any] = ()) -> str:
        """Stores one proposal: its source (once per file), the individual, its lineage edges (parents[0] as
        `parent`, parents[1] as `second_parent`) and the LLM calls that made it, in one transaction. Returns its id.

        id defaults to the source's content hash (the genome id). An `invalid` proposal (source None) and a
        `duplicate` get a minted id, `<run_id>-<birth>`; a duplicate's reason defaults to "duplicate of <id>".
        Every parent must already be an individual of this run."""
        _one_of(status, INDIVIDUAL_STATUSES, "individual status")
        parents = tuple(parents)
        if len(parents) > 2:
            raise StoreError(f"an individual has at most two parents; got {len(parents)}")
        if source is None and status != "invalid":
            raise StoreError(f"only an invalid individual may lack a source (status {status!r})")
        text = None if source is None else normalise(source)
        source_hash = None if text is None else content_hash(text)
        now = utcnow()
        with self._transaction() as conn:
            self._require_run(conn, run_id)
            birth = self._last_birth(conn, run_id) + 1
            if id is None:
                id = source_hash if source_hash and status != "duplicate" else f"{run_id}-{birth}"
            if status == "duplicate" and reason is None and source_hash:
                original = conn.execute("SELECT id FROM individuals WHERE run_id = ? AND source_hash = ? AND "
                                        "status <> 'duplicate' ORDER BY birth LIMIT 1",
                                        [run_id, source_hash]).fetchone()
                reason = f"duplicate of {original[0]}" if original else None
            if conn.execute("SELECT count(*) FROM individuals WHERE run_id = ? AND id = ?",
                            [run_id, id]).fetchone()[0]:
                raise StoreError(f"run {run_id} already has an individual {id} "
                                 f"(a second proposal of the same source is status='duplicate')")
            known = {row[0]: row[1:] for row in conn.execute(
                "SELECT id, uid, generation FROM individuals WHERE run_id = ? AND list_contains(?, id)",
                [run_id, list(parents)]).fetchall()}
            missing = [p for p in parents if p not in known]
            if missing:
                raise StoreError(f"run {run_id} has no parent {missing[0]!r} for {operator} child {id}")
            generation = 1 + max((known[p][1] for p in parents), default=-1)
            if text is not None:
                conn.execute("INSERT INTO sources VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                             [source_hash, text, len(text.encode()), now])
            uid = conn.execute(
                "INSERT INTO individuals (run_id, id, birth, generation, operator, description, source_hash, status, "
                "reason, in_population, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "RETURNING uid",
                [run_id, id, birth, generation, operator, description, source_hash, status, reason,
                 bool(in_population), now, now]).fetchone()[0]
            for role, parent in zip(("parent", "second_parent"), parents):
                conn.execute("INSERT INTO lineage VALUES (?, ?, ?, ?, ?, ?)",
                             [run_id, id, parent, role, uid, known[parent][0]])
            for usage in llm_calls:
                self._insert_llm_call(conn, run_id, usage, id)
            self._births[run_id] = birth
        return id

    def _last_birth(self, conn, run_id: str) -> int:
        if run_id not in self._births:
            self._births[run_id] = conn.execute(
                "SELECT coalesce(max(birth), 0) FROM individuals WHERE run_id = ?", [run_id]).fetchone()[0]
        return self._births[run_id]

    def set_status(self, run_id: str, id: str, status: str, reason: str | None = None) -> None:
        """Changes an individual's status (and its reason, when given)."""
        _one_of(status, INDIVIDUAL_STATUSES, "individual status")
        with self._transaction() as conn:
            found = conn.execute("UPDATE individuals SET status = ?, reason = coalesce(?, reason), updated_at = ? "
                                 "WHERE run_id = ? AND id = ? RETURNING id",
                                 [status, reason, utcnow(), run_id, id]).fetchall()
            if not found:
                raise StoreError(f"run {run_id} has no individual {id!r}")

    def set_population(self, run_id: str, ids: Iterable[str]) -> None:
        """Makes exactly these individuals the run's population (in_population), in one transaction."""
        ids = list(dict.fromkeys(ids))
        with self._transaction() as conn:
            found = {r[0] for r in conn.execute("SELECT id FROM individuals WHERE run_id = ? AND list_contains(?, id)",
                                                [run_id, ids]).fetchall()}
            missing = [i for i in ids if i not in found]
            if missing:
                raise StoreError(f"run {run_id} has no individual {missing[0]!r} to put in the population")
            conn.execute("UPDATE individuals SET in_population = list_contains(?, id), updated_at = ? "
                         "WHERE run_id = ? AND in_population <> list_contains(?, id)", [ids, utcnow(), run_id, ids])

    # Evaluations and LLM calls ----------------------------------------------------------------------------------

    def add_evaluation(self, run_id: str, individual_id: str, result: Any, *, purpose: str = "search",
                       worker: str | None = None, started_at: datetime | None = None,
                       finished_at: datetime | None = None) -> int:
        """Stores one finished evaluation (a sandbox.EvalResult or a mapping of its fields) and commits it before
        returning its id. In the same transaction a `proposed` individual becomes `evaluated` (`rejected`, with the
        error as reason, when the harness rejected it); an `interrupted` evaluation leaves it proposed. The result
        is typed first (evo.results.typed): a field out of type or bound is stored empty with a note in the log,
        a non-finite score as a rejection, so no result the store is given makes it refuse the evaluation."""
        record = typed(as_mapping(result))  # each field in type and bound, or dropped with a note (evo.results)
        values = {f: record.get(f) for f in _EVALUATION_FIELDS}
        if values["conditions"] is not None:
            values["conditions"] = json.dumps(values["conditions"], sort_keys=True)
        _one_of(values["status"], EVALUATION_STATUSES, "evaluation status")
        _one_of(purpose, PURPOSES, "evaluation purpose")
        finished_at = finished_at or utcnow()
        if started_at is None and values["total_seconds"] is not None:
            started_at = finished_at - timedelta(seconds=float(values["total_seconds"]))
        with self._transaction() as conn:
            row = conn.execute("SELECT status FROM individuals WHERE run_id = ? AND id = ?",
                               [run_id, individual_id]).fetchone()
            if row is None:
                raise StoreError(f"run {run_id} has no individual {individual_id!r} to evaluate")
            columns = ["run_id", "individual_id", "purpose", "worker", "started_at", "finished_at", *_EVALUATION_FIELDS]
            params = [run_id, individual_id, purpose, worker, started_at, finished_at,
                      *(values[f] for f in _EVALUATION_FIELDS)]
            evaluation_id = conn.execute(
                f"INSERT INTO evaluations ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) RETURNING id",
                params).fetchone()[0]
            if row[0] == "proposed" and values["status"] != "interrupted":
                rejected = values["status"] == "rejected"
                conn.execute("UPDATE individuals SET status = ?, reason = coalesce(?, reason), updated_at = ? "
                             "WHERE run_id = ? AND id = ?",
                             ["rejected" if rejected else "evaluated", values["error"] if rejected else None,
                              finished_at, run_id, individual_id])
        return evaluation_id

    def add_llm_call(self, run_id: str, usage: Any, individual_id: str | None = None) -> int:
        """Stores one LLM call (an operators.usage.LLMUsage or a mapping of its fields); returns its id."""
        with self._transaction() as conn:
            return self._insert_llm_call(conn, run_id, usage, individual_id)

    def _insert_llm_call(self, conn, run_id: str, usage: Any, individual_id: str | None) -> int:
        record = as_mapping(usage)
        values = [record.get(f) for f in _LLM_FIELDS]
        if not record.get("operator") or not record.get("model") or not record.get("status"):
            raise StoreError("an LLM call needs its operator, model and status")
        for i, f in enumerate(_LLM_FIELDS):
            if f.endswith("_tokens") or f == "cost_usd":
                values[i] = values[i] or 0
        columns = ["run_id", "individual_id", "created_at", *_LLM_FIELDS]
        return conn.execute(
            f"INSERT INTO llm_calls ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) RETURNING id",
            [run_id, individual_id, utcnow(), *values]).fetchone()[0]


def open_writer(db_path: str | os.PathLike) -> StoreWriter:
    """Opens (creating if needed) the store for writing: the run actor's one connection for the whole run.

    The process that opens the writer takes the run lock first (lock.acquire_lock), so other commands learn where
    the run actor answers, and liveness checks watch the process that really holds the file. StoreError, one
    line, when another process holds the file or its live lock, or the file is not an evo store of a schema this
    code reads."""
    holder = read_lock(db_path)
    ours = holder and holder.get("pid") == os.getpid() and holder.get("hostname") == socket.gethostname()
    if holder and not ours and lock_is_live(holder):
        raise StoreInUse(f"{Path(db_path).name} is in use by a live run ({describe_lock(holder)})")
    conn = connect(db_path, read_only=False)
    try:
        create_schema(conn, str(db_path))
    except duckdb.Error as e:
        conn.close()
        raise StoreError(f"cannot set up {db_path}: {first_line(e)}") from None
    except BaseException:
        conn.close()
        raise
    return StoreWriter(conn, db_path)
