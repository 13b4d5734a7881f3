"""benchmarks/search.py in its surrogate mode, once, on a tiny setting: every method over the same box and budget,
evo through the SearchPolicy that `evo run` executes."""

import json
import random
import subprocess
import sys
from pathlib import Path

from benchmarks.search_box import BOX, box_values, check_box, inside, start_source
from benchmarks.search_methods import (
    SurrogateExecutor,
    boxed,
    evo_config,
    make_method,
    run_search,
    with_seed,
)
from benchmarks.search_surrogate import Surrogate
from evo.search.policy import Proposal, vary
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


def test_the_full_setting_takes_the_held_out_starts_in_turn_and_evo_records_of_another_setting_are_run_again():
    from benchmarks import search

    full = search.SETTINGS["full"]
    assert full.reps == 8 and [s for s, _ in full.runs()] == ["seed", "far-2", "far-3"] * 2 + ["seed", "far-2"]
    assert [r for _, r in full.runs()] == list(range(8))
    assert len(search.SETTINGS["quick"].runs()) == 2                  # one start, every repetition
    first = {"method": "evo", "start": "seed", "rep": 0}               # recorded before evo_setting existed
    assert not search._current(first)
    assert search._current({**first, "evo_setting": json.loads(json.dumps(search.EVO))})
    assert search._current({"method": "random", "start": "seed", "rep": 0})


class RecordingExecutor(SurrogateExecutor):
    """The surrogate executor, keeping every source it was asked to train."""

    def __init__(self, surrogate, workers):
        super().__init__(surrogate, workers)
        self.sources = []

    def submit(self, job):
        self.sources.append(job.source)
        super().submit(job)


def test_evo_given_the_box_as_bounds_proposes_inside_it_where_without_them_children_are_clipped():
    from benchmarks import search

    def clipped_children(setting: dict) -> int:
        settings = {k: v for k, v in setting.items() if k != "operators"}
        config = with_seed(evo_config(setting["operators"], **settings), 3)
        method = make_method("evo", seed_source=seed_source(), start="far-2", config=config, workers=2)
        executor = RecordingExecutor(lambda src, s: 3.0 - 0.01 * (int(src.encode().hex()[-6:], 16) % 50), 2)
        run_search(method, executor, 24, (24,))
        assert len(executor.sources) == 24 and all(inside(box_values(s)) for s in executor.sources)
        assert len(set(executor.sources)) > 12                  # it searched, not one point again and again
        policy = method.policy
        return sum("kept in the box" in policy.genome(i).description for i in policy.genomes if i != policy.seed_id)

    assert clipped_children(search.EVO) == 0
    assert clipped_children(search.EVO_FIRST) > 0             # without bounds its draws leave the box
