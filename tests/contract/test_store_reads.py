"""Every read of the store (evo.store.READS) answers the same from the file (StoreReader) as from a live run's
driver (LiveReader, over Ray), the way one storage test suite runs over every storage backend: each test runs
against both readers.

The file is filled through the real writer (two runs: lineage with a crossover, a disqualified member and its
descendant, an invalid proposal and a duplicate, evaluations of every purpose, LLM calls, a population, saved
state). Then a real `evo run` (children that only sleep) starts a third run in the same file, so it holds the file
and answers the reads of the two filled runs through its driver: the "live" reader. Once that run is stopped, the
file is opened read-only: the "file" reader. The filled runs do not change meanwhile, so both must give the same
answers, errors included.
"""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray

from evo.errors import StoreError
from evo.integrity import DISQUALIFIED
from evo.sandbox.evaluation import EvalResult
from evo.store import READS, LiveReader, StoreReader, live_actor, open_view, open_writer
from operators.usage import LLMUsage
from tests.support.genomes import napper_source
from tests.support.runs import NAP_RUN, LiveRun, task_dir, wait_for_reader

FIRST, SECOND = "r1first0", "r2second"
REASON = DISQUALIFIED + "causality check failed: the model reads ahead"
SOURCES = {name: f"LEARNING_RATE = {lr}\nDEPTH = {depth}\n" for name, lr, depth in
           [("seed", 0.01, 2), ("a", 0.02, 2), ("b", 0.01, 3), ("c", 0.02, 3), ("d", 0.04, 3), ("e", 0.04, 4),
            ("f", 0.005, 2)]}
# ids the tests know: two share the prefix "abcd", so a prefix can be ambiguous
IDS = {"seed": "5eed0000", "a": "abcd1111", "b": "abcd2222", "c": "c0ffee33", "d": "d15c0044", "e": "e0e05555",
       "f": "f0f06666"}


@dataclass
class Filled:
    db: object
    evaluations: dict        # (individual name, purpose, seed) -> evaluation id
    hashes: dict             # name -> source hash
    invalid: str             # the minted ids of the invalid proposal and of the duplicate
    duplicate: str


def usage(operator: str, cost: float, purpose: str = "propose") -> LLMUsage:
    return LLMUsage(operator=operator, model="claude-sonnet-test", status="ok", input_tokens=1200, output_tokens=80,
                    latency_s=0.5, cost_usd=cost, purpose=purpose)


def fill(db) -> Filled:
    store = open_writer(db)
    evaluations = {}
    try:
        run = store.new_run({"population": 4, "evaluations": 5, "budget_tokens": 4096}, run_id=FIRST)

        def add(name, operator, *parents, **kw):
            return store.add_individual(run, source=SOURCES[name], operator=operator, id=IDS[name],
                                        parents=[IDS[p] for p in parents], description=f"made {name}", **kw)

        def evaluate(name, purpose, seed, status="ok", val=None, test=None, error=None):
            result = EvalResult(status=status, val_bpb=val, test_bpb=test, seed=seed, budget_tokens=4096,
                                tokens=4096 if status == "ok" else None, error=error, log=f"log of {name} {seed}")
            evaluations[(name, purpose, seed)] = store.add_evaluation(run, IDS[name], result, purpose=purpose,
                                                                      worker="w0")

        add("seed", "seed")
        evaluate("seed", "noise", 11, val=3.20, test=3.25)
        evaluate("seed", "noise", 12, val=3.22, test=3.27)
        store.set_noise_floor(run, 0.014)
        add("a", "hyper.mutate", "seed")
        evaluate("a", "search", 7, val=3.10)
        add("b", "hyper.mutate", "seed")
        evaluate("b", "search", 7, status="crash", error="RuntimeError: shape mismatch")
        add("c", "merge.crossover", "a", "b")
        evaluate("c", "search", 7, val=3.00)
        evaluate("c", "confirm", 13, val=3.02, test=3.05)
        add("d", "llm.mutate", "c", llm_calls=[usage("llm.mutate", 0.012), usage("llm.mutate", 0.004, "repair")])
        evaluate("d", "search", 7, val=2.50)
        store.set_status(run, IDS["d"], "rejected", REASON)
        add("e", "hyper.mutate", "d")
        evaluate("e", "search", 7, val=2.90)
        invalid = store.add_individual(run, source=None, operator="llm.mutate", parents=[IDS["a"]], status="invalid",
                                       reason="the answer leaves the parent unchanged",
                                       llm_calls=[usage("llm.mutate", 0.01)])
        duplicate = store.add_individual(run, source=SOURCES["a"], operator="hyper.mutate", parents=[IDS["b"]],
                                         status="duplicate")
        store.add_llm_call(run, usage("llm.crossover", 0.02))
        store.set_population(run, [IDS["seed"], IDS["a"], IDS["c"], IDS["e"]])
        store.save_state(run, {"phase": "search", "workers": 2,
                               "counters": {"active_seconds": 30.0, "busy_seconds": 50.0}})
        store.finish_run(run, "finished")

        run = store.new_run({"population": 2, "evaluations": 1, "budget_tokens": 4096}, run_id=SECOND)
        add("seed", "seed")
        add("f", "hyper.sample", "seed")
        evaluate("f", "search", 21, val=3.30)
        store.set_population(run, [IDS["seed"], IDS["f"]])
        store.finish_run(run, "interrupted")
        hashes = {name: store.individual(FIRST if name != "f" else SECOND, IDS[name]).source_hash for name in IDS}
    finally:
        store.close()
    return Filled(db, evaluations, hashes, invalid, duplicate)


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    cwd = task_dir(tmp_path_factory.mktemp("store-reads"), napper_source(10.0))
    return cwd, fill(cwd / "evo.duckdb")


@pytest.fixture(scope="module", params=["live", "file"])
def reader(request, filled, evo_cache):
    """The store's reads through the driver of a live run holding the file, or from the file itself."""
    cwd, _ = filled
    db = cwd / "evo.duckdb"
    if request.param == "file":
        with wait_for_reader(db) as store:
            assert isinstance(store, StoreReader)
            yield store
        return
    run = LiveRun(str(Path(sys.executable).with_name("evo")), cwd, "--evaluations", "50", *NAP_RUN)
    try:
        run.wait_for(lambda line: line.startswith("run ") and " started" in line, "the run started")
        assert live_actor(db) is not None
        with open_view(db) as store:
            assert isinstance(store, LiveReader)
            yield store
    finally:
        run.proc.send_signal(signal.SIGINT)
        try:
            run.finish(timeout=120)
        finally:
            run.kill()
            ray.shutdown()


def outcome(reader, name: str, *args, **kwargs):
    """What a read gives: ("ok", its value) or ("error", the StoreError's line)."""
    try:
        return "ok", getattr(reader, name)(*args, **kwargs)
    except StoreError as e:
        return "error", str(e)


# -- what each read answers about the filled runs ------------------------------------------------------------------

def test_runs_are_read_with_their_settings_and_ends(reader):
    runs = [r for r in reader.runs() if r.run_id in (FIRST, SECOND)]
    assert [(r.run_id, r.status) for r in runs] == [(FIRST, "finished"), (SECOND, "interrupted")]
    first = reader.load_run(FIRST)
    assert first == runs[0] == reader.run(FIRST)
    assert first.config == {"population": 4, "evaluations": 5, "budget_tokens": 4096} and first.noise_floor == 0.014
    assert first.state["counters"]["busy_seconds"] == 50.0
    latest = reader.latest_run()
    assert latest.run_id not in (FIRST, SECOND) and reader.run().run_id == latest.run_id  # the live run's own
    assert reader.llm_cost(FIRST) == pytest.approx(0.046) and reader.llm_cost(SECOND) == 0
    with pytest.raises(StoreError, match="evo.duckdb has no run 'nope'"):
        reader.load_run("nope")


def test_individuals_come_in_birth_order_with_their_parents(reader, filled):
    _, known = filled
    individuals = reader.individuals(FIRST)
    assert [i.id for i in individuals] == [IDS[n] for n in "seed a b c d e".split()] + [known.invalid,
                                                                                         known.duplicate]
    by_id = {i.id: i for i in individuals}
    assert by_id[IDS["c"]].parents == (IDS["a"], IDS["b"]) and by_id[IDS["seed"]].parents == ()
    assert by_id[IDS["d"]].status == "rejected" and by_id[IDS["d"]].reason == REASON
    assert by_id[known.duplicate].reason == f"duplicate of {IDS['a']}"
    assert [i.id for i in reader.individuals(FIRST, status="evaluated")] == [IDS[n] for n in "seed a b c e".split()]
    assert reader.individual(FIRST, IDS["c"]).source == SOURCES["c"]
    assert [i.source for i in reader.individuals(SECOND, with_source=True)] == [SOURCES["seed"], SOURCES["f"]]
    assert reader.population(FIRST) == [IDS[n] for n in ("seed", "a", "c", "e")]
    assert reader.resolve(FIRST, "c0ff") == IDS["c"] and reader.resolve(FIRST, IDS["a"]) == IDS["a"]
    with pytest.raises(StoreError, match="'abcd' is the start of several ids in run r1first0"):
        reader.resolve(FIRST, "abcd")
    with pytest.raises(StoreError, match="no individual 'f0f0' in run r1first0"):
        reader.resolve(FIRST, "f0f0")  # f is of the second run


def test_lineage_ancestry_and_descendants_follow_the_edges(reader, filled):
    _, known = filled
    steps = reader.lineage(FIRST, IDS["e"])
    assert [s.id for s in steps] == [IDS[n] for n in ("seed", "a", "c", "d", "e")]   # first parents
    assert reader.lineage(FIRST, IDS["e"], with_source=True)[-1].source == SOURCES["e"]
    assert dict(reader.ancestry(IDS["e"], FIRST)) == {IDS["e"]: 0, IDS["d"]: 1, IDS["c"]: 2, IDS["a"]: 3,
                                                      IDS["b"]: 3, IDS["seed"]: 4}
    assert dict(reader.descendants(IDS["b"], FIRST)) == {IDS["b"]: 0, IDS["c"]: 1, IDS["d"]: 2, IDS["e"]: 3,
                                                         known.duplicate: 1}   # a duplicate keeps its edge
    assert IDS["f"] in dict(reader.descendants(IDS["seed"])) and IDS["f"] not in dict(reader.descendants(IDS["seed"],
                                                                                                        FIRST))
    assert reader.disqualified_ancestor(FIRST, IDS["e"]) == (IDS["d"], REASON)
    assert reader.disqualified_ancestor(FIRST, IDS["c"]) is None


def test_sources_are_found_by_hash_and_by_individual(reader, filled):
    _, known = filled
    assert reader.source(known.hashes["a"]) == SOURCES["a"] == reader.source_of(FIRST, IDS["a"])
    assert reader.source_exists(known.hashes["f"]) and not reader.source_exists("0" * 16)
    assert reader.find_source(FIRST, known.hashes["a"]) == IDS["a"]   # the duplicate is not the first
    assert reader.find_source(SECOND, known.hashes["a"]) is None
    with pytest.raises(StoreError, match=f"individual {known.invalid} has no source \\(status invalid\\)"):
        reader.source_of(FIRST, known.invalid)


def test_evaluations_scores_and_fitness(reader, filled):
    _, known = filled
    evaluations = reader.evaluations(FIRST)
    assert [e.id for e in evaluations] == sorted(id for (name, _, _), id in known.evaluations.items() if name != "f")
    assert [(e.purpose, e.seed) for e in reader.evaluations(FIRST, IDS["c"])] == [("search", 7), ("confirm", 13)]
    assert [e.individual_id for e in reader.evaluations(FIRST, purpose="noise")] == [IDS["seed"]] * 2
    assert reader.evaluation_log(known.evaluations[("b", "search", 7)]) == "log of b 7"
    assert reader.scored_results(FIRST, IDS["c"]) == {7: 3.00, 13: 3.02}
    assert reader.scored_results(FIRST, IDS["b"]) == {}    # a crash scores nothing
    assert reader.seeds_used(FIRST) == {7, 11, 12, 13}
    fitness = {f.individual_id: f for f in reader.fitness(FIRST)}
    assert fitness[IDS["c"]].n == 2 and fitness[IDS["c"]].mean_bpb == pytest.approx(3.01)
    status = reader.run_status(FIRST)
    assert status.best.id == IDS["c"]   # e scores better, but descends from a disqualified member unconfirmed
    assert status.population == 4 and status.evaluations.search_done == 5


def test_users_sql_reads_and_is_refused_the_same(reader):
    columns, rows = reader.query(f"SELECT id, operator FROM individuals WHERE run_id = '{SECOND}' ORDER BY birth")
    assert columns == ["id", "operator"] and rows == [(IDS["seed"], "seed"), (IDS["f"], "hyper.sample")]
    with pytest.raises(StoreError, match="not allowed"):
        reader.query("DROP TABLE runs")


# -- every read, the same answer from both -------------------------------------------------------------------------

def calls(known: Filled) -> list[tuple[str, tuple, dict]]:
    """At least one call of every read, about the filled runs only (the live run changes while it runs), with
    calls that fail among them."""
    e = known.evaluations
    return [
        ("query", (f"SELECT * FROM individuals WHERE run_id IN ('{FIRST}', '{SECOND}') ORDER BY run_id, birth",), {}),
        ("query", (f"SELECT * FROM fitness WHERE run_id = '{FIRST}' ORDER BY individual_id",), {}),
        ("query", (f"SELECT * FROM evaluations WHERE run_id = '{FIRST}' ORDER BY id",), {"max_rows": 3}),
        ("query", ("SELEC 1",), {}),
        ("query", ("DELETE FROM evaluations",), {}),
        ("runs", (), {}),
        ("latest_run", (), {}),
        ("load_run", (FIRST,), {}), ("load_run", ("nope",), {}),
        ("run", (SECOND,), {}), ("run", ("nope",), {}),
        ("llm_cost", (FIRST,), {}), ("llm_cost", (SECOND,), {}),
        ("individuals", (FIRST,), {}), ("individuals", (FIRST,), {"status": "rejected"}),
        ("individuals", (SECOND,), {"with_source": True}), ("individuals", ("nope",), {}),
        ("individual", (FIRST, IDS["c"]), {}), ("individual", (FIRST, known.invalid), {"with_source": False}),
        ("individual", (SECOND, IDS["c"]), {}),
        ("resolve", (FIRST, "abcd"), {}), ("resolve", (FIRST, "abcd1"), {}), ("resolve", (FIRST, "not an id"), {}),
        ("lineage", (FIRST, IDS["e"]), {}), ("lineage", (SECOND, IDS["f"]), {"with_source": True}),
        ("lineage", (FIRST, "zzzz"), {}),
        ("population", (FIRST,), {}), ("population", (SECOND,), {}),
        ("source", (known.hashes["c"],), {}), ("source", ("nohash",), {}),
        ("source_exists", (known.hashes["f"],), {}), ("source_exists", ("nohash",), {}),
        ("find_source", (FIRST, known.hashes["a"]), {}), ("find_source", (SECOND, known.hashes["c"]), {}),
        ("ancestry", (IDS["e"],), {"run_id": FIRST}), ("ancestry", (IDS["seed"],), {}),
        ("descendants", (IDS["seed"],), {}), ("descendants", (IDS["a"], FIRST), {}),
        ("evaluations", (FIRST,), {}), ("evaluations", (FIRST,), {"individual_id": IDS["c"], "purpose": "confirm"}),
        ("evaluation_log", (e[("seed", "noise", 11)],), {}), ("evaluation_log", (10**9,), {}),
        ("source_of", (FIRST, IDS["d"]), {}), ("source_of", (FIRST, known.invalid), {}),
        ("source_of", (FIRST, "nope"), {}),
        ("scored_results", (FIRST, IDS["c"]), {}), ("scored_results", (SECOND, IDS["f"]), {}),
        ("seeds_used", (FIRST,), {}), ("seeds_used", (SECOND,), {}),
        ("fitness", (FIRST,), {}), ("fitness", (SECOND,), {}),
        ("run_status", (FIRST,), {}), ("run_status", (), {"run_id": SECOND}),
        ("disqualified_ancestor", (FIRST, IDS["e"]), {}), ("disqualified_ancestor", (SECOND, IDS["f"]), {}),
    ]


ANSWERS: dict[str, list] = {}    # reader kind -> the outcome of each call, compared once both kinds ran


def comparable(name: str, args: tuple, answer):
    """What of an answer is the filled runs': the live run's own rows leave runs() and latest_run()."""
    kind, value = answer
    if kind == "ok" and name == "runs":
        return kind, [r for r in value if r.run_id in (FIRST, SECOND)]
    if kind == "ok" and name == "latest_run":
        return kind, value.run_id in (FIRST, SECOND)
    return answer


def test_every_read_answers_the_same_from_both_readers(reader, filled, request):
    _, known = filled
    table = calls(known)
    assert {name for name, _, _ in table} == set(READS)   # a new read joins this table
    answers = [comparable(name, args, outcome(reader, name, *args, **kwargs)) for name, args, kwargs in table]
    assert sum(kind == "error" for kind, _ in answers) >= 10 and sum(kind == "ok" for kind, _ in answers) >= 30
    kind = request.node.callspec.params["reader"]
    ANSWERS[kind] = answers
    if len(ANSWERS) == 2:
        for (name, args, _), live, file in zip(table, ANSWERS["live"], ANSWERS["file"]):
            assert live == file, (name, args)
