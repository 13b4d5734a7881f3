"""The store's schema: tables, sequences, views and table macros, created if absent (idempotent).

In:  a read-write DuckDB connection.   Out: the schema at SCHEMA_VERSION, or a StoreError naming the mismatch.

Decisions, for whoever reads the file in SQL:

- An individual is keyed by (run_id, id). `id` is the genome id (the source's content hash) for every individual
  with a source of its own; a proposal without one gets an id minted by the writer, `<run_id>-<birth>`: an
  `invalid` one (no source) and a `duplicate` (its content hash is already taken in that run). Two runs in one file
  may hold the same genome id (both start from the same train.py): each has its own row, status, population flag
  and fitness, since runs differ in budget and noise floor.
- Each row also has `uid`, a per-file integer from a sequence. The lineage walk joins on these integers: hashing
  1M integer edges costs a third of hashing 1M 16-character ids (benchmarks/ancestry.py). Parents are inserted
  before their children, so an ancestor's uid is always smaller than its descendant's.
- `birth` counts proposals per run (1, 2, ...); `generation` is 0 for a parentless individual, else one more than
  its oldest parent's.
- Times are UTC, stored as TIMESTAMP.
- Fitness (view `fitness`, per run and individual, over `ok` evaluations whose purpose is search, confirm or
  noise):  std_err = max(std_bpb (sample std, 0 when n = 1), the run's noise_floor (0 when unset)) / sqrt(n);
  score = mean_bpb + k * std_err, lower is better. The formula and k are evo.fitness's, the one definition
  selection also uses. A child measured once is charged a full noise floor; a confirmed individual with n
  evaluations is charged floor / sqrt(n). The view `leaderboard` ranks them, leaving out a disqualified individual
  (status `rejected` with a reason starting "disqualified: ": one of its evaluations showed a cheat, evo.integrity).
- `ancestry(id [, in_run := run_id] [, first_parent := true])` / `descendants(...)`: every ancestor (descendant)
  with its depth, the length of the shortest parent path (0 = the individual itself), by recursive CTE over
  lineage. A genome id can stand in several runs of one file (the seed does); without in_run the walk starts from
  each of them. `UNION` (not `UNION ALL`) keeps the walk to one row per (individual, depth), so merges cannot
  multiply paths. The `USING KEY` form DuckDB 2.0 also supports measured 2x slower here. With `first_parent :=
  true` the walk follows only `parent` edges: from an individual, the line back to its seed (`evo lineage`).
"""

from __future__ import annotations

import logging

import duckdb

from evo.errors import StoreError
from evo.fitness import SCORE_SQL, SCORED_PURPOSES, STD_ERR_SQL, sql_list
from evo.results import STATUSES as EVALUATION_STATUSES
from genome.individual import STATUSES as INDIVIDUAL_STATUSES

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

RUN_STATUSES = ("running", "finished", "interrupted", "failed")
PURPOSES = (*SCORED_PURPOSES, "replay")
ROLES = ("parent", "second_parent")
# INDIVIDUAL_STATUSES and EVALUATION_STATUSES, imported above, are defined once: by genome and by evo.results.


TABLES = f"""
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS individual_uids START 1;
CREATE SEQUENCE IF NOT EXISTS evaluation_ids START 1;
CREATE SEQUENCE IF NOT EXISTS llm_call_ids START 1;
CREATE TABLE IF NOT EXISTS runs (
    run_id         TEXT PRIMARY KEY,
    started_at     TIMESTAMP NOT NULL,
    finished_at    TIMESTAMP,
    status         TEXT NOT NULL CHECK (status IN {sql_list(RUN_STATUSES)}),
    config         JSON NOT NULL,           -- the full run settings
    state          JSON,                    -- the engine's resumable state; opaque to the store
    state_saved_at TIMESTAMP,
    noise_floor    DOUBLE,                  -- std of val_bpb over seeds, measured at the start of the run
    hostname       TEXT,
    pid            INTEGER
);
CREATE TABLE IF NOT EXISTS sources (
    source_hash TEXT PRIMARY KEY,           -- genome.content_hash(text): equal to the genome id
    text        TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    created_at  TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS individuals (
    uid           BIGINT NOT NULL DEFAULT nextval('individual_uids'),
    run_id        TEXT NOT NULL,
    id            TEXT NOT NULL,
    birth         INTEGER NOT NULL,
    generation    INTEGER NOT NULL,
    operator      TEXT NOT NULL,
    description   TEXT NOT NULL DEFAULT '',
    source_hash   TEXT,                     -- NULL for an invalid proposal
    status        TEXT NOT NULL CHECK (status IN {sql_list(INDIVIDUAL_STATUSES)}),
    reason        TEXT,                     -- why invalid, rejected, or which individual it duplicates
    in_population BOOLEAN NOT NULL DEFAULT false,
    created_at    TIMESTAMP NOT NULL,
    updated_at    TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, id)
);
CREATE INDEX IF NOT EXISTS individuals_by_id ON individuals (id);
CREATE TABLE IF NOT EXISTS lineage (
    run_id     TEXT NOT NULL,
    child_id   TEXT NOT NULL,
    parent_id  TEXT NOT NULL,
    role       TEXT NOT NULL CHECK (role IN {sql_list(ROLES)}),
    child_uid  BIGINT NOT NULL,
    parent_uid BIGINT NOT NULL,
    PRIMARY KEY (child_uid, role)
);
CREATE TABLE IF NOT EXISTS evaluations (
    id               BIGINT PRIMARY KEY DEFAULT nextval('evaluation_ids'),
    run_id           TEXT NOT NULL,
    individual_id    TEXT NOT NULL,
    purpose          TEXT NOT NULL CHECK (purpose IN {sql_list(PURPOSES)}),
    seed             BIGINT,
    budget_seconds   DOUBLE,
    budget_tokens    BIGINT,
    status           TEXT NOT NULL CHECK (status IN {sql_list(EVALUATION_STATUSES)}),
    val_bpb          DOUBLE,
    test_bpb         DOUBLE,                -- the test split's bpb, when measured (confirmations); never selected on
    training_seconds DOUBLE,
    eval_seconds     DOUBLE,
    total_seconds    DOUBLE,
    tokens           BIGINT,
    num_steps        BIGINT,
    num_params       BIGINT,
    peak_memory_mb   DOUBLE,
    worker           TEXT,
    device           TEXT,
    started_at       TIMESTAMP,
    finished_at      TIMESTAMP NOT NULL,
    error            TEXT,
    log              TEXT,                  -- captured output, capped by the caller
    conditions       TEXT,                  -- JSON: threads, device, CPU and GPU model, torch, harness, dataset
    limits           TEXT                   -- what held training's memory and process limits (cgroup v1/v2, polling)
);
CREATE TABLE IF NOT EXISTS llm_calls (
    id                 BIGINT PRIMARY KEY DEFAULT nextval('llm_call_ids'),
    run_id             TEXT NOT NULL,
    individual_id      TEXT,
    operator           TEXT NOT NULL,
    model              TEXT NOT NULL,
    purpose            TEXT,                -- propose or repair
    status             TEXT NOT NULL,
    input_tokens       BIGINT NOT NULL DEFAULT 0,
    output_tokens      BIGINT NOT NULL DEFAULT 0,
    cache_read_tokens  BIGINT NOT NULL DEFAULT 0,
    cache_write_tokens BIGINT NOT NULL DEFAULT 0,
    latency_s          DOUBLE,
    cost_usd           DOUBLE NOT NULL DEFAULT 0,
    error              TEXT,
    note               TEXT,
    created_at         TIMESTAMP NOT NULL
);
"""

# Columns added since a table was first defined: a file written by an older evo gets them on the writer's open.
UPGRADES = """
ALTER TABLE evaluations ADD COLUMN IF NOT EXISTS conditions TEXT;
ALTER TABLE evaluations ADD COLUMN IF NOT EXISTS test_bpb DOUBLE;
ALTER TABLE evaluations ADD COLUMN IF NOT EXISTS limits TEXT;
"""

# Views and macros are replaced on every writer open, so a fixed definition reaches old files too.
VIEWS = f"""
CREATE OR REPLACE VIEW fitness AS
WITH ok AS (
    SELECT run_id, individual_id, val_bpb, purpose
    FROM evaluations
    WHERE status = 'ok' AND isfinite(val_bpb) AND purpose IN {sql_list(SCORED_PURPOSES)}  -- NULL, NaN, inf: unscored
), agg AS (
    SELECT run_id, individual_id, count(*) AS n, count(*) FILTER (WHERE purpose = 'confirm') AS n_confirm,
           avg(val_bpb) AS mean_bpb, stddev_samp(val_bpb) AS std_bpb, min(val_bpb) AS best_bpb
    FROM ok GROUP BY run_id, individual_id
), err AS (
    SELECT a.*, {STD_ERR_SQL} AS std_err
    FROM agg a JOIN (SELECT run_id, noise_floor FROM runs) r USING (run_id)
)
SELECT run_id, individual_id, n, n_confirm, mean_bpb, std_bpb, best_bpb, std_err, {SCORE_SQL} AS score
FROM err;

CREATE OR REPLACE VIEW leaderboard AS
SELECT row_number() OVER (PARTITION BY f.run_id ORDER BY f.score, f.individual_id) AS rank,
       f.run_id, f.individual_id, f.score, f.mean_bpb, f.std_bpb, f.std_err, f.n, f.n_confirm,
       i.operator, i.description, i.status, i.in_population, i.generation, i.birth
FROM fitness f JOIN individuals i ON i.run_id = f.run_id AND i.id = f.individual_id
WHERE i.status <> 'rejected'   -- a disqualified individual (reason 'disqualified: ...') has no rank (evo.integrity)
ORDER BY f.score, f.run_id, f.individual_id;
"""

# ancestry() walks from child to parent, descendants() from parent to child; otherwise they are the same macro.
WALK_MACRO = """
CREATE OR REPLACE MACRO {name}(of_id, in_run := NULL, first_parent := false) AS TABLE
WITH RECURSIVE walk(uid, depth) AS (
    SELECT uid, 0 FROM individuals WHERE id = of_id AND (in_run IS NULL OR run_id = in_run)
    UNION
    SELECT l.{to}_uid, w.depth + 1 FROM walk w
    JOIN lineage l ON l.{from_}_uid = w.uid AND (NOT first_parent OR l.role = 'parent')
), nearest AS (
    SELECT uid, min(depth) AS depth FROM walk GROUP BY uid
)
SELECT i.id, n.depth, i.run_id, i.operator, i.description, i.status, i.generation
FROM nearest n JOIN individuals i ON i.uid = n.uid
ORDER BY n.depth, i.run_id, i.id;
"""
MACROS = (WALK_MACRO.format(name="ancestry", to="parent", from_="child")
          + WALK_MACRO.format(name="descendants", to="child", from_="parent"))
# A read-only connection cannot replace the file's macros; its own temporary ones shadow them, so a file written by
# an older evo still answers with today's definitions.
TEMP_MACROS = MACROS.replace("CREATE OR REPLACE MACRO", "CREATE OR REPLACE TEMP MACRO")


def stored_version(conn: duckdb.DuckDBPyConnection) -> int | None:
    """The file's schema version, or None for a file without evo's meta table (a new or foreign file)."""
    has_meta = conn.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() AND table_name = 'meta'"
    ).fetchone()[0]
    if not has_meta:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else None


def check_version(version: int | None, path: str) -> None:
    """Raises StoreError when a file's schema is not one this code reads."""
    if version is None:
        raise StoreError(f"{path} is not an evo store (it has no schema version)")
    if version > SCHEMA_VERSION:
        raise StoreError(f"{path} was written by a newer evo (schema {version}; this one reads up to "
                         f"{SCHEMA_VERSION}): upgrade evo")


def create_schema(conn: duckdb.DuckDBPyConnection, path: str = "the store") -> int:
    """Creates whatever is missing and (re)defines the views and macros. Safe to call on every open.
    Returns the schema version. A file of a newer schema is refused before anything is written."""
    version = stored_version(conn)
    if version is not None:
        check_version(version, path)
    conn.begin()
    try:
        conn.execute(TABLES)
        conn.execute(UPGRADES)
        conn.execute(VIEWS)
        conn.execute(MACROS)
        conn.execute("INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT DO NOTHING", [str(SCHEMA_VERSION)])
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    if version is None:
        log.info("created the evo store schema (version %d) in %s", SCHEMA_VERSION, path)
    return SCHEMA_VERSION
