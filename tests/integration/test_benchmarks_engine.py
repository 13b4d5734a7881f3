"""benchmarks/engine.py once on a tiny setting: every part runs through the real engine, Ray and DuckDB, writes its
JSON and its section of the results file, and its exactly-once checks hold."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_engine_benchmark_runs_every_part_and_stores_each_evaluation_once(tmp_path):
    out, results = tmp_path / "engine.json", tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Another benchmark\n\nits own text\n")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "engine.py"), "--real-workers", "1", "--real-sleep", "0",
           "--workers", "1,2", "--evaluations", "1", "--sleep", "0.2", "--llm-latency", "0.3", "--llm-workers", "2",
           "--llm-sleep", "0.5", "--llm-evaluations", "3", "--load", "40", "--load-workers", "4",
           "--out", str(out), "--markdown", str(results)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["machine"]["cores"] and record["command"].startswith("python benchmarks/engine.py")
    parts = {(p["part"], p["workers"]): p for p in record["parts"]}
    assert set(parts) == {("real", 1), ("simulated", 1), ("simulated", 2), ("llm", 2), ("load", 4)}
    for p in parts.values():
        c = p["checks"]
        assert c["ok"], c
        assert c["evaluations_stored"] == c["evaluations_run"] == p["evaluations"] > c["search_evaluations"]
        assert p["store"]["write_ms_per_evaluation"] > 0 and p["store"]["file_bytes"] > 0
        assert p["children"].get("evaluated", 0) >= c["search_evaluations"]
    assert parts[("load", 4)]["checks"]["search_evaluations"] == 40
    assert parts[("load", 4)]["checks"]["runs_stored_twice"] == 0
    assert parts[("real", 1)]["shielded"] in (True, False) and parts[("real", 1)]["evaluation_seconds_mean"] > 0
    llm = parts[("llm", 2)]
    assert llm["llm_requests"] >= 3
    text = results.read_text()
    assert "## Another benchmark\n\nits own text" in text
    assert text.count("benchmarks/engine.py: begin") == 1 and "| load | 4 |" in text


def test_the_engine_benchmark_refuses_a_bad_worker_list():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "engine.py"), "--workers", "two"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "expected numbers separated by commas" in proc.stderr.strip().splitlines()[-1]
