"""`evo run` whose LLM operator proposes children that poison what they report (an infinite score; a peak memory
as a string and a device of terminal escape sequences): the run finishes, each is a failed evaluation with its
reason, and the run resumes from a store that also holds non-finite and malformed records (written into the file
through DuckDB itself, as an older or buggy evo could have left them)."""

import json
import os
import re

import duckdb
import pytest

from genome import content_hash
from tests.support.adversarial import Child, ChildProposer, child
from tests.support.genomes import ROOT, tiny_source

ESCAPES = "\x1b]0;owned\x07\x1b[2J\x1b[31mcuda:0"


def evo(evo_bin, cwd, *args, env=None, timeout=600):
    import subprocess

    return subprocess.run([evo_bin, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**(env or os.environ), "EVO_LOG_LEVEL": "ERROR"})


def sql(evo_bin, cwd, query):
    proc = evo(evo_bin, cwd, "sql", query, "--format", "json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_a_run_fed_poisoned_children_finishes_and_resumes_over_poisoned_records(evo_bin, tmp_path):
    cwd = tmp_path / "task"
    cwd.mkdir()
    (cwd / "train.py").write_text(tiny_source())
    (cwd / "program.md").write_text((ROOT / "program.md").read_text())
    honest_path = tmp_path / "honest_tweak.py"
    honest_path.write_text(tiny_source(LEARNING_RATE="4e-3"))
    honest = Child("honest_tweak", honest_path, "Raises the learning rate.", None)
    poisoned = [child("poisons_infinite_loss"), child("poisons_reported_strings")]
    flags = ["--population", "4", "--budget-tokens", "8192", "--workers", "1", "--operators", "llm.mutate",
             "--no-preflight", "--noise-seeds", "2", "--confirm-seeds", "1", "--quiet"]
    with ChildProposer([*poisoned, honest]) as server:
        env = {**os.environ, "ANTHROPIC_API_KEY": "sk-ant-test", "ANTHROPIC_BASE_URL": server.url}
        first = evo(evo_bin, cwd, "run", *flags, "--evaluations", "2", env=env)
        assert first.returncode == 0, first.stdout + first.stderr
        assert server.proposed == ["poisons_infinite_loss", "poisons_reported_strings"]

        ids = {content_hash(c.source): c.name for c in poisoned}
        stored = {ids[e["individual_id"]]: e for e in sql(
            evo_bin, cwd, "SELECT individual_id, status, val_bpb, peak_memory_mb, device, error FROM evaluations")
            if e["individual_id"] in ids}
        assert set(stored) == set(ids.values())
        infinite, strings = stored["poisons_infinite_loss"], stored["poisons_reported_strings"]
        assert (infinite["status"], infinite["val_bpb"]) == ("rejected", None)
        assert infinite["error"].startswith("non-finite loss"), infinite
        assert strings["status"] != "ok" and strings["peak_memory_mb"] is None and strings["device"] is None
        assert strings["error"].startswith("the training process broke the harness protocol: it reported its "
                                           "device as '\\x1b]0;owned"), strings
        assert "'a lot' (not a number)" in strings["error"] and "\x1b" not in strings["error"]
        reasons = {ids[r["id"]]: r for r in sql(evo_bin, cwd, "SELECT id, status, reason FROM individuals")
                   if r["id"] in ids}
        assert all(r["status"] == "rejected" and r["reason"] for r in reasons.values()), reasons

        # Records as an older evo stored such children (ok, with an infinite score or the fields as sent), and a
        # NaN noise score of the seed: written into the file directly.
        seed_id = content_hash(tiny_source())
        with duckdb.connect(str(cwd / "evo.duckdb")) as conn:
            run_id, search_seed = conn.execute(
                "SELECT run_id, seed FROM evaluations WHERE purpose = 'search' LIMIT 1").fetchone()
            rows = [(seed_id, "noise", 12345, "nan", "inf", "inf", ESCAPES),
                    (content_hash(poisoned[0].source), "search", search_seed, "inf", None, "427.0", "cpu"),
                    (content_hash(poisoned[1].source), "search", search_seed, "3.15", None, "inf", ESCAPES * 1000)]
            for row in rows:
                conn.execute("INSERT INTO evaluations (run_id, individual_id, purpose, seed, status, val_bpb, "
                             "test_bpb, peak_memory_mb, device, finished_at) VALUES (?, ?, ?, ?, 'ok', ?::DOUBLE, "
                             "?::DOUBLE, ?::DOUBLE, ?, now())", [run_id, *row])

        resumed = evo(evo_bin, cwd, "run", "--resume", "--evaluations", "3", env=env)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert f"run {run_id} resumed" in resumed.stdout
        assert server.proposed[-1] == "honest_tweak"
    honest_evaluations = sql(evo_bin, cwd, f"SELECT status, val_bpb FROM evaluations "
                                           f"WHERE individual_id = '{content_hash(honest.source)}'")
    assert honest_evaluations and honest_evaluations[0]["status"] == "ok", honest_evaluations
    assert sql(evo_bin, cwd, "SELECT status FROM runs") == [{"status": "finished"}]
    fitness = sql(evo_bin, cwd, "SELECT individual_id, mean_bpb, score FROM fitness")
    assert fitness and all(0 < f["mean_bpb"] < 10 and 0 < f["score"] < 10 for f in fitness), fitness
    status = evo(evo_bin, cwd, "status", timeout=120)
    assert status.returncode == 0, status.stderr
    for out in (resumed.stdout, status.stdout):
        assert not re.search(r"(?i)\b(nan|inf|infinity)\b", out), out
