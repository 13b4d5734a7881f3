"""Reading a finished run: evo sql, lineage, show, export (scored again by evo eval), logs."""

import json
import subprocess

import pytest

from evo.store import open_reader
from tests.integration.test_run import TINY_RUN, task_dir

EVALUATIONS = 6


@pytest.fixture(scope="module")
def finished(tmp_path_factory, evo_cache):
    import sys
    from pathlib import Path

    evo_bin = str(Path(sys.executable).with_name("evo"))
    cwd = task_dir(tmp_path_factory.mktemp("finished-run"))
    proc = subprocess.run([evo_bin, "run", "--evaluations", str(EVALUATIONS), *TINY_RUN], cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    best = proc.stdout.split("best: ")[1].split()[0]
    return cwd, best


def evo(evo_bin, cwd, *args):
    return subprocess.run([evo_bin, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_sql_counts_individuals_in_json(evo_bin, finished):
    cwd, _ = finished
    proc = evo(evo_bin, cwd, "sql", "SELECT count(*) AS n FROM individuals", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    with open_reader(cwd / "evo.duckdb") as db:
        expected = len(db.individuals(db.latest_run().run_id))
    assert json.loads(proc.stdout) == [{"n": expected}]
    csv_out = evo(evo_bin, cwd, "sql", "SELECT operator, count(*) AS n FROM individuals GROUP BY 1 ORDER BY 1",
                  "--format", "csv").stdout.splitlines()
    assert csv_out[0] == "operator,n" and any(line.startswith("seed,1") for line in csv_out)


def test_lineage_walks_from_the_seed(evo_bin, finished):
    cwd, best = finished
    proc = evo(evo_bin, cwd, "lineage", best[:8], "--diff")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("run ") and lines[0].endswith(best)
    assert lines[1].strip().startswith("seed ")


def test_export_of_the_best_scores_as_the_store_says(evo_bin, finished, tmp_path):
    cwd, best = finished
    out = tmp_path / "best_train.py"
    assert evo(evo_bin, cwd, "export", best, "-o", str(out)).returncode == 0
    assert out.read_text() == evo(evo_bin, cwd, "show", best).stdout
    with open_reader(cwd / "evo.duckdb") as db:
        stored = next(e for e in db.evaluations(db.latest_run().run_id)
                      if e.individual_id == best and e.status == "ok")
    proc = evo(evo_bin, cwd, "eval", str(out), "--json", "--budget-tokens", str(stored.budget_tokens),
               "--seed", str(stored.seed), "--threads", "1")
    assert json.loads(proc.stdout)["val_bpb"] == pytest.approx(stored.val_bpb, abs=0)


def test_logs_print_an_evaluations_output(evo_bin, finished):
    cwd, _ = finished
    proc = evo(evo_bin, cwd, "logs", "1")
    assert proc.returncode == 0 and "model:" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["lineage", "ffffffff"], "no individual 'ffffffff'"),
    (["show", "nothere"], "no individual 'nothere'"),
    (["sql", "SELEC 1"], "syntax error"),
    (["sql", "DROP TABLE runs"], "not allowed"),
    (["sql", "SELECT 1", "--db", "missing.duckdb"], "no database at missing.duckdb"),
    (["logs", "99999"], "no evaluation 99999"),
])
def test_bad_lookups_get_one_clear_line(evo_bin, finished, args, message):
    cwd, _ = finished
    proc = evo(evo_bin, cwd, *args)
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr, proc.stderr


def test_replay_with_the_same_seeds_reproduces_every_step_exactly(evo_bin, finished):
    cwd, _ = finished
    with open_reader(cwd / "evo.duckdb") as db:
        run_id = db.latest_run().run_id
        operators = {i.id: i.operator for i in db.individuals(run_id)}
        # the best scored child, so that the path has a step to ablate (the run's best may be the seed itself)
        child = next((f.individual_id for f in db.fitness(run_id) if operators[f.individual_id] != "seed"), None)
    assert child is not None, "no child of the finished run has an ok evaluation"
    proc = evo(evo_bin, cwd, "replay", child, "--same-seeds", "--ablate")
    assert proc.returncode == 0, proc.stderr
    assert "(reproduced exactly)" in proc.stdout, proc.stdout
    assert f"ablation of {child}" in proc.stdout, proc.stdout
    assert "  step 1 " in proc.stdout.split(f"ablation of {child}")[1], proc.stdout
    with open_reader(cwd / "evo.duckdb") as db:
        ablated = {i.id for i in db.individuals(run_id) if i.operator == "replay.ablate"}
        replays = [e for e in db.evaluations(run_id) if e.purpose == "replay"]
        assert replays and all(e.status == "ok" for e in replays)
        recorded = {(e.individual_id, e.seed): e.val_bpb for e in db.evaluations(run_id)
                    if e.purpose != "replay" and e.status == "ok"}
        path = [e for e in replays if e.individual_id not in ablated]
        assert {e.individual_id for e in path} >= {child, next(i for i, op in operators.items() if op == "seed")}
        for e in path:  # every step of the path, on a seed it was recorded with, gives the recorded val_bpb
            assert e.val_bpb == recorded[(e.individual_id, e.seed)]


def test_plot_writes_both_pictures(evo_bin, finished, tmp_path):
    cwd, _ = finished
    proc = evo(evo_bin, cwd, "plot", "--out", str(tmp_path / "p.png"))
    assert proc.returncode == 0, proc.stderr
    from PIL import Image

    for name in ("p.png", "p_lineage.png"):
        with Image.open(tmp_path / name) as image:
            assert image.size[0] >= 600 and image.size[1] >= 400
            assert len(image.convert("RGB").getcolors(1 << 20)) > 20


def test_the_readmes_example_queries_run(evo_bin, finished):
    import re

    from tests.support.genomes import ROOT

    section = (ROOT / "README.md").read_text().split("## Questions in SQL", 1)[1].split("\n## ", 1)[0]
    queries = re.findall(r"```sql\n(.*?)```", section, re.S)
    assert len(queries) == 5
    cwd, best = finished
    for sql in queries:
        proc = evo(evo_bin, cwd, "sql", sql, "--format", "json")
        assert proc.returncode == 0, (sql, proc.stderr)
        rows = json.loads(proc.stdout)
        assert isinstance(rows, list)
    winner = json.loads(evo(evo_bin, cwd, "sql", queries[-1], "--format", "json").stdout)
    assert winner[0]["id"] == best and winner[-1]["operator"] == "seed"
