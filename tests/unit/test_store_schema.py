"""The store's schema: created once, idempotent, versioned; files that are not evo stores are refused in one line."""

import duckdb
import pytest

from evo.errors import StoreError
from evo.store import SCHEMA_VERSION, create_schema, open_reader, open_writer
from tests.support.asserts import one_line

TABLES = {"meta", "runs", "sources", "individuals", "lineage", "evaluations", "llm_calls"}


def test_schema_creation_is_idempotent_and_keeps_data(tmp_path):
    db = tmp_path / "evo.duckdb"
    store = open_writer(db)
    run = store.new_run({"population": 4})
    store.add_individual(run, source="A = 1\n", operator="seed")
    create_schema(store.conn)  # again, on the same connection
    store.close()

    store = open_writer(db)  # and again on reopening
    names = {r[0] for r in store.conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    views = {r[0] for r in store.conn.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    macros = {r[0] for r in store.conn.execute(
        "SELECT function_name FROM duckdb_functions() WHERE function_type = 'table_macro' AND NOT internal").fetchall()}
    assert TABLES <= names
    assert {"fitness", "leaderboard"} <= views
    assert {"ancestry", "descendants"} <= macros
    assert store.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall() == \
        [(str(SCHEMA_VERSION),)]
    assert [r.run_id for r in store.runs()] == [run]
    assert len(store.individuals(run)) == 1
    store.close()


def test_reader_of_a_missing_file_says_so_and_creates_nothing(tmp_path):
    db = tmp_path / "nothing.duckdb"
    with pytest.raises(StoreError) as e:
        open_reader(db)
    assert one_line(e) == f"no database at {db}"
    assert not db.exists()


def test_a_newer_schema_is_refused(tmp_path):
    db = tmp_path / "evo.duckdb"
    open_writer(db).close()
    conn = duckdb.connect(str(db))
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    for opener in (open_reader, open_writer):
        with pytest.raises(StoreError) as e:
            opener(db)
        assert "newer evo (schema 99" in one_line(e)


def test_a_foreign_duckdb_file_is_not_an_evo_store(tmp_path):
    db = tmp_path / "other.duckdb"
    conn = duckdb.connect(str(db))
    conn.execute("CREATE TABLE t (a INTEGER)")
    conn.close()
    with pytest.raises(StoreError) as e:
        open_reader(db)
    assert "is not an evo store" in one_line(e)


def test_a_file_that_is_not_duckdb_is_refused_in_one_line(tmp_path):
    db = tmp_path / "evo.duckdb"
    db.write_text("hello, I am not a database\n" * 100)
    for opener in (open_reader, open_writer):
        with pytest.raises(StoreError) as e:
            opener(db)
        assert one_line(e).startswith(f"cannot open {db}")
