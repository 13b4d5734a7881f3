"""Opening a store file and reading what the engine and users need from it.

In:  a path to an evo store.   Out: a StoreReader (read-only connection), or StoreError with one line: "no database
at PATH", "... is not an evo store", or its StoreInUse: "evo.duckdb is in use by a live run (pid ... on host ...)",
"evo.duckdb is in use by process N" (another connection to the file).

- StoreReader's methods are also the writer's reads (StoreWriter subclasses it), which is how the run actor answers
  them over its one connection
- a reader only works on a file no live run holds: DuckDB allows one process per file
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from pathlib import Path

import duckdb

from evo.choices import Phase
from evo.errors import StoreError, StoreInUse, first_line
from evo.fitness import SCORED_PURPOSES, best
from evo.integrity import DISQUALIFIED
from evo.results import score_problem
from evo.run_status import EvaluationCounts, RunStatus
from evo.store.lock import describe_lock, lock_is_live, read_lock
from evo.store.query import run_query
from evo.store.records import Evaluation, Fitness, Individual, LineageStep, Run
from evo.store.schema import TEMP_MACROS, check_version, stored_version

log = logging.getLogger(__name__)

_HELD = re.compile(r"\(PID (\d+)\)")
_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")

# The reads a live run's actor answers for other processes (evo.store.live): every public read of StoreReader.
READS = ("query", "runs", "latest_run", "load_run", "run", "llm_cost", "individuals", "individual", "resolve",
         "lineage", "population", "source", "source_exists", "find_source", "ancestry", "descendants",
         "evaluations", "evaluation_log", "source_of", "scored_results", "seeds_used", "fitness", "run_status",
         "disqualified_ancestor")


def connect(db_path: str | os.PathLike, read_only: bool) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection to db_path, with DuckDB's errors turned into one-line StoreErrors."""
    path = Path(db_path)
    if read_only and not path.exists():
        raise StoreError(f"no database at {path}")
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as e:
        message = str(e)
        if "could not set lock" in message.lower() or "conflicting lock" in message.lower():
            info = read_lock(path)
            ours = info and info.get("pid") == os.getpid() and info.get("hostname") == socket.gethostname()
            if info and lock_is_live(info) and not ours:  # our own lock (a writer opening): another process holds it
                raise StoreInUse(f"{path.name} is in use by a live run ({describe_lock(info)})") from None
            held = _HELD.search(message)
            who = f"process {held.group(1)}" if held else "another process"
            raise StoreInUse(f"{path.name} is in use by {who}") from None
        raise StoreError(f"cannot open {path}: {first_line(e)}") from None
    except duckdb.Error as e:
        raise StoreError(f"cannot open {path}: {first_line(e)}") from None


def _rows(conn: duckdb.DuckDBPyConnection, sql: str, params=()) -> tuple[list[str], list[tuple]]:
    result = conn.execute(sql, list(params))
    return [d[0] for d in result.description], result.fetchall()


_INDIVIDUALS = """
SELECT i.*, p.parent_id AS parent, q.parent_id AS second_parent{source}
FROM individuals i
LEFT JOIN lineage p ON p.child_uid = i.uid AND p.role = 'parent'
LEFT JOIN lineage q ON q.child_uid = i.uid AND q.role = 'second_parent'{join}
WHERE i.run_id = ?{where}
ORDER BY i.birth
"""


class StoreReader:
    """Reads over one connection. Thread-safe: calls are serialised (a DuckDB connection is not re-entrant)."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, path: str | os.PathLike):
        self.conn = conn
        self.path = Path(path)
        self._mutex = threading.RLock()

    def close(self) -> None:
        with self._mutex:
            self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _select(self, sql: str, params=()) -> tuple[list[str], list[tuple]]:
        with self._mutex:
            return _rows(self.conn, sql, params)

    # Users' SQL -------------------------------------------------------------------------------------------------

    def query(self, sql: str, max_rows: int | None = None, timeout: float | None = None):
        """Read-only SQL (see query.run_query): (column names, rows). Runs on a cursor of its own, so the writer's
        transactions never mix with it."""
        with self._mutex:  # only the cursor's creation touches the shared connection
            cursor = self.conn.cursor()
        try:
            return run_query(cursor, sql, max_rows=max_rows, timeout=timeout)
        finally:
            cursor.close()

    # Runs -------------------------------------------------------------------------------------------------------

    def runs(self) -> list[Run]:
        """Every run in the file, oldest first."""
        cols, rows = self._select("SELECT * FROM runs ORDER BY started_at, run_id")
        return [Run.from_row(cols, r) for r in rows]

    def latest_run(self) -> Run | None:
        """The most recently started run, or None in an empty store."""
        cols, rows = self._select("SELECT * FROM runs ORDER BY started_at DESC, run_id DESC LIMIT 1")
        return Run.from_row(cols, rows[0]) if rows else None

    def load_run(self, run_id: str) -> Run:
        """A run by id; StoreError if the file has none such."""
        cols, rows = self._select("SELECT * FROM runs WHERE run_id = ?", [run_id])
        if not rows:
            raise StoreError(f"{self.path.name} has no run {run_id!r}")
        return Run.from_row(cols, rows[0])

    def run(self, run_id: str | None = None) -> Run:
        """The run run_id, or the latest one; StoreError when there is none such."""
        if run_id is not None:
            return self.load_run(run_id)
        run = self.latest_run()
        if run is None:
            raise StoreError(f"{self.path.name} has no run")
        return run

    def llm_cost(self, run_id: str) -> float:
        """The estimated USD spent on LLM calls in a run."""
        return float(self._select("SELECT coalesce(sum(cost_usd), 0) FROM llm_calls WHERE run_id = ?",
                                  [run_id])[1][0][0])

    # Individuals ------------------------------------------------------------------------------------------------

    def individuals(self, run_id: str, status: str | None = None, with_source: bool = False) -> list[Individual]:
        """A run's individuals in birth order, each with its parents (and source text if asked)."""
        sql = _INDIVIDUALS.format(source=", s.text AS source" if with_source else "",
                                  join="\nLEFT JOIN sources s ON s.source_hash = i.source_hash" if with_source else "",
                                  where=" AND i.status = ?" if status else "")
        cols, rows = self._select(sql, [run_id] + ([status] if status else []))
        return [Individual.from_row(cols, r) for r in rows]

    def individual(self, run_id: str, id: str, with_source: bool = True) -> Individual:
        """One individual of a run; StoreError if absent."""
        sql = _INDIVIDUALS.format(source=", s.text AS source" if with_source else "",
                                  join="\nLEFT JOIN sources s ON s.source_hash = i.source_hash" if with_source else "",
                                  where=" AND i.id = ?")
        cols, rows = self._select(sql, [run_id, id])
        if not rows:
            raise StoreError(f"run {run_id} has no individual {id!r}")
        return Individual.from_row(cols, rows[0])

    def resolve(self, run_id: str, id: str) -> str:
        """The id of the individual of a run whose id is id, or starts with it (a unique prefix of 4 or more
        characters); StoreError when none or several match."""
        if not _ID.match(id):
            raise StoreError(f"individual {id!r} is not a valid id")
        _, rows = self._select("SELECT id FROM individuals WHERE run_id = ? AND (id = ? OR (length(?) >= 4 AND "
                               "starts_with(id, ?))) ORDER BY id = ? DESC, birth LIMIT 2", [run_id, id, id, id, id])
        if not rows:
            raise StoreError(f"no individual {id!r} in run {run_id}")
        if len(rows) > 1 and rows[0][0] != id:
            raise StoreError(f"{id!r} is the start of several ids in run {run_id} ({rows[0][0]}, {rows[1][0]}, ...)")
        return rows[0][0]

    def lineage(self, run_id: str, id: str, with_source: bool = False) -> list[LineageStep]:
        """The individuals from the seed to id, following each one's first parent, with their fitness: one query,
        over the ancestry macro."""
        cols, rows = self._select(f"""
            SELECT a.id, a.depth, i.operator, i.description, i.status, i.reason, p.parent_id AS parent,
                   q.parent_id AS second_parent, f.mean_bpb, f.std_bpb, coalesce(f.n, 0) AS n, i.source_hash
                   {", s.text AS source" if with_source else ""}
            FROM ancestry(?, in_run := ?, first_parent := true) a
            JOIN individuals i ON i.run_id = a.run_id AND i.id = a.id
            LEFT JOIN lineage p ON p.child_uid = i.uid AND p.role = 'parent'
            LEFT JOIN lineage q ON q.child_uid = i.uid AND q.role = 'second_parent'
            LEFT JOIN fitness f ON f.run_id = i.run_id AND f.individual_id = i.id
            {"LEFT JOIN sources s ON s.source_hash = i.source_hash" if with_source else ""}
            ORDER BY a.depth DESC""", [id, run_id])
        if not rows:
            raise StoreError(f"no individual {id!r} in run {run_id}")
        return [LineageStep.from_row(cols, r) for r in rows]

    def disqualified_ancestor(self, run_id: str, id: str) -> tuple[str, str] | None:
        """(id, reason) of the nearest disqualified ancestor of an individual (through either parent), or None."""
        _, rows = self._select("SELECT a.id, i.reason FROM ancestry(?, in_run := ?) a JOIN individuals i "
                               "ON i.run_id = a.run_id AND i.id = a.id WHERE a.depth > 0 AND i.status = 'rejected' "
                               "AND starts_with(coalesce(i.reason, ''), ?) ORDER BY a.depth, a.id LIMIT 1",
                               [id, run_id, DISQUALIFIED])
        return (rows[0][0], rows[0][1]) if rows else None

    def population(self, run_id: str) -> list[str]:
        """Ids of the individuals in a run's population now, in birth order."""
        _, rows = self._select("SELECT id FROM individuals WHERE run_id = ? AND in_population ORDER BY birth",
                               [run_id])
        return [r[0] for r in rows]

    def source(self, source_hash: str) -> str:
        """A source text by hash; StoreError if absent."""
        _, rows = self._select("SELECT text FROM sources WHERE source_hash = ?", [source_hash])
        if not rows:
            raise StoreError(f"{self.path.name} has no source {source_hash!r}")
        return rows[0][0]

    def source_exists(self, source_hash: str) -> bool:
        """Whether any run in the file has stored this source."""
        return bool(self._select("SELECT count(*) FROM sources WHERE source_hash = ?", [source_hash])[1][0][0])

    def find_source(self, run_id: str, source_hash: str) -> str | None:
        """The id of the first individual of a run with this source (duplicates excluded), or None: the
        duplicate check."""
        _, rows = self._select("SELECT id FROM individuals WHERE run_id = ? AND source_hash = ? "
                               "AND status <> 'duplicate' ORDER BY birth LIMIT 1", [run_id, source_hash])
        return rows[0][0] if rows else None

    def ancestry(self, id: str, run_id: str | None = None) -> list[tuple[str, int]]:
        """(id, depth) of an individual and every ancestor, nearest first (the ancestry macro), in one run or all."""
        _, rows = self._select("SELECT id, depth FROM ancestry(?, in_run := ?)", [id, run_id])
        return [(r[0], r[1]) for r in rows]

    def descendants(self, id: str, run_id: str | None = None) -> list[tuple[str, int]]:
        """(id, depth) of an individual and every descendant, nearest first (the descendants macro), in one run or
        all."""
        _, rows = self._select("SELECT id, depth FROM descendants(?, in_run := ?)", [id, run_id])
        return [(r[0], r[1]) for r in rows]

    # Evaluations and fitness ------------------------------------------------------------------------------------

    def evaluations(self, run_id: str, individual_id: str | None = None,
                    purpose: str | None = None) -> list[Evaluation]:
        """A run's evaluations (of one individual, of one purpose), in the order they were stored."""
        sql = "SELECT * EXCLUDE (log) FROM evaluations WHERE run_id = ?"
        params: list = [run_id]
        if individual_id is not None:
            sql += " AND individual_id = ?"
            params.append(individual_id)
        if purpose is not None:
            sql += " AND purpose = ?"
            params.append(purpose)
        cols, rows = self._select(sql + " ORDER BY id", params)
        return [Evaluation.from_row(cols, r) for r in rows]

    def evaluation_log(self, evaluation_id: int) -> str:
        """The captured output of one evaluation; StoreError if there is no such evaluation."""
        _, rows = self._select("SELECT log FROM evaluations WHERE id = ?", [evaluation_id])
        if not rows:
            raise StoreError(f"{self.path.name} has no evaluation {evaluation_id}")
        return rows[0][0] or ""

    def source_of(self, run_id: str, id: str) -> str:
        """The source text of an individual of a run; StoreError if it has none (an invalid proposal)."""
        _, rows = self._select("SELECT i.status, s.text FROM individuals i LEFT JOIN sources s "
                               "ON s.source_hash = i.source_hash WHERE i.run_id = ? AND i.id = ?", [run_id, id])
        if not rows:
            raise StoreError(f"run {run_id} has no individual {id!r}")
        if rows[0][1] is None:
            raise StoreError(f"individual {id} has no source (status {rows[0][0]})")
        return rows[0][1]

    def scored_results(self, run_id: str, individual_id: str) -> dict[int, float]:
        """seed -> val_bpb of an individual's ok evaluations that count towards its fitness."""
        marks = ", ".join("?" for _ in SCORED_PURPOSES)
        _, rows = self._select(f"SELECT seed, val_bpb FROM evaluations WHERE run_id = ? AND individual_id = ? "
                               f"AND status = 'ok' AND isfinite(val_bpb) AND purpose IN ({marks}) ORDER BY id",
                               [run_id, individual_id, *SCORED_PURPOSES])
        return {int(seed): value for seed, value in rows}

    def seeds_used(self, run_id: str) -> set[int]:
        """Every seed any evaluation of the run used."""
        _, rows = self._select("SELECT DISTINCT seed FROM evaluations WHERE run_id = ? AND seed IS NOT NULL", [run_id])
        return {int(r[0]) for r in rows}

    def fitness(self, run_id: str) -> list[Fitness]:
        """The fitness rows of a run's evaluated individuals, best (lowest score) first."""
        cols, rows = self._select("SELECT * FROM fitness WHERE run_id = ? ORDER BY score, individual_id", [run_id])
        return [Fitness.from_row(cols, r) for r in rows]


    # The run as a whole ----------------------------------------------------------------------------------------

    def run_status(self, run_id: str | None = None) -> RunStatus:
        """A run's status (the latest run's by default) rebuilt from its rows and saved state."""
        run = self.run(run_id)
        state = run.state or {}
        counters = state.get("counters", {})
        evaluations = [e for e in self.evaluations(run.run_id) if e.status != "interrupted"]

        def count(purpose: str) -> int:
            return sum(1 for e in evaluations if e.purpose == purpose)

        population = set(self.population(run.run_id))
        # As the run crowns (evo.integrity): a descendant of a disqualified member only with a confirmation of its own.
        f = best((f for f in self.fitness(run.run_id) if f.individual_id in population), id=lambda f: f.individual_id,
                 eligible=lambda f: f.n_confirm or self.disqualified_ancestor(run.run_id, f.individual_id) is None)
        leader = None
        if f is not None:
            tests = [e.test_bpb for e in evaluations
                     if e.individual_id == f.individual_id and e.status == "ok" and score_problem(e.test_bpb) is None]
            leader = {"id": f.individual_id, "mean_bpb": f.mean_bpb, "std_bpb": f.std_bpb, "n": f.n,
                      "n_confirm": f.n_confirm, "score": f.score,
                      "test_bpb": sum(tests) / len(tests) if tests else None}
        _, rows = self._select("SELECT count(*) FILTER (WHERE status = 'invalid'), count(*), "
                               "(SELECT count(*) FROM llm_calls WHERE run_id = ?) FROM individuals WHERE run_id = ?",
                               [run.run_id, run.run_id])
        invalid, individuals, llm_calls = rows[0]
        failed = sum(1 for e in evaluations if e.status != "ok")
        return RunStatus.build(
            run_id=run.run_id, status=run.status, phase=Phase(state["phase"]) if "phase" in state else "-",
            active_seconds=counters.get("active_seconds", 0.0), busy_seconds=counters.get("busy_seconds", 0.0),
            workers=state.get("workers", 1), best=leader,
            evaluations=EvaluationCounts(search_done=count("search"), confirm_done=count("confirm"),
                                         noise_done=count("noise"), failed=failed, invalid=invalid),
            target_evaluations=run.config.get("evaluations"), noise_floor=run.noise_floor,
            population=len(population), individuals=individuals, llm_cost_usd=self.llm_cost(run.run_id),
            llm_calls=llm_calls)


def open_reader(db_path: str | os.PathLike) -> StoreReader:
    """A read-only view of a store no live run holds (a finished or killed run's file).

    StoreError: "no database at PATH"; "NAME is in use by a live run (...)" while a run actor holds it (ask the actor
    instead: the lock file says where it answers); "... is not an evo store"."""
    conn = connect(db_path, read_only=True)
    try:
        check_version(stored_version(conn), str(db_path))
        conn.execute(TEMP_MACROS)
    except BaseException:
        conn.close()
        raise
    return StoreReader(conn, db_path)
