"""Users' read-only SQL (`evo sql`): refuse anything that could write, run the rest, return columns and rows.

In:  a DuckDB connection (the live run actor's read-write one, or a reader's read-only one) and SQL text.
Out: (column names, rows) of the last statement, or StoreError with one line.

The refusal is by DuckDB's own parse of each statement, not by the connection's mode (inside a live run the only
connection there is the run actor's read-write one). Allowed:

- SELECT-type statements (also DESCRIBE, SUMMARIZE, SHOW, FROM-first, PIVOT with an IN list), unless they call a
  function with a side effect (nextval, checkpoint, ...: FORBIDDEN_FUNCTIONS), found in DuckDB's serialized parse
  tree (json_serialize_sql);
- EXPLAIN of an allowed statement (EXPLAIN ANALYZE runs its statement, so `EXPLAIN ANALYZE INSERT` writes);
- PRAGMA of the introspection kind (SAFE_PRAGMAS); `PRAGMA import_database` and friends write.

Refused: everything else (INSERT, UPDATE, DELETE, MERGE, CREATE, DROP, ALTER, COPY, EXPORT, ATTACH, DETACH, SET,
USE, RESET, INSTALL, LOAD, CALL, CHECKPOINT, VACUUM, transactions, PREPARE/EXECUTE, multi-statement rewrites).

Second line of defence: the statements run on a cursor of their own inside a transaction that is rolled back, so
- data written by anything that slipped through is undone (sequences are not: hence nextval's refusal)
- the run actor's own transactions are never mixed with the user's
"""

from __future__ import annotations

import json
import logging
import threading

import duckdb

from evo.errors import StoreError, first_line

log = logging.getLogger(__name__)

SAFE_PRAGMAS = frozenset({
    "version", "platform", "user_agent", "database_size", "database_list", "show_databases", "show_tables",
    "show_tables_expanded", "table_info", "show", "storage_info", "metadata_info", "functions", "collations",
})
FORBIDDEN_FUNCTIONS = frozenset({
    "nextval", "setval", "checkpoint", "force_checkpoint", "enable_logging", "disable_logging", "truncate_duckdb_logs",
    "enable_profiling", "disable_profiling", "write_log", "query", "json_execute_serialized_sql",
    "create_external_resource", "register_external_resource", "register_external_resource_type",
    "deregister_external_resource", "destroy_external_resource",
})


def _tokens(sql: str) -> list[tuple[str, int]]:
    """(lower-cased text, offset) of each token, comments left out."""
    spans = duckdb.tokenize(sql)
    out = []
    for i, (start, kind) in enumerate(spans):
        end = spans[i + 1][0] if i + 1 < len(spans) else len(sql)
        if kind != duckdb.token_type.comment:
            out.append((sql[start:end].strip().lower(), start))
    return out


def _explained(sql: str) -> str:
    """The statement an EXPLAIN statement explains: what follows EXPLAIN, ANALYZE and an options list."""
    tokens = _tokens(sql)
    i = 0
    if i < len(tokens) and tokens[i][0] == "explain":
        i += 1
    if i < len(tokens) and tokens[i][0] == "analyze":
        i += 1
    if i < len(tokens) and tokens[i][0] == "(":
        depth = 0
        while i < len(tokens):
            depth += tokens[i][0].count("(") - tokens[i][0].count(")")
            i += 1
            if depth <= 0:
                break
    return sql[tokens[i][1]:] if i < len(tokens) else ""


def _functions(conn: duckdb.DuckDBPyConnection, sql: str) -> set[str] | None:
    """Names of every function a SELECT statement calls (scalar and table), or None when DuckDB cannot serialize
    the statement."""
    tree = json.loads(conn.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    if tree.get("error"):
        return None
    names: set[str] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            name = node.get("function_name")
            if isinstance(name, str):
                names.add(name.lower())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return names


def check_read_only(conn: duckdb.DuckDBPyConnection, statement, depth: int = 0) -> None:
    """Raises StoreError (one line) unless one parsed statement (from conn.extract_statements) only reads."""
    text = statement.query.strip().rstrip(";").strip()
    try:
        kind = statement.type
    except ValueError:
        # The Python binding has no name for some statement types (UPDATE EXTENSIONS): none of them only read.
        raise StoreError("evo sql runs read-only queries: this statement type is not allowed") from None
    label = kind.name.lower().replace("_", " ")
    if kind == duckdb.StatementType.SELECT:
        called = _functions(conn, text)
        if called is None:
            raise StoreError("evo sql: cannot check this statement is read-only; write it as a plain SELECT")
        bad = sorted(called & FORBIDDEN_FUNCTIONS)
        if bad:
            raise StoreError(f"evo sql runs read-only queries: {bad[0]}() is not allowed")
        return
    if kind == duckdb.StatementType.EXPLAIN and depth == 0:
        inner = _explained(text)
        try:
            statements = conn.extract_statements(inner) if inner else []
        except (duckdb.Error, ValueError) as e:
            raise StoreError(f"evo sql: {first_line(e)}") from None
        if len(statements) != 1:
            raise StoreError("evo sql: EXPLAIN needs exactly one statement to explain")
        check_read_only(conn, statements[0], depth + 1)
        return
    if kind == duckdb.StatementType.PRAGMA:
        words = [t[0] for t in _tokens(text)[:2]]
        if len(words) == 2 and words[0] == "pragma" and words[1] in SAFE_PRAGMAS:
            return
        # Some statements parse as PRAGMA without saying so (IMPORT DATABASE): name them by their first words.
        raise StoreError(f"evo sql runs read-only queries: {' '.join(words).upper()} is not allowed")
    raise StoreError(f"evo sql runs read-only queries: {label.upper()} statements are not allowed")


def parse_read_only(conn: duckdb.DuckDBPyConnection, sql: str) -> list:
    """The statements of sql, each checked by check_read_only. StoreError for malformed or writing SQL."""
    try:
        statements = conn.extract_statements(sql)
    except duckdb.Error as e:
        raise StoreError(f"evo sql: {first_line(e)}") from None
    if not statements:
        raise StoreError("evo sql: no statement given")
    for statement in statements:
        check_read_only(conn, statement)
    return statements


def run_query(conn: duckdb.DuckDBPyConnection, sql: str, max_rows: int | None = None,
              timeout: float | None = None) -> tuple[list[str], list[tuple]]:
    """Runs read-only SQL and returns (column names, rows) of its last statement.

    max_rows caps the rows fetched; timeout (seconds) interrupts a query that runs longer. Raises StoreError with
    one line for writing statements, malformed SQL, errors while running, and timeouts."""
    cursor = conn.cursor()
    timer = None
    timed_out = threading.Event()
    if timeout is not None:
        def interrupt():
            timed_out.set()
            cursor.interrupt()
        timer = threading.Timer(timeout, interrupt)
        timer.daemon = True
    try:
        statements = parse_read_only(cursor, sql)
        cursor.begin()
        if timer:
            timer.start()
        try:
            result = None
            for statement in statements:
                result = cursor.execute(statement)
            columns = [d[0] for d in result.description] if result.description else []
            rows = result.fetchmany(max_rows) if max_rows is not None else result.fetchall()
        finally:
            cursor.rollback()
        return columns, rows
    except duckdb.Error as e:
        if timed_out.is_set():
            raise StoreError(f"evo sql: the query ran past its {timeout:g} s limit and was stopped") from None
        raise StoreError(f"evo sql: {first_line(e)}") from None
    finally:
        if timer:
            timer.cancel()
        cursor.close()
