"""The writer: runs, individuals with their sources and lineage in one transaction, population, evaluations, LLM
calls, and the reads the engine resumes from. Real DuckDB files in tmp_path."""

import threading

import pytest

from evo.errors import StoreError
from evo.sandbox.evaluation import EvalResult
from evo.store import open_reader, open_writer
from genome import Genome
from operators.usage import LLMUsage

SEED = "LEARNING_RATE = 3e-3\n"


@pytest.fixture
def store(tmp_path):
    s = open_writer(tmp_path / "evo.duckdb")
    yield s
    s.close()


def counts(store) -> dict:
    return {t: store.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("sources", "individuals", "lineage", "llm_calls", "evaluations")}


def test_runs_start_save_state_finish_and_resume(store):
    assert store.latest_run() is None
    first = store.new_run({"population": 16, "budget": {"tokens": 300_000}})
    second = store.new_run({"population": 8}, state={"rng": [1, 2, 3]})
    assert store.latest_run().run_id == second
    store.save_state(first, {"rng": [3, 2, 1], "evaluations": 7})
    store.finish_run(first, "interrupted")
    run = store.load_run(first)
    assert (run.status, run.config, run.state) == ("interrupted", {"budget": {"tokens": 300_000}, "population": 16},
                                                  {"rng": [3, 2, 1], "evaluations": 7})
    assert run.finished_at is not None and run.state_saved_at is not None
    resumed = store.resume_run(first)
    assert (resumed.status, resumed.finished_at) == ("running", None)
    with pytest.raises(StoreError, match="has no run 'nope'"):
        store.load_run("nope")
    with pytest.raises(StoreError, match="has no run"):
        store.save_state("nope", {})
    with pytest.raises(StoreError, match="unknown final run status"):
        store.finish_run(first, "running")


def test_an_individual_goes_in_with_its_source_and_lineage(store):
    run = store.new_run({})
    seed = Genome.seed(SEED)
    assert store.add_individual(run, source=seed.source, operator="seed", id=seed.id) == seed.id
    a = store.add_individual(run, source="LEARNING_RATE = 4e-3\n", operator="hyper.mutate", parents=[seed.id],
                             description="LEARNING_RATE 3e-3 -> 4e-3")
    b = store.add_individual(run, source="LEARNING_RATE = 2e-3\n", operator="hyper.mutate", parents=[seed.id])
    m = store.add_individual(run, source="LEARNING_RATE = 5e-3\n", operator="merge.crossover", parents=[a, b])
    assert a == Genome("LEARNING_RATE = 4e-3\n").id  # the id is the genome id by default
    assert store.conn.execute("SELECT child_id, parent_id, role FROM lineage WHERE child_id = ? ORDER BY role",
                              [m]).fetchall() == [(m, a, "parent"), (m, b, "second_parent")]
    child = store.individual(run, m)
    assert (child.parents, child.generation, child.birth, child.status, child.source) == \
        ((a, b), 2, 4, "proposed", "LEARNING_RATE = 5e-3\n")
    assert [i.id for i in store.individuals(run)] == [seed.id, a, b, m]
    assert store.source(m) == "LEARNING_RATE = 5e-3\n" and store.source_exists(m)
    assert store.find_source(run, a) == a and store.find_source(run, "0" * 16) is None


def test_a_failing_add_leaves_nothing_half_written(store):
    run = store.new_run({})
    seed = store.add_individual(run, source=SEED, operator="seed")
    before = counts(store)
    with pytest.raises(StoreError, match="has no parent 'ghost'"):
        store.add_individual(run, source="X = 1\n", operator="merge.crossover", parents=[seed, "ghost"])
    # This one fails last, after its source, individual and lineage edge went in: all of it must roll back.
    with pytest.raises(StoreError, match="needs its operator, model and status"):
        store.add_individual(run, source="X = 2\n", operator="llm.mutate", parents=[seed],
                             llm_calls=[LLMUsage("llm.mutate", "claude-sonnet-4-5", "ok"), {"operator": "llm.mutate"}])
    assert counts(store) == before
    assert not store.source_exists(Genome("X = 2\n").id)
    # and the writer is still usable, with birth numbers that did not skip
    assert store.individual(run, store.add_individual(run, source="X = 2\n", operator="seed")).birth == 2


def test_a_source_seen_again_is_stored_once(store):
    first, second = store.new_run({}), store.new_run({})
    a = store.add_individual(first, source=SEED, operator="seed")
    b = store.add_individual(second, source=SEED.replace("\n", "\r\n"), operator="seed")  # same text, CRLF
    assert a == b
    assert counts(store)["sources"] == 1 and counts(store)["individuals"] == 2
    # The same genome in two runs: each run has its own row, status and population.
    store.set_population(first, [a])
    assert (store.population(first), store.population(second)) == ([a], [])


def test_duplicate_and_invalid_proposals_get_ids_of_their_own(store):
    run = store.new_run({})
    seed = store.add_individual(run, source=SEED, operator="seed")
    child = store.add_individual(run, source="X = 1\n", operator="hyper.mutate", parents=[seed])
    dup = store.add_individual(run, source="X = 1\n", operator="hyper.mutate", parents=[seed], status="duplicate")
    bad = store.add_individual(run, source=None, operator="llm.mutate", parents=[child], status="invalid",
                               reason="the reply had no code block")
    assert (dup, bad) == (f"{run}-3", f"{run}-4")
    assert (store.individual(run, dup).reason, store.individual(run, dup).source_hash) == (f"duplicate of {child}",
                                                                                          child)
    assert (store.individual(run, bad).status, store.individual(run, bad).source) == ("invalid", None)
    with pytest.raises(StoreError, match=f"already has an individual {child}"):
        store.add_individual(run, source="X = 1\n", operator="hyper.mutate", parents=[seed])
    with pytest.raises(StoreError, match="only an invalid individual may lack a source"):
        store.add_individual(run, source=None, operator="llm.mutate")
    with pytest.raises(StoreError, match="unknown individual status 'great'"):
        store.add_individual(run, source="Y = 1\n", operator="seed", status="great")


def test_set_status_and_population(store):
    run = store.new_run({})
    ids = [store.add_individual(run, source=f"X = {i}\n", operator="seed") for i in range(4)]
    store.set_population(run, ids[:3])
    store.set_population(run, [ids[3], ids[1]])
    assert store.population(run) == [ids[1], ids[3]]
    with pytest.raises(StoreError, match="no individual 'ghost'"):
        store.set_population(run, [ids[0], "ghost"])
    assert store.population(run) == [ids[1], ids[3]]  # unchanged by the refused call
    store.set_status(run, ids[0], "rejected", "reads the validation split")
    assert (store.individual(run, ids[0]).status, store.individual(run, ids[0]).reason) == \
        ("rejected", "reads the validation split")
    assert [i.id for i in store.individuals(run, status="rejected")] == [ids[0]]
    with pytest.raises(StoreError, match="no individual"):
        store.set_status(run, "ghost", "evaluated")


def test_evaluations_are_stored_with_every_field_and_move_the_status(store):
    run = store.new_run({})
    seed = store.add_individual(run, source=SEED, operator="seed")
    other = store.add_individual(run, source="X = 1\n", operator="hyper.mutate", parents=[seed])
    third = store.add_individual(run, source="X = 2\n", operator="hyper.mutate", parents=[seed])
    result = EvalResult(status="ok", val_bpb=2.5, training_seconds=30.0, total_seconds=41.5, tokens=300_000,
                        num_steps=120, num_params=1234, peak_memory_mb=88.0, device="cpu", seed=7,
                        budget_tokens=300_000, eval_seconds=3.0, log="step 1\nstep 2\n")
    first = store.add_evaluation(run, seed, result, purpose="noise", worker="w0")
    second = store.add_evaluation(run, other, EvalResult(status="interrupted", seed=7))
    third_id = store.add_evaluation(run, third, {"status": "rejected", "error": "future tokens change the logits"})
    assert first < second < third_id
    [e] = store.evaluations(run, seed)
    assert (e.val_bpb, e.tokens, e.num_steps, e.seed, e.budget_tokens, e.budget_seconds, e.worker, e.purpose,
            e.device) == (2.5, 300_000, 120, 7, 300_000, None, "w0", "noise", "cpu")
    assert (e.finished_at - e.started_at).total_seconds() == pytest.approx(41.5)
    assert store.evaluation_log(first) == "step 1\nstep 2\n"
    statuses = {i.id: (i.status, i.reason) for i in store.individuals(run)}
    assert statuses == {seed: ("evaluated", None), other: ("proposed", None),
                        third: ("rejected", "future tokens change the logits")}
    assert [x.id for x in store.evaluations(run, purpose="search")] == [second, third_id]
    with pytest.raises(StoreError, match="no individual 'ghost' to evaluate"):
        store.add_evaluation(run, "ghost", result)
    fine = store.add_evaluation(run, seed, {"status": "fine"})      # stored as a failure with its reason, not refused
    assert [(x.status, x.error) for x in store.evaluations(run, seed) if x.id == fine] == \
        [("crash", "malformed result: status 'fine'")]
    with pytest.raises(StoreError, match="unknown evaluation purpose"):
        store.add_evaluation(run, seed, result, purpose="fun")


def test_llm_calls_and_the_cost_of_a_run(store):
    run, other = store.new_run({}), store.new_run({})
    seed = store.add_individual(run, source=SEED, operator="seed")
    usage = LLMUsage("llm.mutate", "claude-sonnet-4-5", "ok", input_tokens=1000, output_tokens=200,
                     cache_read_tokens=5000, cache_write_tokens=100, latency_s=2.5, cost_usd=0.25)
    child = store.add_individual(run, source="X = 1\n", operator="llm.mutate", parents=[seed], llm_calls=[usage])
    store.add_llm_call(run, LLMUsage("llm.mutate", "claude-sonnet-4-5", "overloaded", error="529"))
    store.add_llm_call(run, {"operator": "llm.crossover", "model": "m", "status": "ok", "cost_usd": 0.5}, child)
    store.add_llm_call(other, {"operator": "llm.crossover", "model": "m", "status": "ok", "cost_usd": 9.0})
    assert store.llm_cost(run) == pytest.approx(0.75)
    assert store.conn.execute("SELECT individual_id, input_tokens, cache_read_tokens, latency_s FROM llm_calls "
                              "WHERE cost_usd = 0.25").fetchall() == [(child, 1000, 5000, 2.5)]


def test_a_reopened_store_resumes_where_it_stopped(tmp_path):
    db = tmp_path / "evo.duckdb"
    store = open_writer(db)
    run = store.new_run({"population": 2})
    seed = store.add_individual(run, source=SEED, operator="seed")
    child = store.add_individual(run, source="X = 1\n", operator="hyper.mutate", parents=[seed])
    store.set_population(run, [seed, child])
    store.add_evaluation(run, child, EvalResult(status="ok", val_bpb=2.0, seed=1))
    store.save_state(run, {"next_seed": 2})
    store.close()

    reader = open_reader(db)
    assert reader.latest_run().state == {"next_seed": 2}
    assert reader.population(run) == [seed, child]
    assert [(i.id, i.parents, i.source) for i in reader.individuals(run, with_source=True)] == \
        [(seed, (), SEED), (child, (seed,), "X = 1\n")]
    assert [f.individual_id for f in reader.fitness(run)] == [child]
    reader.close()

    store = open_writer(db)
    grandchild = store.add_individual(run, source="X = 2\n", operator="hyper.mutate", parents=[child])
    assert (store.individual(run, grandchild).birth, store.individual(run, grandchild).generation) == (3, 2)
    store.close()


def test_threads_can_share_the_writer(store):
    # The run actor may answer queries and store results from several threads of one actor.
    run = store.new_run({})
    seed = store.add_individual(run, source=SEED, operator="seed")
    ids, errors = [], []

    def work(k):
        try:
            for i in range(20):
                ids.append(store.add_evaluation(run, seed, {"status": "ok", "val_bpb": 2.0 + i, "seed": i}))
                store.add_individual(run, source=f"X = {k}_{i}\n", operator="hyper.mutate", parents=[seed])
                store.query("SELECT count(*) FROM evaluations")
        except Exception as e:  # collected: an exception in a thread would otherwise vanish
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(ids) == sorted(e.id for e in store.evaluations(run)) and len(ids) == 80
    assert sorted(i.birth for i in store.individuals(run)) == list(range(1, 82))
