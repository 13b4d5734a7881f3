"""Lineage in SQL: the ancestry and descendants table macros over a graph with merges, and the fitness score."""

import math

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evo.fitness import score
from evo.sandbox.evaluation import EvalResult
from evo.store import StoreReader, open_reader, open_writer
from evo.store.schema import TEMP_MACROS


@pytest.fixture
def graph(tmp_path):
    """S is the seed; A and B its children; C a child of A; M = merge(C, B); N = merge(M, A), so A is both N's
    second parent and, through M and C, its great-grandparent."""
    db = tmp_path / "evo.duckdb"
    store = open_writer(db)
    run = store.new_run({})
    ids = {}

    def add(name, *parents):
        ids[name] = store.add_individual(run, source=f"NAME = {name!r}\n", operator="op",
                                         parents=[ids[p] for p in parents])

    add("S")
    add("A", "S")
    add("B", "S")
    add("C", "A")
    add("M", "C", "B")
    add("N", "M", "A")
    yield store, run, ids, db
    store.close()


def named(rows, ids):
    names = {v: k for k, v in ids.items()}
    return {names[i]: depth for i, depth in rows}


def test_ancestry_gives_every_ancestor_at_its_nearest_depth(graph):
    store, run, ids, _ = graph
    # A is N's second parent (depth 1) and also its great-grandparent through M and C (depth 3): the nearest wins.
    assert named(store.ancestry(ids["N"]), ids) == {"N": 0, "M": 1, "A": 1, "C": 2, "B": 2, "S": 2}
    assert named(store.ancestry(ids["M"]), ids) == {"M": 0, "C": 1, "B": 1, "A": 2, "S": 2}
    assert named(store.ancestry(ids["S"]), ids) == {"S": 0}
    rows = store.conn.execute("SELECT id, depth, run_id, operator FROM ancestry(?)", [ids["C"]]).fetchall()
    assert rows == [(ids["C"], 0, run, "op"), (ids["A"], 1, run, "op"), (ids["S"], 2, run, "op")]
    assert store.ancestry("0123456789abcdef") == []


def test_descendants_give_every_descendant_at_its_nearest_depth(graph):
    store, _, ids, _ = graph
    assert named(store.descendants(ids["S"]), ids) == {"S": 0, "A": 1, "B": 1, "C": 2, "M": 2, "N": 2}
    assert named(store.descendants(ids["A"]), ids) == {"A": 0, "C": 1, "N": 1, "M": 2}
    assert named(store.descendants(ids["N"]), ids) == {"N": 0}


def test_the_line_from_the_seed_follows_first_parents_in_one_query(graph):
    store, run, ids, db = graph
    store.close()

    class Counting(StoreReader):
        selects = 0

        def _select(self, sql, params=()):
            Counting.selects += 1
            return super()._select(sql, params)

    reader = Counting(duckdb.connect(str(db), read_only=True), db)
    reader.conn.execute(TEMP_MACROS)
    steps = reader.lineage(run, ids["N"], with_source=True)
    assert Counting.selects == 1
    # N's first parent is M, M's is C, C's is A, A's is S: B (M's second parent) is not on the line.
    assert [s.id for s in steps] == [ids[n] for n in "SACMN"]
    assert [s.depth for s in steps] == [4, 3, 2, 1, 0]
    assert steps[-1].parent == ids["M"] and steps[-1].second_parent == ids["A"]
    assert steps[0].parent is None and steps[0].source == "NAME = 'S'\n"
    assert reader.resolve(run, ids["N"][:6]) == ids["N"]
    reader.close()


def test_the_macros_work_for_users_on_a_read_only_file(graph):
    store, _, ids, db = graph
    store.close()
    reader = open_reader(db)
    columns, rows = reader.query(f"SELECT id, depth FROM ancestry('{ids['N']}') WHERE depth = 2 ORDER BY id")
    assert columns == ["id", "depth"]
    assert rows == sorted((ids[n], 2) for n in "CBS")
    _, rows = reader.query(f"SELECT count(*) FROM descendants('{ids['B']}')")
    assert rows == [(3,)]  # B itself, M and N
    reader.close()


def test_fitness_and_score_with_known_numbers(tmp_path):
    store = open_writer(tmp_path / "evo.duckdb")
    run = store.new_run({})
    a = store.add_individual(run, source="A = 1\n", operator="seed")
    b = store.add_individual(run, source="B = 1\n", operator="op", parents=[a])
    c = store.add_individual(run, source="C = 1\n", operator="op", parents=[a])

    def ev(who, bpb, purpose="search", status="ok"):
        store.add_evaluation(run, who, EvalResult(status=status, val_bpb=bpb, seed=1), purpose=purpose)

    for v in (2.0, 2.2, 2.4):
        ev(a, v, "noise")
    ev(a, 2.6, "confirm")
    ev(a, 0.1, "replay")             # replays do not count
    ev(a, None, status="crash")       # nor failures
    ev(b, 2.08)
    ev(c, 2.05)
    ev(c, 2.15, "confirm")

    # a: mean 2.3, sample std sqrt(((.3)^2+(.1)^2+(.1)^2+(.3)^2)/3) = sqrt(0.2/3); no noise floor yet
    std_a = math.sqrt(0.2 / 3)
    rows = {f.individual_id: f for f in store.fitness(run)}
    assert (rows[a].n, rows[a].n_confirm) == (4, 1)
    assert rows[a].mean_bpb == pytest.approx(2.3) and rows[a].std_bpb == pytest.approx(std_a)
    assert rows[a].score == pytest.approx(2.3 + std_a / 2)
    assert rows[b].std_bpb is None and rows[b].score == pytest.approx(2.08)  # one evaluation, no floor: no charge

    store.set_noise_floor(run, 0.2)  # bigger than c's own spread (0.0707) and smaller than a's (0.258)
    rows = {f.individual_id: f for f in store.fitness(run)}
    assert rows[a].score == pytest.approx(2.3 + std_a / 2)
    assert rows[b].score == pytest.approx(2.08 + 0.2)
    assert rows[c].score == pytest.approx(2.1 + 0.2 / math.sqrt(2))
    assert [f.individual_id for f in store.fitness(run)] == [c, b, a]  # 2.241 < 2.28 < 2.429: b, measured
    # once at 2.08, ranks behind c (2.05 and 2.15, mean 2.1) although its one draw beat c's mean

    # The view's score is the one selection uses, for every row (evo.fitness defines both).
    for f in store.fitness(run):
        assert f.score == pytest.approx(score(f.mean_bpb, f.std_bpb, f.n, 0.2))

    columns, rows = store.query("SELECT rank, individual_id, n FROM leaderboard WHERE run_id = '" + run + "'")
    assert rows == [(1, c, 2), (2, b, 1), (3, a, 4)]
    store.close()


def test_one_genome_in_two_runs_keeps_each_runs_lineage_apart(tmp_path):
    store = open_writer(tmp_path / "evo.duckdb")
    first, second = store.new_run({}), store.new_run({})
    seed = store.add_individual(first, source="S = 1\n", operator="seed")
    assert store.add_individual(second, source="S = 1\n", operator="seed") == seed
    a = store.add_individual(first, source="A = 1\n", operator="op", parents=[seed])
    b = store.add_individual(second, source="B = 1\n", operator="op", parents=[seed])
    assert store.conn.execute("SELECT id, depth, run_id FROM ancestry(?)", [b]).fetchall() == \
        [(b, 0, second), (seed, 1, second)]
    assert sorted(store.conn.execute("SELECT id, depth, run_id FROM descendants(?)", [seed]).fetchall()) == \
        sorted([(seed, 0, first), (seed, 0, second), (a, 1, first), (b, 1, second)])
    assert store.conn.execute("SELECT id, depth, run_id FROM descendants(?, in_run := ?)", [seed, second]
                              ).fetchall() == [(seed, 0, second), (b, 1, second)]
    assert store.descendants(seed, first) == [(seed, 0), (a, 1)]
    assert store.ancestry(seed, second) == [(seed, 0)] and store.ancestry(a, second) == []
    store.close()


@pytest.fixture(scope="module")
def memory_store():
    store = open_writer(":memory:")  # the same schema in memory: one store for every example, a run each
    yield store
    store.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.integers(min_value=0, max_value=10_000), max_size=2), min_size=1, max_size=15))
def test_macros_agree_with_a_breadth_first_search(memory_store, choices):
    # Node i's parents are drawn from the nodes before it; an empty list makes another root.
    parents = {i: list(dict.fromkeys(c % i for c in picks)) if i else [] for i, picks in enumerate(choices)}
    store = memory_store
    run = store.new_run({})
    ids = {}
    for i, ps in parents.items():  # the run id in the source keeps genome ids apart between examples
        ids[i] = store.add_individual(run, source=f"N = {i}  # {run}\n", operator="op",
                                      parents=[ids[p] for p in ps])
    down: dict[int, list[int]] = {}
    for child, ps in parents.items():
        for p in ps:
            down.setdefault(p, []).append(child)
    names = {v: k for k, v in ids.items()}
    for i in parents:
        assert {names[x]: d for x, d in store.ancestry(ids[i])} == shortest(parents, i)
        assert {names[x]: d for x, d in store.descendants(ids[i])} == shortest(down, i)


def shortest(edges: dict[int, list[int]], start: int) -> dict[int, int]:
    """Breadth-first depths from start along edges."""
    depth, frontier = {start: 0}, [start]
    while frontier:
        nxt = []
        for node in frontier:
            for n in edges.get(node, []):
                if n not in depth:
                    depth[n] = depth[node] + 1
                    nxt.append(n)
        frontier = nxt
    return depth
