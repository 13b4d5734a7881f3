"""`evo plot`'s pictures, drawn from a real store file: a run with merges, failures, confirm and noise evaluations,
and the edge cases (only the seed, only failures, no evaluations, an unknown run)."""

import random
import shutil
from datetime import timedelta

import numpy as np
import pytest
from PIL import Image

from evo.errors import StoreError
from evo.plot import _running_best, _winner_path, plot_run
from evo.store import open_reader, open_writer

CRIMSON = np.array([220, 20, 60])  # the winner's path


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB")).astype(int)


def assert_drawn(path, min_ink=0.02) -> np.ndarray:
    """A picture of a readable size with something on it: many colours, and a share of non-white pixels (empty
    axes with a title come to about 1.6% at this size)."""
    rgb = pixels(path)
    height, width, _ = rgb.shape
    assert width >= 600 and height >= 400, (width, height)
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 20
    assert (rgb.sum(axis=2) < 3 * 245).mean() > min_ink
    return rgb


def crimson_share(rgb: np.ndarray) -> float:
    return (np.abs(rgb - CRIMSON).sum(axis=2) < 40).mean()


def colour_share(rgb: np.ndarray) -> float:
    """The share of clearly coloured (not grey) pixels: markers, the path, the colour bar."""
    return (rgb.max(axis=2) - rgb.min(axis=2) > 40).mean()


class Run:
    """A run being written, with evaluations placed at given minutes after its start."""

    def __init__(self, store, run_id):
        self.store, self.run_id = store, run_id
        self.t0 = store.load_run(run_id).started_at
        self.count = 0

    def child(self, operator="hyper.mutate", parents=(), description=""):
        self.count += 1
        return self.store.add_individual(self.run_id, source=f"LEARNING_RATE = {self.count}\n", operator=operator,
                                         parents=parents, description=description)

    def evaluate(self, id, minute, val_bpb=None, purpose="search", status="ok", seed=1):
        finished = self.t0 + timedelta(minutes=minute)
        self.store.add_evaluation(self.run_id, id, {"status": status, "val_bpb": val_bpb, "seed": seed,
                                                    "total_seconds": 30.0, "error": None if status == "ok" else
                                                    f"{status} in train.py"},
                                  purpose=purpose, started_at=finished - timedelta(seconds=30), finished_at=finished)


def build_search(db) -> tuple[str, list[str]]:
    """A seed measured for noise, 32 children over 40 minutes (mutations and merges, 4 of them failing), the best
    few confirmed, a population of 8. Returns the run id and the winner's first-parent path, seed first."""
    rng = random.Random(7)
    store = open_writer(db)
    run = Run(store, store.new_run({"population": 8}))
    seed = run.child("seed", description="the seed train.py")
    for k, bpb in enumerate((3.00, 3.02, 2.99)):
        run.evaluate(seed, 0.5 + 0.2 * k, bpb, purpose="noise" if k else "search", seed=k + 1)
    store.set_noise_floor(run.run_id, 0.015)
    bpb = {seed: 3.0}
    ranked = [seed]
    for k in range(32):
        minute = 2 + 1.2 * k
        if k % 6 == 5 and len(ranked) > 1:
            parents = (ranked[0], ranked[1])
            id = run.child("merge.crossover", parents, f"merge of {parents[0][:6]} and {parents[1][:6]}: "
                                                       "keeps the schedule of the first, the width of the second")
        else:
            parents = (rng.choice(ranked[:4]),)
            id = run.child("hyper.mutate", parents, f"LEARNING_RATE 0.01 -> {rng.uniform(0.005, 0.02):.4f} "
                                                    f"(x{rng.uniform(0.5, 2):.2f}); WARMUP_STEPS {k} -> {k + 10}")
        if k % 8 == 3:
            run.evaluate(id, minute, status="crash" if k != 19 else "timeout")
            continue
        bpb[id] = min(bpb[p] for p in parents) - rng.uniform(-0.03, 0.06)
        if k == 20:
            bpb[id] = 9.5  # a diverged child far above the rest
        run.evaluate(id, minute, bpb[id])
        ranked = sorted(bpb, key=bpb.get)
        if k % 5 == 4:  # the current leader is confirmed on two more seeds
            for s in (2, 3):
                run.evaluate(ranked[0], minute + 0.3 * s, bpb[ranked[0]] + rng.gauss(0, 0.01), "confirm", seed=s)
    population = ranked[1:9]  # the lowest single value stays out, so the winner is the population's best
    store.set_population(run.run_id, population)
    store.close()
    with open_reader(db) as reader:
        winner = next(f.individual_id for f in reader.fitness(run.run_id) if f.individual_id in population)
        path = [winner]
        while parents := reader.individual(run.run_id, path[-1], with_source=False).parents:
            path.append(parents[0])
    return run.run_id, path[::-1]


@pytest.fixture(scope="module")
def built_search(tmp_path_factory):
    db = tmp_path_factory.mktemp("search") / "evo.duckdb"
    return db, *build_search(db)


@pytest.fixture
def search_db(built_search, tmp_path):
    """A private copy of the search run's file (a test may add runs to it)."""
    db, run_id, path = built_search
    return shutil.copy(db, tmp_path / "evo.duckdb"), run_id, path


def test_a_search_run_draws_its_progress_and_its_lineage(search_db, tmp_path):
    db, run_id, path = search_db
    assert len(path) >= 3  # the winner is a few generations down, so there is a path to highlight
    with open_reader(db) as reader:
        written = plot_run(reader, tmp_path / "plots" / "progress.png", run_id=run_id)
    assert written == [tmp_path / "plots" / "progress.png", tmp_path / "plots" / "progress_lineage.png"]
    progress, lineage = (assert_drawn(p, min_ink=0.04) for p in written)
    assert colour_share(progress) > 0.005 and colour_share(lineage) > 0.02
    # The winner's path is ringed and labelled on one, drawn in thick edges and outlines on the other.
    assert crimson_share(progress) > 0.001
    assert crimson_share(lineage) > 0.001
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []  # nothing left open in pyplot's registry


def test_the_winner_is_the_populations_best_and_its_path_follows_first_parents(search_db):
    db, run_id, path = search_db
    with open_reader(db) as reader:
        individuals = {i.id: i for i in reader.individuals(run_id)}
        ranked = reader.fitness(run_id)
    assert ranked[0].individual_id != path[-1]  # the overall best is outside the population
    assert _winner_path(individuals, ranked) == path
    assert any(len(individuals[i].parents) == 2 for i in path)  # a merge on the way, followed by its first parent


def test_the_running_best_counts_only_confirmed_individuals_once_there_are_any(tmp_path):
    db = tmp_path / "evo.duckdb"
    with open_writer(db) as store:
        run = Run(store, store.new_run({}))
        seed = run.child("seed")
        a, b, c = (run.child(parents=(seed,)) for _ in range(3))
        for minute, (id, bpb, purpose) in enumerate([
                (seed, 3.0, "search"), (a, 2.9, "search"), (b, 2.8, "search"),
                (a, 2.95, "confirm"),  # from here on only confirmed individuals count: A's mean, 2.925
                (c, 2.5, "search"),  # unconfirmed: no longer the best, however low
                (a, 3.1, "noise"),  # the best got worse: (2.9 + 2.95 + 3.1) / 3
                (b, 2.82, "confirm"),  # B confirmed at (2.8 + 2.82) / 2
                (b, 1.0, "replay")]):  # replays are not fitness
            run.evaluate(id, minute + 1, bpb, purpose)
        run.evaluate(c, 10, status="crash")
    with open_reader(db) as reader:
        _, best, confirmed = _running_best(reader.evaluations(run.run_id))
    assert best == pytest.approx([3.0, 2.9, 2.8, 2.925, 2.925, (2.9 + 2.95 + 3.1) / 3, 2.81])
    assert confirmed == [False, False, False, True, True, True, True]


def test_the_latest_run_is_drawn_by_default(tmp_path):
    db = tmp_path / "evo.duckdb"
    with open_writer(db) as store:
        run = Run(store, store.new_run({}))
        run.evaluate(run.child("seed"), 1.0, 3.2)
        run_id, later = run.run_id, store.new_run({})
    with open_reader(db) as reader:
        with pytest.raises(StoreError, match=f"^run {later} has no evaluations to plot$"):
            plot_run(reader, tmp_path / "progress.png")
        assert all(p.exists() for p in plot_run(reader, tmp_path / "progress.png", run_id=run_id))


def test_a_run_with_only_its_seed_evaluated_still_draws(tmp_path):
    db = tmp_path / "evo.duckdb"
    with open_writer(db) as store:
        run = Run(store, store.new_run({}))
        seed = run.child("seed", description="the seed train.py")
        run.evaluate(seed, 1.5, 3.21)
        store.set_population(run.run_id, [seed])
    with open_reader(db) as reader:
        progress, lineage = plot_run(reader, tmp_path / "progress.png")
    assert crimson_share(assert_drawn(progress)) > 0  # the seed is the whole path, ringed and labelled
    assert colour_share(assert_drawn(lineage)) > 0.01  # one node and its colour bar


def test_a_run_whose_evaluations_all_failed_still_draws(tmp_path):
    db = tmp_path / "evo.duckdb"
    with open_writer(db) as store:
        run = Run(store, store.new_run({}))
        seed = run.child("seed")
        run.evaluate(seed, 1.0, status="crash")
        run.evaluate(run.child(parents=(seed,)), 2.0, status="timeout")
    with open_reader(db) as reader:
        progress, lineage = plot_run(reader, tmp_path / "progress.png")
    assert colour_share(assert_drawn(progress)) == 0  # no points, no path: the failures' marks and the words
    assert colour_share(assert_drawn(lineage)) == 0


def test_a_run_without_evaluations_is_refused_in_one_line(tmp_path):
    db = tmp_path / "evo.duckdb"
    with open_writer(db) as store:
        run_id = store.new_run({})
        store.add_individual(run_id, source="X = 1\n", operator="seed")
    with open_reader(db) as reader:
        with pytest.raises(StoreError, match=f"^run {run_id} has no evaluations to plot$"):
            plot_run(reader, tmp_path / "progress.png", run_id=run_id)
    assert not (tmp_path / "progress.png").exists()


def test_an_unknown_run_or_a_store_without_runs_is_refused(search_db, tmp_path):
    db, _, _ = search_db
    with open_reader(db) as reader:
        with pytest.raises(StoreError, match="no run 'nosuchrun'"):
            plot_run(reader, tmp_path / "progress.png", run_id="nosuchrun")
    empty = tmp_path / "empty.duckdb"
    open_writer(empty).close()
    with open_reader(empty) as reader:
        with pytest.raises(StoreError, match="has no runs to plot"):
            plot_run(reader, tmp_path / "progress.png")
    assert not (tmp_path / "progress.png").exists()

