"""benchmarks/search.py in its surrogate mode, once, on a tiny setting: every method over the same box and budget,
evo through the SearchPolicy that `evo run` executes."""

import json
import random
import subprocess
import sys
from pathlib import Path

from benchmarks.search_box import BOX, box_values, check_box, inside, start_source
from benchmarks.search_methods import SurrogateExecutor, boxed, evo_config, make_method, run_search, with_seed
from benchmarks.search_surrogate import Surrogate
from evo.population import Proposal, vary
from genome import Genome
from tests.support.genomes import seed_source

ROOT = Path(__file__).resolve().parents[2]
PARAMS = ROOT / "benchmarks" / "results" / "search_surrogate_params.json"


def test_the_surrogate_mode_compares_every_method_and_evo_variants_on_paired_seeds(tmp_path):
    out = tmp_path / "surrogate.json"
    proc = subprocess.run([sys.executable, "benchmarks/search.py", "surrogate", "--reps", "2", "--evaluations", "8",
                           "--variants", "default,steps+close", "--keep-records", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    summary = report["summary_confirmed"]
    assert set(summary) == {"evo", "evo[steps+close]", "autoresearch", "random", "tpe"}
    assert summary["evo"]["8"]["n"] == 4                       # 2 starts x 2 repetitions
    assert "vs_evo_ci95" in summary["tpe"]["8"] and "vs_evo_ci95" not in summary["evo"]["8"]
    records = report["records"]
    assert all(sum(r["purposes"].values()) == 8 for r in records)   # every run counts, whatever its purpose
    evo = [r for r in records if r["method"] == "evo"]
    assert all(r["purposes"]["noise"] == 3 for r in evo)
    for start in ("seed", "far-1"):                            # paired: one search seed per start and repetition
        for rep in range(2):
            seeds = {(r["search_seed"], tuple(r["confirm_seeds"])) for r in records
                     if r["start"] == start and r["rep"] == rep}
            assert len(seeds) == 1
    for r in records:
        snap = r["checkpoints"]["8"]
        assert len(snap["confirmed_values"]) == 3 and inside(snap["constants"])
    assert "| tpe | 8 |" in proc.stdout


def test_bad_arguments_are_one_line_and_a_nonzero_exit():
    proc = subprocess.run([sys.executable, "benchmarks/search.py", "surrogate", "--variants", "nope"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0 and "unknown variant" in proc.stderr


def test_the_box_holds_the_seed_and_the_starts_and_keeps_the_seeds_constraints():
    source = seed_source()
    check_box(source)
    assert set(box_values(source)) == set(BOX)
    assert all(inside(box_values(start_source(source, s))) for s in ("far-1", "far-2", "far-3"))


def test_a_child_that_leaves_the_box_is_moved_onto_its_edge():
    source = start_source(seed_source(), "far-2")       # LEARNING_RATE at the box's ceiling
    parent = Genome.seed(source)
    moved = 0
    for i in range(60):
        variation, _ = vary(Proposal("hyper.mutate", (parent,), random.Random(i), settings={"sigma": 1.0}))
        child = boxed(variation)
        assert inside(box_values(child.source))
        moved += "kept in the box" in child.description
    assert moved > 0


def test_evo_counts_its_noise_and_confirm_runs_against_the_same_budget():
    surrogate = Surrogate.load(PARAMS)
    config = with_seed(evo_config(), 3)
    method = make_method("evo", seed_source=seed_source(), start="far-1", config=config, workers=2)
    out = run_search(method, SurrogateExecutor(surrogate, 2), 24, (8, 24))
    assert sum(out["purposes"].values()) == 24
    assert out["purposes"]["noise"] == 3 and out["purposes"].get("confirm", 0) > 0
    done = method.policy.counters
    assert done.search_done + done.confirm_done + done.noise_done == 24
    source, reported = out["snapshots"][24]
    assert reported == method.policy.best()["mean_bpb"]
