"""Users' SQL: only statements that read get through, refused by DuckDB's own parse, on the live run actor's
read-write connection as on a reader's read-only one."""

import pytest

from evo.errors import StoreError
from evo.sandbox.evaluation import EvalResult
from evo.store import open_reader, open_writer, run_query


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "evo.duckdb"
    store = open_writer(path)
    run = store.new_run({"population": 2})
    seed = store.add_individual(run, source="A = 1\n", operator="seed")
    child = store.add_individual(run, source="A = 2\n", operator="hyper.mutate", parents=[seed])
    store.add_evaluation(run, child, EvalResult(status="ok", val_bpb=2.0, seed=1))
    store.close()
    return path


@pytest.fixture(params=["read-write", "read-only"])
def conn(request, db):
    """The live run actor's connection (its writer's) or a finished run's reader's."""
    store = open_writer(db) if request.param == "read-write" else open_reader(db)
    yield store.conn
    store.close()


def snapshot(conn) -> tuple:
    return conn.execute("SELECT (SELECT count(*) FROM individuals), (SELECT count(*) FROM evaluations), "
                        "(SELECT count(*) FROM duckdb_tables()), (SELECT count(*) FROM duckdb_views()), "
                        "(SELECT list(status ORDER BY id) FROM individuals)").fetchone()


REFUSED = {
    "INSERT INTO runs (run_id, started_at, status, config) VALUES ('x', now(), 'running', '{}')": "INSERT",
    "UPDATE individuals SET status = 'invalid'": "UPDATE",
    "DELETE FROM evaluations": "DELETE",
    "MERGE INTO individuals USING individuals s ON true WHEN MATCHED THEN DELETE": "MERGE INTO",
    "CREATE TABLE t (a INTEGER)": "CREATE",
    "CREATE MACRO m(x) AS x": "CREATE",
    "CREATE OR REPLACE VIEW fitness AS SELECT 1": "CREATE",
    "DROP TABLE lineage": "DROP",
    "ALTER TABLE runs ADD COLUMN z INTEGER": "ALTER",
    "COPY individuals TO '{tmp}/out.csv'": "COPY",
    "COPY (SELECT 1) TO '{tmp}/out.csv'": "COPY",
    "EXPORT DATABASE '{tmp}/export'": "EXPORT",
    "IMPORT DATABASE '{tmp}/export'": "IMPORT DATABASE",
    "ATTACH ':memory:' AS other": "ATTACH",
    "DETACH other": "DETACH",
    "SET threads = 1": "SET",
    "USE memory": "SET",
    "RESET threads": "SET",
    "INSTALL httpfs": "LOAD",
    "LOAD httpfs": "LOAD",
    "CALL checkpoint()": "CALL",
    "CHECKPOINT": "CALL",
    "VACUUM": "VACUUM",
    "BEGIN TRANSACTION": "TRANSACTION",
    "PREPARE p AS SELECT 1": "PREPARE",
    "PRAGMA enable_profiling": "PRAGMA ENABLE_PROFILING",
    "PRAGMA force_checkpoint": "PRAGMA FORCE_CHECKPOINT",
    "UPDATE EXTENSIONS": "statement type",
    "EXPLAIN ANALYZE DELETE FROM evaluations": "DELETE",  # EXPLAIN ANALYZE runs what it explains
    "EXPLAIN ANALYZE /* x */ UPDATE individuals SET status = 'invalid'": "UPDATE",
    "SELECT nextval('evaluation_ids')": "nextval()",
    "SELECT * FROM checkpoint()": "checkpoint()",
    "SELECT * FROM (SELECT * FROM force_checkpoint())": "force_checkpoint()",
    "SELECT * FROM query('SELECT nextval(''evaluation_ids'')')": "query()",
    "SELECT 1; DROP TABLE lineage": "DROP",
    "WITH x AS (SELECT 1) INSERT INTO meta SELECT 'k', 'v' FROM x": "INSERT",
}


@pytest.mark.parametrize("sql", list(REFUSED))
def test_writing_statements_are_refused_in_one_line(conn, sql, tmp_path):
    before = snapshot(conn)
    with pytest.raises(StoreError) as e:
        run_query(conn, sql.replace("{tmp}", str(tmp_path)))
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("evo sql runs read-only queries: ")
    assert REFUSED[sql] in message
    assert snapshot(conn) == before
    assert not list(tmp_path.iterdir())  # nothing exported or copied


ALLOWED = {
    "SELECT count(*) AS n FROM individuals": (["n"], [(2,)]),
    "FROM individuals SELECT operator ORDER BY birth": (["operator"], [("seed",), ("hyper.mutate",)]),
    "SELECT individual_id, n FROM fitness": None,
    "SELECT depth FROM ancestry((SELECT id FROM individuals WHERE operator = 'hyper.mutate'))": None,
    "WITH x AS (SELECT 41 AS a) SELECT a + 1 AS b FROM x;": (["b"], [(42,)]),
    "SELECT 1 AS a; SELECT 2 AS b": (["b"], [(2,)]),
    "EXPLAIN SELECT * FROM lineage": None,
    "EXPLAIN ANALYZE SELECT count(*) FROM evaluations": None,
    "DESCRIBE individuals": None,
    "SUMMARIZE evaluations": None,
    "SHOW TABLES": None,
    "PRAGMA table_info('runs')": None,
    "PRAGMA version": None,
    "SELECT currval('evaluation_ids') IS NOT NULL AS c": None,
    "PIVOT individuals ON status IN ('proposed', 'evaluated') USING count(*) GROUP BY run_id": None,
}


@pytest.mark.parametrize("sql", list(ALLOWED))
def test_reading_statements_run(conn, sql):
    before = snapshot(conn)
    columns, rows = run_query(conn, sql)
    assert columns
    if ALLOWED[sql] is not None:
        assert (columns, rows) == ALLOWED[sql]
    assert snapshot(conn) == before


def test_malformed_sql_gives_duckdbs_first_error_line(conn):
    with pytest.raises(StoreError) as e:
        run_query(conn, "SELEC * FRM individuals")
    assert str(e.value).startswith("evo sql: Parser Error: syntax error at or near")
    assert "\n" not in str(e.value)
    with pytest.raises(StoreError) as e:
        run_query(conn, "SELECT * FROM nowhere")
    assert str(e.value).startswith("evo sql: Catalog Error: Table with name nowhere does not exist")
    assert "\n" not in str(e.value)
    with pytest.raises(StoreError, match="no statement given"):
        run_query(conn, "  -- nothing\n")


def test_row_cap_and_time_limit(conn):
    assert run_query(conn, "SELECT * FROM range(1000)", max_rows=10)[1] == [(i,) for i in range(10)]
    with pytest.raises(StoreError, match="ran past its 0.2 s limit"):
        run_query(conn, "SELECT count(*) FROM range(10000000000) a", timeout=0.2)


def test_the_live_run_actor_keeps_writing_around_users_queries(tmp_path):
    store = open_writer(tmp_path / "evo.duckdb")
    run = store.new_run({})
    seed = store.add_individual(run, source="A = 1\n", operator="seed")
    with pytest.raises(StoreError):
        store.query("DELETE FROM individuals")
    assert store.query("SELECT count(*) FROM individuals")[1] == [(1,)]
    store.add_evaluation(run, seed, EvalResult(status="ok", val_bpb=2.0, seed=1))
    assert store.query("SELECT n FROM fitness")[1] == [(1,)]
    store.close()
