"""benchmarks/search.py in its real mode, once, on its tiny setting: every training run on evo's Ray workers through
the sandboxed harness, and a second run that resumes from the files and trains nothing again."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_real_mode_runs_each_method_on_the_workers_and_resumes_without_training_again(tmp_path):
    records, evaluations, out = tmp_path / "tiny.jsonl", tmp_path / "evaluations.jsonl", tmp_path / "tiny.json"
    cmd = [sys.executable, "benchmarks/search.py", "real", "--setting", "tiny", "--workers", "2",
           "--records", str(records), "--evaluations-file", str(evaluations), "--out", str(out)]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "0 search(es) done, 2 to run" in first.stderr
    done = [json.loads(line) for line in records.read_text().splitlines()]
    assert {r["method"] for r in done} == {"evo", "random"}
    by = {r["method"]: r for r in done}
    assert by["evo"]["purposes"] == {"noise": 2, "search": 1} and by["random"]["purposes"] == {"search": 3}
    assert by["evo"]["search_seed"] == by["random"]["search_seed"]
    for r in done:
        snap = r["checkpoints"]["3"]
        assert snap["confirmed"] is not None and len(snap["confirmed_values"]) == 1
        assert snap["test"] is not None and snap["test"] != snap["confirmed"]   # the winner's test bpb beside it
    trained = [json.loads(line) for line in evaluations.read_text().splitlines()]
    # only the final re-evaluations measure the test split: no method's search sees it
    assert all((e["test_bpb"] is not None) == (e["purpose"] == "benchmark") for e in trained)
    assert trained and all(e["status"] == "ok" and e["budget_tokens"] == 8192 for e in trained)
    # the start on the search seed is trained once, though both methods asked for it
    start = [e for e in trained if e["seed"] == by["evo"]["search_seed"] and e["purpose"] == "noise"]
    assert len(start) == 1
    summary = json.loads(out.read_text())["summary_confirmed"]
    test = by["random"]["checkpoints"]["3"]["test"]
    assert summary["random"]["3"]["n"] == 1 and summary["random"]["3"]["test_median"] == test
    assert "| test median |" in first.stdout and out.with_suffix(".png").stat().st_size > 10_000   # table and plot

    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 search(es) done, 0 to run" in again.stderr
    assert len(evaluations.read_text().splitlines()) == len(trained)
