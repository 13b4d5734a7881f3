"""How fast is `SELECT * FROM ancestry(id)` on a big store?

Builds a store with the real schema (evo.store) holding N individuals (default 1,000,000) of one run: one
single-parent path DEPTH edges deep (default 1,000), its nodes spread over the whole birth range so the deepest
individual is the last one born, and every other individual with a pseudo-random older parent (every fifth also a
second parent, as a merge). Rows go in by batched INSERT ... SELECT over generated ranges (single-row inserts run at
about 1k/s). Then it times the ancestry macro on the deepest individual, REPEATS times, and writes the figures to
benchmarks/results/ancestry.json. Target: a median under 100 ms on the 2-core development machine.

    python benchmarks/ancestry.py [--individuals N] [--depth D] [--repeats R] [--db PATH] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402

from benchmarks.task_baseline import cpu_model  # noqa: E402
from evo.store import open_writer  # noqa: E402

RUN = "bench000"


def generate(conn: duckdb.DuckDBPyConnection, n: int, depth: int) -> str:
    """Fills individuals and lineage; returns the deepest individual's id. Individual i (0-based) has uid i + 1 and
    id printf('%016x', hash(i)); the path's nodes are round(k * (n - 1) / depth) for k = 0..depth."""
    conn.execute("INSERT INTO runs (run_id, started_at, status, config) VALUES (?, now(), 'finished', '{}')", [RUN])
    conn.execute("""
        INSERT INTO individuals (uid, run_id, id, birth, generation, operator, description, status, created_at,
                                 updated_at)
        SELECT i + 1, ?, printf('%016x', hash(i)), i + 1, 0,
               CASE WHEN i = 0 THEN 'seed' WHEN i % 5 = 0 THEN 'merge.crossover' ELSE 'hyper.mutate' END,
               '', 'evaluated', now(), now()
        FROM range(?) t(i)""", [RUN, n])
    # on_path(i): i is a node of the deep path; its parent is the previous node. Others pick older parents by hash.
    conn.execute("""
        CREATE TEMP TABLE path AS
        SELECT k, CAST(round(k * (? - 1) / ?) AS BIGINT) AS i FROM range(? + 1) t(k)""", [n, depth, depth])
    conn.execute("""
        INSERT INTO lineage (run_id, child_id, parent_id, role, child_uid, parent_uid)
        SELECT ?, printf('%016x', hash(e.c)), printf('%016x', hash(e.p)), e.role, e.c + 1, e.p + 1
        FROM (
            SELECT c.i AS c, p.i AS p, 'parent' AS role FROM path c JOIN path p ON p.k = c.k - 1
            UNION ALL
            SELECT i, hash(i, 1) % i, 'parent' FROM range(1, ?) t(i) WHERE i NOT IN (SELECT i FROM path)
            UNION ALL
            SELECT i, hash(i, 2) % i, 'second_parent' FROM range(1, ?) t(i)
            WHERE i % 5 = 0 AND i NOT IN (SELECT i FROM path)
        ) e""", [RUN, n, n])
    return conn.execute("SELECT printf('%016x', hash(max(i))) FROM path").fetchone()[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--individuals", type=int, default=1_000_000)
    p.add_argument("--depth", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--db", type=Path, help="store to build (default: a temporary file, removed afterwards)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ancestry.json")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "bench.duckdb"
        if db.exists():
            raise SystemExit(f"{db} exists: give a new path")
        store = open_writer(db)
        t0 = time.perf_counter()
        deepest = generate(store.conn, args.individuals, args.depth)
        store.conn.execute("CHECKPOINT")
        generation_s = time.perf_counter() - t0
        counts = store.conn.execute("SELECT (SELECT count(*) FROM individuals), (SELECT count(*) FROM lineage)"
                                    ).fetchone()
        store.close()
        print(f"generated {counts[0]:,} individuals and {counts[1]:,} lineage edges in {generation_s:.1f} s")

        # Time on a fresh read-only connection, as `evo sql` on a finished run would see it.
        conn = duckdb.connect(str(db), read_only=True)
        sql = f"SELECT * FROM ancestry('{deepest}')"
        rows = conn.execute(sql).fetchall()  # warm-up: the first run also reads the file from disk
        assert len(rows) == args.depth + 1 and rows[-1][1] == args.depth, (len(rows), rows[-1])
        times, cpu = [], []
        for _ in range(args.repeats):
            t, c = time.perf_counter(), time.process_time()
            conn.execute(sql).fetchall()
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)  # all threads of this process: less swayed by other jobs' load
        conn.close()

    ms = sorted(round(t * 1000, 1) for t in times)
    result = {
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, "benchmarks/ancestry.py",
                                                     *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
                    "python": platform.python_version(), "duckdb": duckdb.__version__},
        "individuals": counts[0],
        "lineage_edges": counts[1],
        "depth": args.depth,
        "generation_seconds": round(generation_s, 2),
        "query": "SELECT * FROM ancestry('<deepest id>')",
        "rows": len(rows),
        "repeats": args.repeats,
        "query_ms_median": round(statistics.median(times) * 1000, 1),
        "query_ms_min": ms[0],
        "query_ms_all": ms,
        "query_cpu_ms_median": round(statistics.median(cpu) * 1000, 1),
        "target_ms": 100,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"ancestry of the deepest individual ({len(rows)} rows): median {result['query_ms_median']} ms, "
          f"min {result['query_ms_min']} ms over {args.repeats} runs (CPU {result['query_cpu_ms_median']} ms; "
          f"load {result['machine']['load_average_1m']}) -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
