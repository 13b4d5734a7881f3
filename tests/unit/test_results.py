"""Results that are not finite or not typed: what evo.results makes of them, and that nothing that reads them (the
policy, the store, a resumed run's history) raises on them."""

import math

import duckdb
import pytest

from evo.config import RunConfig
from evo.results import reported_fields, typed
from evo.search.policy import History, SearchPolicy, SeedFailed, vary
from evo.store import open_writer
from genome import content_hash
from tests.support.genomes import tiny_source

SEED = tiny_source()
SEED_ID = content_hash(SEED)
ESCAPES = "\x1b]0;owned\x07\x1b[2J\x1b[31mcuda:0"


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
def test_a_non_finite_score_is_a_rejection_that_says_so(value):
    assert typed({"status": "ok", "val_bpb": value}) == \
        {"status": "rejected", "val_bpb": None, "test_bpb": None, "error": f"non-finite val_bpb: {value!r}"}
    out = typed({"status": "ok", "val_bpb": 3.0, "test_bpb": value})
    assert (out["status"], out["val_bpb"], out["error"]) == ("rejected", None, f"non-finite test_bpb: {value!r}")
    out = typed({"status": "crash", "val_bpb": value, "error": "boom"})     # a failure stays one, its score dropped
    assert (out["status"], out["val_bpb"], out["error"]) == ("crash", None, "boom")


def test_a_malformed_score_or_status_is_a_failure_and_a_malformed_field_is_dropped_with_a_note():
    assert typed({"status": "ok", "val_bpb": "3.0"})["error"] == "malformed result: val_bpb '3.0' (not a number)"
    assert typed({"status": "ok", "val_bpb": True})["status"] == "crash"
    assert typed({"status": "ok"})["error"] == "malformed result: an ok evaluation without val_bpb"
    assert typed({"status": "great", "val_bpb": 3.0})["error"] == "malformed result: status 'great'"
    out = typed({"status": "ok", "val_bpb": 3.0, "peak_memory_mb": "a lot", "tokens": 2.5, "device": ESCAPES,
                 "training_seconds": math.inf, "num_params": 10, "log": "step 1\n"})
    assert (out["status"], out["val_bpb"], out["num_params"]) == ("ok", 3.0, 10)
    assert out["peak_memory_mb"] is out["tokens"] is out["device"] is out["training_seconds"] is None
    assert out["log"].splitlines() == [
        "evo: training_seconds inf dropped (not finite)", "evo: tokens 2.5 dropped (not an integer)",
        "evo: peak_memory_mb 'a lot' dropped (not a number)",
        "evo: device '\\x1b]0;owned\\x07\\x1b[2J\\x1b[31mcuda:0' dropped (not printable)", "step 1"]
    assert "\x1b" not in out["log"]


def test_what_the_training_process_reports_of_its_model_is_kept_only_in_type_and_bound():
    assert reported_fields({"device": "cuda:0", "peak_memory_mb": 812}) == ("cuda:0", 812.0, None)
    assert reported_fields({}) == (None, None, None)
    device, peak, problem = reported_fields({"device": ESCAPES, "peak_memory_mb": "a lot"})
    assert (device, peak) == (None, None)
    assert problem == ("it reported its device as '\\x1b]0;owned\\x07\\x1b[2J\\x1b[31mcuda:0' (not printable); "
                       "it reported peak_memory_mb 'a lot' (not a number)")
    _, _, problem = reported_fields({"device": "cpu" + "-" * 60_000, "peak_memory_mb": math.inf})
    assert "(60,005 characters) (longer than 64 characters)" in problem and "peak_memory_mb inf (not finite)" in problem
    assert len(problem) < 300


def settings(**kw) -> RunConfig:
    base = {"population": 4, "tournament_size": 2, "evaluations": 4, "operators": {"hyper.mutate": 1.0},
            "noise_seeds": 2, "confirm_seeds": 1, "elites": 2, "preflight": False, "seed": 0}
    return RunConfig(**{**base, **kw})


POISONED = [{"status": "ok", "val_bpb": math.inf}, {"status": "ok", "val_bpb": math.nan},
            {"status": "ok", "val_bpb": "2.9", "peak_memory_mb": "a lot"},
            {"status": "ok", "val_bpb": 2.9, "test_bpb": -math.inf, "device": ESCAPES}]


def test_the_policy_takes_non_finite_and_malformed_results_as_failures_and_runs_on():
    policy = SearchPolicy(settings(), SEED)
    poisoned = iter(POISONED)
    while not policy.close_search():
        policy.close_noise_phase()
        for proposal in policy.proposals():
            policy.child(proposal, *vary(proposal))
        task = policy.next_task()
        if task is None:
            continue
        result = {"status": "ok", "val_bpb": 3.1 + task.seed % 5 * 0.01}
        if task.purpose == "search":
            result = next(poisoned)
        policy.report(task, result)
        policy.best()
    assert policy.counters.search_done == 4 and policy.counters.failed == 4
    assert policy.population == [SEED_ID] and policy.best()["id"] == SEED_ID
    assert [a.status for a in policy.proposer.attempts] == ["rejected", "rejected", "crash", "rejected"]
    assert policy.proposer.attempts[0].reason == "non-finite val_bpb: inf"


def test_a_seed_whose_noise_score_is_not_finite_fails_with_the_reason():
    policy = SearchPolicy(settings(), SEED)
    policy.report(policy.next_task(), {"status": "ok", "val_bpb": 3.1})
    with pytest.raises(SeedFailed, match=r"\(rejected\): non-finite val_bpb: inf"):
        policy.report(policy.next_task(), {"status": "ok", "val_bpb": math.inf})


def test_a_store_holding_non_finite_and_malformed_records_resumes(tmp_path):
    """Records an older or buggy evo could have left, written into a real store file through DuckDB itself: the
    store reads them back, its fitness view leaves them out, and a policy resumes from them."""
    path = tmp_path / "evo.duckdb"
    store = open_writer(path)
    run = store.new_run({})
    store.add_individual(run, source=SEED, operator="seed")
    policy = SearchPolicy(settings(), SEED)
    for value in (3.10, 3.12):
        task = policy.next_task()
        store.add_evaluation(run, SEED_ID, {"status": "ok", "val_bpb": value, "seed": task.seed}, purpose="noise")
        policy.report(task, {"status": "ok", "val_bpb": value})
    policy.close_noise_phase()
    children = [store.add_individual(run, source=SEED + f"\nX = {k}\n", operator="hyper.mutate", parents=[SEED_ID])
                for k in range(4)]
    # what the writer itself now stores: a string peak memory and an infinite score, as failures with reasons
    store.add_evaluation(run, children[3], {"status": "ok", "val_bpb": math.inf, "peak_memory_mb": "a lot"})
    store.set_population(run, [SEED_ID])
    store.save_state(run, {**policy.state(), "phase": "search"})
    store.close()
    with duckdb.connect(str(path)) as conn:
        for child, (val_bpb, peak, device) in zip(children, [("nan", "nan", "cpu"), ("inf", "inf", ESCAPES),
                                                             (None, "-1e308", "x" * 100_000)]):
            conn.execute("INSERT INTO evaluations (run_id, individual_id, purpose, seed, status, val_bpb, "
                         "peak_memory_mb, device, finished_at) VALUES (?, ?, 'search', ?, 'ok', ?::DOUBLE, "
                         "?::DOUBLE, ?, now())", [run, child, policy.search_seed, val_bpb, peak, device])
        conn.execute("INSERT INTO evaluations (run_id, individual_id, purpose, seed, status, val_bpb, finished_at) "
                     "VALUES (?, ?, 'noise', 1, 'ok', 'inf'::DOUBLE, now())", [run, SEED_ID])

    store = open_writer(path)
    [stored] = [e for e in store.evaluations(run) if e.individual_id == children[3]]
    assert (stored.status, stored.val_bpb, stored.peak_memory_mb, stored.error) == \
        ("rejected", None, None, "non-finite val_bpb: inf")
    [seed] = store.fitness(run)
    assert (seed.individual_id, seed.n, seed.mean_bpb) == (SEED_ID, 2, pytest.approx(3.11))
    history = History(store.load_run(run).state, store.individuals(run, with_source=True), store.evaluations(run),
                      store.population(run))
    resumed = SearchPolicy(settings(evaluations=8), SEED, history=history)
    assert resumed.results == policy.results            # only the finite ok scores count
    assert resumed.best()["id"] == SEED_ID and math.isfinite(resumed.best()["score"])
    store.close()
