"""The search policy driven directly, as an executor drives it, with made-up results: no Ray, no store."""

import dataclasses
import json
import statistics
from dataclasses import dataclass

import pytest

from evo.choices import Phase
from evo.config import RunConfig
from evo.run_status import EvaluationCounts, RunStatus
from evo.search.policy import History, SearchPolicy, SeedFailed, Task
from evo.search.proposals import MAX_INVALID_IN_A_ROW, vary
from genome import content_hash, hyperparameters, lowest_common_ancestor, rewrite
from operators.registry import REGISTRY
from operators.variation import Variation
from tests.support.genomes import tiny_source

SEED = tiny_source()
SEED_ID = content_hash(SEED)


def settings(**kw) -> RunConfig:
    base = {"population": 4, "tournament_size": 2, "evaluations": 6, "operators": {"hyper.mutate": 1.0},
            "noise_seeds": 2, "confirm_seeds": 1, "elites": 2, "preflight": False, "seed": 0}
    return RunConfig(**{**base, **kw})


@dataclass
class Individual:        # the store's attribute names
    id: str
    parents: tuple
    operator: str
    description: str
    source: str | None
    status: str


@dataclass
class Evaluation:
    individual_id: str
    seed: int
    val_bpb: float | None
    purpose: str
    status: str
    error: str | None = None


def bpb(id: str, seed: int) -> float:
    """A made-up val_bpb: a fixed fitness per individual plus a small effect of the seed."""
    return 3.0 + int(id[:4], 16) / 65536 * 0.1 + (seed % 7) * 1e-4


class Executor:
    """Runs what the policy asks for with made-up results and keeps what a store would keep."""

    def __init__(self, policy: SearchPolicy, result=None, stored: "Executor | None" = None):
        """stored: an executor whose records this one goes on from (a resumed run)."""
        self.policy = policy
        self.result = result or (lambda task: {"status": "ok", "val_bpb": bpb(task.individual, task.seed)})
        self.individuals = stored.individuals if stored else [
            Individual(SEED_ID, (), "seed", "the seed train.py", SEED, "proposed")]
        self.evaluations: list[Evaluation] = stored.evaluations if stored else []
        self.tasks: list[Task] = []
        self.proposed = []   # (proposal, the population then, the best then)
        self.islands_then = []   # each proposal's islands' members then

    def individual(self, id):
        return next(i for i in self.individuals if i.id == id)

    def store(self, task, result):
        self.evaluations.append(Evaluation(task.individual, task.seed, result.get("val_bpb"), task.purpose,
                                           result["status"], result.get("error")))
        ind = self.individual(task.individual)
        if ind.status == "proposed" and result["status"] != "interrupted":
            ind.status = "evaluated"

    def propose(self):
        """Proposes children until the policy wants no more; every proposal comes back at once."""
        for proposal in self.policy.proposals():
            self.proposed.append((proposal, tuple(self.policy.population), (self.policy.best() or {}).get("id")))
            self.islands_then.append([list(island) for island in self.policy.islands.members])
            variation, unavailable = vary(proposal)
            verdict = self.policy.child(proposal, variation, unavailable)
            self.individuals.append(Individual(verdict.id or f"x{len(self.individuals)}", proposal.parent_ids,
                                               variation.operator, variation.description, variation.source,
                                               verdict.status))

    def step(self) -> bool:
        """One pass with one worker: run the next task to its end. False when the run is over."""
        self.policy.close_noise_phase()
        self.propose()
        if self.policy.close_search():
            return False
        task = self.policy.next_task()
        assert task is not None, "the policy has nothing to run but is not finished"
        self.tasks.append(task)
        result = self.result(task)
        self.store(task, result)
        self.policy.report(task, result)
        return True

    def run(self, steps=1000):
        for _ in range(steps):
            if not self.step():
                return
        raise AssertionError("the run did not finish")

    def history(self) -> History:
        state = json.loads(json.dumps(self.policy.state()))
        return History(state, list(self.individuals), list(self.evaluations), list(self.policy.population))


def noise_done(policy: SearchPolicy, values=(3.10, 3.12)) -> None:
    for v in values:
        task = policy.next_task()
        policy.report(task, {"status": "ok", "val_bpb": v})
    assert policy.close_noise_phase()


def test_the_seed_is_measured_on_the_noise_seeds_before_any_child():
    policy = SearchPolicy(settings(noise_seeds=3, preflight=True), SEED)
    tasks = [policy.next_task() for _ in range(3)]
    assert [t.individual for t in tasks] == [SEED_ID] * 3 and {t.purpose for t in tasks} == {"noise"}
    assert [t.seed for t in tasks] == [policy.search_seed, *policy.fresh_seeds[:2]]  # children pair with the first
    assert [t.preflight for t in tasks] == [True, False, False]
    assert policy.next_task() is None
    for t, v in zip(tasks, (3.10, 3.12, 3.14)):
        assert not policy.close_noise_phase()
        policy.report(t, {"status": "ok", "val_bpb": v})
    assert policy.close_noise_phase() and policy.phase == "search"
    assert policy.noise_floor == pytest.approx(statistics.stdev([3.10, 3.12, 3.14]))
    assert policy.population == [SEED_ID]
    assert len(policy.proposals()) == policy.lookahead


def test_only_a_child_whose_operator_may_change_code_gets_the_pre_flight():
    policy = SearchPolicy(settings(preflight=True, operators={"hyper.mutate": 1.0}), SEED)
    noise_done(policy)
    [hyper_child] = policy.proposals(limit=1)
    policy.child(hyper_child, vary(hyper_child)[0])
    [code_child] = policy.proposals(limit=1)
    edited = SEED.replace("print(", "print('edited:', ", 1)
    assert edited != SEED
    policy.child(code_child, Variation(operator="llm.mutate", status="ok", source=edited, description="an edit"))
    first, second = policy.next_task(), policy.next_task()
    assert policy.genome(first.individual).operator == "hyper.mutate" and not first.preflight
    assert policy.genome(second.individual).operator == "llm.mutate" and second.preflight
    unchecked = SearchPolicy(settings(preflight=False, operators={"hyper.mutate": 1.0}), SEED)
    noise_done(unchecked)
    [p] = unchecked.proposals(limit=1)
    unchecked.child(p, Variation(operator="llm.mutate", status="ok", source=edited, description="an edit"))
    assert not unchecked.next_task().preflight               # --no-preflight: none at all


def test_children_of_the_seed_are_proposed_while_the_seed_is_measured_and_run_after_it():
    policy = SearchPolicy(settings(noise_seeds=2), SEED, lookahead=3)
    proposals = policy.proposals(limit=1)
    assert len(proposals) == 1
    proposals += policy.proposals()
    assert len(proposals) == 3 and all(p.parent_ids == (SEED_ID,) for p in proposals)
    assert policy.proposals() == []  # lookahead counts those being proposed
    children = [policy.child(p, *vary(p)).id for p in proposals]
    noise = [policy.next_task(), policy.next_task()]
    assert {t.purpose for t in noise} == {"noise"}
    assert policy.next_task() is None  # a child waits for the noise floor
    for t in noise:
        policy.report(t, {"status": "ok", "val_bpb": 3.1})
    assert policy.close_noise_phase()
    assert policy.next_task() == Task(children[0], policy.search_seed, "search")


def test_a_seed_that_fails_its_noise_evaluation_stops_the_run():
    policy = SearchPolicy(settings(), SEED)
    task = policy.next_task()
    with pytest.raises(SeedFailed, match=r"failed its first evaluation \(crash\): boom"):
        policy.report(task, {"status": "crash", "error": "boom"})
    assert policy.phase == "failed"


def test_children_are_evaluated_on_the_search_seed_and_placed_by_score():
    policy = SearchPolicy(settings(evaluations=3), SEED)
    run = Executor(policy)
    run.run()
    search = [t for t in run.tasks if t.purpose == "search"]
    assert len(search) == 3 and {t.seed for t in search} == {policy.search_seed}
    for k, task in enumerate(run.tasks):  # a child runs after its parents were measured
        measured = {t.individual for t in run.tasks[:k]}
        assert set(run.individual(task.individual).parents) <= measured
    assert policy.counters.search_done == 3 and policy.counters.failed == 0
    # everything evaluated fits in a population of 4: all of it is kept
    assert sorted(policy.population) == sorted({SEED_ID, *(t.individual for t in search)})


def test_replacement_keeps_the_best_by_score_when_the_population_is_full():
    policy = SearchPolicy(settings(population=3, evaluations=8, elites=0), SEED)
    run = Executor(policy)
    while policy.counters.search_done < 8:
        run.step()
    evaluated = {e.individual_id for e in run.evaluations if e.status == "ok"}
    assert len(evaluated) > 3 and len(policy.population) == 3
    ranked = sorted(policy._members(sorted(evaluated)), key=lambda m: (m.score, m.id))
    assert sorted(policy.population) == sorted(m.id for m in ranked[:3])


def test_parents_come_from_the_population_and_best_selection_takes_the_best():
    policy = SearchPolicy(settings(selection="best", evaluations=6, elites=0), SEED)
    run = Executor(policy)
    run.run()
    assert len(run.proposed) >= 6
    for proposal, population, best in run.proposed:
        if not population:  # proposed while the seed was measured: the seed is the only parent there is
            assert proposal.parent_ids == (SEED_ID,)
            continue
        assert set(proposal.parent_ids) <= set(population)
        assert proposal.parent_ids[0] == best
    assert len({best for _, _, best in run.proposed}) > 1   # the best changed on the way


def test_an_elite_is_confirmed_on_a_fresh_seed_before_the_next_child():
    # the child is better than the seed: it becomes an elite and is confirmed before any other child runs
    def result(task):
        return {"status": "ok", "val_bpb": 3.0 if task.individual != SEED_ID else 3.2 + (task.seed % 3) * 0.01}

    policy = SearchPolicy(settings(evaluations=3, elites=1), SEED)
    run = Executor(policy, result)
    while policy.counters.search_done < 1:
        run.step()
    child = next(t for t in run.tasks if t.purpose == "search").individual
    task = policy.next_task()
    assert task == Task(child, policy.fresh_seeds[0], "confirm")
    assert policy.ready  # children were waiting; the confirmation went first
    other = policy.next_task()   # while the confirmation runs, another child's result is not a reason to queue it again
    policy.report(other, result(other))
    assert task not in policy.confirm_queue


def test_the_best_is_confirmed_before_the_run_ends():
    policy = SearchPolicy(settings(evaluations=3, elites=0), SEED)   # no elites: nothing confirmed on the way
    run = Executor(policy)
    run.run()
    assert policy.phase == "finished"
    purposes = [t.purpose for t in run.tasks]
    last_search = len(purposes) - 1 - purposes[::-1].index("search")
    assert "confirm" not in purposes[:last_search] and "confirm" in purposes[last_search:]
    best = policy.best()
    assert best["n_confirm"] == 1 and best["id"] != SEED_ID
    assert run.tasks[-1] == Task(best["id"], policy.fresh_seeds[0], "confirm")


def side_by_side(first: SearchPolicy, second: SearchPolicy, steps: int,
                 variation=lambda p: Variation.invalid(p.operator, "not needed here")) -> None:
    """Gives both policies the same results for steps tasks and asserts they decide the same: the tasks, the
    population island by island, the proposals (operator, parents, island, random draws)."""
    for _ in range(steps):
        a, b = first.next_task(), second.next_task()
        assert a == b
        result = {"status": "ok", "val_bpb": bpb(a.individual, a.seed)}
        first.report(a, result)
        second.report(b, result)
        assert second.islands.members == first.islands.members
        pa, pb = first.proposals(), second.proposals()
        assert [(p.operator, p.parent_ids, p.island, p.rng.random()) for p in pa] == \
               [(p.operator, p.parent_ids, p.island, p.rng.random()) for p in pb]
        for policy, proposals in ((first, pa), (second, pb)):
            for p in proposals:
                policy.child(p, variation(p))


def test_resume_from_the_saved_state_makes_the_same_decisions():
    first = SearchPolicy(settings(evaluations=10, operators={"hyper.mutate": 1.0, "hyper.crossover": 1.0}), SEED)
    run = Executor(first)
    while first.counters.search_done < 4 or first.confirm_queue:
        run.step()
    run.propose()
    assert first.phase == "search" and first.ready and not first.running
    second = SearchPolicy(first.config, SEED, lookahead=first.lookahead, history=run.history())
    assert second.population == first.population and second.noise_floor == first.noise_floor
    assert list(second.ready) == list(first.ready) and second.best() == first.best()
    assert list(second.confirm_queue) == list(first.confirm_queue)
    side_by_side(first, second, 3)
    assert second.state()["rng"] == first.state()["rng"]


def test_a_worker_that_dies_costs_its_search_evaluation_only():
    policy = SearchPolicy(settings(evaluations=3), SEED)
    run = Executor(policy)
    noise_done(policy)
    run.propose()
    task = policy.next_task()
    died = {"status": "crash", "error": "worker died during the evaluation: the actor died", "seed": task.seed}
    policy.report(task, died)
    assert policy.counters.failed == 1 and policy.counters.search_done == 1
    assert task.individual not in policy.population and task.individual not in policy.ready
    assert policy.proposer.attempts[-1].status == "crash" and "worker died" in policy.proposer.attempts[-1].reason
    run.run()  # the run goes on to its end without it
    assert policy.phase == "finished"
    assert [t.individual for t in run.tasks].count(task.individual) == 0


def test_a_confirmation_lost_to_a_dead_worker_is_queued_again():
    policy = SearchPolicy(settings(elites=1, evaluations=4), SEED)
    run = Executor(policy, lambda t: {"status": "ok", "val_bpb": 3.0 if t.individual != SEED_ID else 3.2})
    while policy.counters.search_done < 1:
        run.step()
    confirm = policy.next_task()
    assert confirm.purpose == "confirm"
    policy.report(confirm, {"status": "crash", "error": "worker died during the evaluation"})
    assert policy.next_task() == confirm


def test_an_interrupted_evaluation_is_run_again_after_resume():
    policy = SearchPolicy(settings(evaluations=5, elites=0), SEED)
    run = Executor(policy)
    while policy.counters.search_done < 2:
        run.step()
    run.propose()
    task = policy.next_task()
    assert task.purpose == "search"
    run.store(task, {"status": "interrupted", "error": "the run was stopped"})   # what the executor stores
    policy.interrupt()
    assert policy.phase == "interrupted" and not policy.running
    resumed = SearchPolicy(policy.config, SEED, lookahead=policy.lookahead, history=run.history())
    assert resumed.phase == "search" and resumed.next_task() == task
    resumed.report(task, {"status": "ok", "val_bpb": bpb(task.individual, task.seed)})
    Executor(resumed, stored=run).run()
    assert resumed.phase == "finished" and resumed.counters.search_done == 5


def test_a_finished_run_resumed_with_more_evaluations_searches_on_and_its_best_is_confirmed():
    policy = SearchPolicy(settings(evaluations=3, elites=0), SEED)
    run = Executor(policy)
    run.run()
    assert policy.phase == "finished"
    same = SearchPolicy(policy.config, SEED, lookahead=policy.lookahead, history=run.history())
    assert same.close_search()                       # nothing more to do with the same stop conditions
    longer = dataclasses.replace(policy.config, evaluations=6)
    resumed = SearchPolicy(longer, SEED, lookahead=policy.lookahead, history=run.history())
    assert resumed.phase == "search" and not resumed.close_search()
    more = Executor(resumed, stored=run)
    more.run()
    assert resumed.phase == "finished" and resumed.counters.search_done == 6
    assert [t.purpose for t in more.tasks].count("search") == 3
    assert resumed.best()["n_confirm"] >= 1          # the best of the longer run is confirmed before it ends


def test_a_run_interrupted_in_its_noise_phase_measures_the_seed_again():
    policy = SearchPolicy(settings(), SEED)
    run = Executor(policy)
    run.step()
    task = policy.next_task()
    run.store(task, {"status": "interrupted"})
    policy.interrupt()
    resumed = SearchPolicy(policy.config, SEED, history=run.history())
    assert resumed.phase == "noise" and resumed.next_task() == Task(SEED_ID, task.seed, "noise")


CAUSALITY = {"status": "rejected", "error": "causality check failed: changing the tokens after position 7 of a row "
                                            "moved the log-probabilities at or before it by 0.81 nats"}
PROTOCOL = {"status": "crash", "error": "the training process broke the harness protocol: a request of 9 MiB"}
DIVERGED = {"status": "rejected", "error": "non-finite val_bpb (inf): the model's loss overflowed"}


def caught_on_confirmation(result: dict):
    """A run whose first child beats the seed and is its best, until its confirmation comes back as result; its
    descendants score best of all. Returns (policy, executor, the child)."""
    policy = SearchPolicy(settings(elites=1, evaluations=6, selection="best"), SEED)
    caught = {}

    def outcome(t):
        if t.individual == SEED_ID:
            return {"status": "ok", "val_bpb": 3.2 + (t.seed % 3) * 0.01}
        first = caught.setdefault("child", t.individual)
        if t.individual == first and t.purpose == "confirm":
            return result
        line, node = [], t.individual          # its first parents, back to the seed
        while policy.parents.get(node):
            node = policy.parents[node][0]
            line.append(node)
        return {"status": "ok", "val_bpb": 3.0 if line == [SEED_ID] else 2.8 if first in line else 2.9}

    run = Executor(policy, outcome)
    while policy.counters.search_done < 1:
        run.step()
    child = caught["child"]
    assert child in policy.population and policy.best()["id"] == child
    run.step()                      # its confirmation: the elite is confirmed before the next child
    assert run.tasks[-1] == Task(child, policy.fresh_seeds[0], "confirm")
    return policy, run, child


@pytest.mark.parametrize("result", [CAUSALITY, PROTOCOL], ids=["causality", "protocol"])
def test_a_member_whose_confirmation_is_rejected_for_cheating_loses_its_place_and_its_rank(result):
    policy, run, child = caught_on_confirmation(result)
    assert child not in policy.population
    assert child not in [m.id for m in policy._members(list(policy.parents))]      # no rank anywhere
    assert policy.best()["id"] != child
    assert policy.disqualified[child] == (f"disqualified: its confirm evaluation on seed {policy.fresh_seeds[0]} "
                                          f"was rejected: {result['error']}")
    run.run()
    assert policy.phase == "finished" and policy.best()["id"] != child and child not in policy.population
    assert [t for t in run.tasks if t.individual == child][-1].purpose == "confirm"   # never run again


def test_an_honest_divergence_on_confirmation_is_a_failure_not_a_disqualification():
    policy, run, child = caught_on_confirmation(DIVERGED)
    assert child in policy.population and not policy.disqualified
    assert policy.best()["id"] == child       # still ranked on its ok evaluation


def test_a_descendant_of_a_disqualified_member_stays_but_is_crowned_only_after_its_own_confirmation():
    policy, run, child = caught_on_confirmation(CAUSALITY)
    descendant = None
    while run.step():
        searched = {t.individual for t in run.tasks if t.purpose == "search"}
        confirmed = {t.individual for t in run.tasks if t.purpose == "confirm"}
        for id in searched - confirmed:
            if policy.tainted_by(id) == child and id in policy.population:
                descendant = id
                assert policy.best()["id"] != descendant      # the best score, but no confirmation of its own yet
    assert descendant is not None, "no descendant of the disqualified member was placed"
    assert policy.tainted_by(descendant) == child and descendant in policy.population
    best = policy.best()
    assert policy.tainted_by(best["id"]) == child and best["n_confirm"] >= 1   # crowned on its own confirmation


def test_a_resumed_run_disqualifies_from_the_stored_evaluations():
    policy, run, child = caught_on_confirmation(CAUSALITY)
    # Stopped before the population was stored again: the stored population still holds the child.
    stale = dataclasses.replace(run.history(), population=[*policy.population, child])
    resumed = SearchPolicy(policy.config, SEED, lookahead=policy.lookahead, history=stale)
    assert resumed.disqualified == policy.disqualified
    assert resumed.population == policy.population and resumed.best() == policy.best()
    assert list(resumed.confirm_queue) == list(policy.confirm_queue)


def test_too_many_unusable_children_in_a_row_give_up():
    policy = SearchPolicy(settings(evaluations=100), SEED, lookahead=100)
    noise_done(policy)
    proposals = policy.proposals()
    verdicts = [policy.child(p, Variation.invalid(p.operator, "no change")) for p in proposals[:MAX_INVALID_IN_A_ROW]]
    assert all(v.status == "invalid" and v.reason == "no change" for v in verdicts)
    assert policy.counters.invalid == MAX_INVALID_IN_A_ROW and policy.proposer.attempts[-1].status == "invalid"
    assert not any(v.give_up for v in verdicts[:-1])
    assert "50 unusable children in a row" in verdicts[-1].give_up


def test_a_second_child_with_a_known_source_is_a_duplicate():
    policy = SearchPolicy(settings(), SEED)
    noise_done(policy)
    first, second, third = policy.proposals()
    variation, _ = vary(first)
    assert policy.child(first, variation).status == "proposed"
    duplicate = policy.child(second, variation)
    assert duplicate.status == "duplicate" and duplicate.reason == f"duplicate of {content_hash(variation.source)}"
    seed_again = policy.child(third, Variation.child("hyper.mutate", SEED, "no change"))
    assert seed_again.status == "duplicate" and seed_again.reason == f"duplicate of {SEED_ID}"
    assert list(policy.ready) == [content_hash(variation.source)]


def test_a_child_the_validator_refuses_is_rejected_and_never_run():
    policy = SearchPolicy(settings(), SEED)
    noise_done(policy)
    proposal = policy.proposals()[0]
    verdict = policy.child(proposal, Variation.child("hyper.mutate", "import os\nos.system('x')\n", "bad"))
    assert verdict.status == "rejected" and verdict.reason
    assert not policy.ready and policy.proposer.attempts[-1].status == "rejected"


def test_with_bounds_the_hyper_operators_are_given_them_and_a_child_outside_is_rejected_whoever_made_it():
    lr = hyperparameters(SEED)["LEARNING_RATE"].value
    bounds = {"LEARNING_RATE": (lr / 2, lr * 2)}
    policy = SearchPolicy(settings(operators={"hyper.sample": 1.0, "hyper.mutate": 1.0}, bounds=bounds), SEED)
    noise_done(policy)
    *proposals, last = policy.proposals()
    assert proposals and all(p.settings["bounds"] == bounds for p in [*proposals, last])
    for proposal in proposals:
        verdict = policy.child(proposal, vary(proposal)[0])
        assert verdict.status == "proposed"
        assert lr / 2 <= hyperparameters(policy.genome(verdict.id).source)["LEARNING_RATE"].value <= lr * 2
    # a child from any operator (an LLM's edit, a merge) that leaves the bounds is refused before it runs
    outside = rewrite(SEED, {"LEARNING_RATE": lr * 3})
    verdict = policy.child(last, Variation.child("llm.mutate", outside, "raise the learning rate"))
    assert verdict.status == "rejected" and "is outside --bounds LEARNING_RATE=" in verdict.reason
    assert content_hash(outside) not in policy.ready


def test_the_llm_operators_are_told_the_bounds_a_child_must_keep():
    lr = hyperparameters(SEED)["LEARNING_RATE"].value
    bounds = {"LEARNING_RATE": (lr / 2, lr * 2), "WEIGHT_DECAY": (0.0, 0.5)}
    policy = SearchPolicy(settings(operators={"llm.mutate": 1.0}, bounds=bounds), SEED, llm=True)
    noise_done(policy)
    proposal = policy.proposals()[0]
    assert proposal.context.bounds == (("LEARNING_RATE", lr / 2, lr * 2), ("WEIGHT_DECAY", 0.0, 0.5))
    unbounded = SearchPolicy(settings(operators={"llm.mutate": 1.0}), SEED, llm=True)
    noise_done(unbounded)
    assert unbounded.proposals()[0].context.bounds == ()


def test_an_llm_family_that_becomes_unavailable_leaves_the_offline_operators():
    policy = SearchPolicy(settings(operators={"llm.mutate": 1.0}), SEED, llm=True, program="be brief")
    noise_done(policy)
    proposal = policy.proposals()[0]
    assert proposal.needs_llm and proposal.context.program == "be brief"
    assert proposal.context.noise_bpb == policy.noise_floor
    verdict = policy.child(proposal, Variation.invalid("llm.mutate", "spend cap reached"), unavailable=True)
    assert verdict.status == "invalid" and verdict.reason == "spend cap reached"
    assert policy.proposer.weights and not any(REGISTRY.get(name).needs_llm for name in policy.proposer.weights)
    assert all(not p.needs_llm for p in policy.proposals())


def test_an_llm_proposal_run_without_a_client_makes_its_family_unavailable():
    policy = SearchPolicy(settings(operators={"llm.mutate": 1.0}), SEED, llm=True)
    noise_done(policy)
    variation, unavailable = vary(policy.proposals()[0])
    assert unavailable and variation.status == "invalid" and "needs an LLM client" in variation.reason


def test_a_crossover_given_one_individual_twice_falls_back_to_its_declared_operator():
    # Right after the noise phase the seed is the whole population, so a two-parent operator would get it twice.
    for operator in ("hyper.crossover", "merge.crossover", "llm.crossover"):
        policy = SearchPolicy(settings(operators={operator: 1.0, "hyper.mutate": 1e-9}), SEED, llm=True)
        noise_done(policy)
        proposals = policy.proposals()
        assert len(proposals) == policy.lookahead
        assert all(p.operator == REGISTRY.get(operator).fallback == "hyper.mutate" for p in proposals)
        assert all(p.parent_ids == (SEED_ID,) and p.ancestor is None and p.context is None for p in proposals)
    alone = SearchPolicy(settings(operators={"merge.crossover": 1.0}), SEED)
    noise_done(alone)
    assert alone.proposals() == []   # its fallback has no weight: nothing to propose yet


def test_a_proposal_carries_an_ancestor_and_an_llm_context_only_for_an_operator_that_needs_them():
    policy = SearchPolicy(settings(evaluations=200, population=6, elites=0), SEED, llm=True, program="be brief")
    run = Executor(policy)
    while len(policy.population) < 3:
        run.step()
    policy.lookahead = 8
    for operator, has_ancestor, has_context in (("hyper.mutate", False, False), ("hyper.crossover", False, False),
                                                ("merge.crossover", True, False), ("llm.mutate", False, True),
                                                ("llm.crossover", True, True)):
        policy.proposer.weights = {operator: 1.0}
        proposals = policy.proposals()
        assert proposals and {p.operator for p in proposals} == {operator}
        for p in proposals:
            assert (p.ancestor is not None) == has_ancestor and (p.context is not None) == has_context
            if has_ancestor:
                assert p.ancestor.id == lowest_common_ancestor(*p.parent_ids, policy.parents)
            if has_context:
                assert p.context.program == "be brief" and len(p.parents) == (2 if p.context.other else 1)
            policy.child(p, Variation.invalid(operator, "not run here"))


def test_without_an_llm_client_only_the_offline_operators_are_used():
    policy = SearchPolicy(settings(operators={"llm.mutate": 1.0, "hyper.mutate": 1.0}), SEED)
    assert policy.proposer.weights == {"hyper.mutate": 1.0}


def test_the_hours_limit_ends_the_search_on_the_policys_clock():
    policy = SearchPolicy(settings(evaluations=None, hours=1.0), SEED)
    run = Executor(policy)
    noise_done(policy)
    run.step()
    assert policy.phase == "search" and policy.counters.search_done == 1
    policy.elapse(3600)
    run.run()
    assert policy.phase == "finished" and policy.counters.search_done == 1


def test_adaptive_steps_grow_after_a_child_beats_its_parent_and_shrink_after_one_that_does_not():
    improving = {"v": 3.0}

    def result(task):     # each search child is better than the last until the flag turns
        if task.purpose != "search":
            return {"status": "ok", "val_bpb": 3.2 + (task.seed % 3) * 0.01}
        improving["v"] += -0.05 if improving.get("better", True) else 0.5
        return {"status": "ok", "val_bpb": improving["v"]}

    policy = SearchPolicy(settings(evaluations=8, adaptive_steps=True, elites=0), SEED)
    run = Executor(policy, result)
    while policy.counters.search_done < 2:
        run.step()
    assert policy.proposer.step == pytest.approx(1.5 ** 2)
    run.propose()
    sigmas = [p.settings["sigma"] for p, _, _ in run.proposed]
    assert sigmas[0] == pytest.approx(0.3) and sigmas[-1] == pytest.approx(0.3 * 1.5 ** 2)
    improving["better"] = False
    while policy.counters.search_done < 4:
        run.step()
    assert policy.proposer.step == pytest.approx(1.5 ** 2 * 1.5 ** -0.5)
    saved = json.loads(json.dumps(policy.state()))
    assert SearchPolicy(policy.config, SEED, history=History(saved)).proposer.step == policy.proposer.step


def test_adaptive_operators_draw_the_operator_whose_children_improve_more_often():
    def result(task):      # hyper.sample's children beat their parents, hyper.mutate's never do
        if task.purpose != "search":
            return {"status": "ok", "val_bpb": 3.2 + (task.seed % 3) * 0.01}
        genome = policy.genome(task.individual)
        parent = statistics.fmean(v for _, v, _ in policy.results[genome.parents[0]])
        return {"status": "ok", "val_bpb": parent + (-0.01 if genome.operator == "hyper.sample" else 0.01)}

    ops = {"hyper.mutate": 1.0, "hyper.sample": 1.0}
    policy = SearchPolicy(settings(evaluations=30, adaptive_operators=True, elites=0, operators=ops), SEED)
    Executor(policy, result).run()
    wins_sample, tried_sample = policy.proposer.credit["hyper.sample"]
    wins_mutate, tried_mutate = policy.proposer.credit["hyper.mutate"]
    assert wins_sample == tried_sample > 0 and wins_mutate == 0 and tried_mutate > 0
    weights = policy.proposer.operator_weights()
    assert weights["hyper.sample"] > 5 * weights["hyper.mutate"] > 0       # favoured, the other never shut out
    assert tried_sample > tried_mutate
    saved = json.loads(json.dumps(policy.state()))
    assert SearchPolicy(policy.config, SEED, history=History(saved)).proposer.operator_weights() == weights
    fixed = SearchPolicy(dataclasses.replace(policy.config, adaptive_operators=False), SEED, history=History(saved))
    assert fixed.proposer.operator_weights() == ops                                  # off: the configured weights


def test_without_adaptive_steps_proposals_carry_no_settings():
    policy = SearchPolicy(settings(), SEED)
    noise_done(policy)
    assert all(p.settings == {} for p in policy.proposals())


def test_final_confirmation_confirms_nothing_during_the_search_and_the_best_before_the_end():
    policy = SearchPolicy(settings(evaluations=6, confirm="final", elites=2), SEED)
    run = Executor(policy)
    run.run()
    purposes = [t.purpose for t in run.tasks]
    last_search = len(purposes) - 1 - purposes[::-1].index("search")
    assert "confirm" not in purposes[:last_search] and purposes.count("search") == 6
    confirmed = [t for t in run.tasks if t.purpose == "confirm"]
    assert confirmed and {t.individual for t in confirmed} == {policy.best()["id"]}
    assert policy.best()["n_confirm"] >= 1


def test_close_confirmation_skips_an_elite_with_a_clear_lead_and_confirms_a_close_one():
    values = {}

    def result(task):
        if task.individual == SEED_ID:
            return {"status": "ok", "val_bpb": 3.2 + (task.seed % 2) * 0.01}   # noise floor about 0.007
        return {"status": "ok", "val_bpb": values.setdefault(task.individual, 3.0 if not values else 3.005)}

    policy = SearchPolicy(settings(evaluations=3, elites=1, confirm="close"), SEED)
    run = Executor(policy, result)
    while policy.counters.search_done < 1:
        run.step()
    assert not policy.confirm_queue                    # 0.2 ahead of the seed: no confirmation yet
    while policy.counters.search_done < 2:
        run.step()
    assert [t.purpose for t in policy.confirm_queue] == ["confirm"]   # a rival within 2 noise floors
    run.run()
    assert policy.best()["n_confirm"] == 1             # the best is still confirmed before the run ends


def test_islands_take_proposals_in_turn_and_select_and_replace_within_themselves():
    policy = SearchPolicy(settings(population=6, islands=3, selection="best", evaluations=30, elites=0), SEED)
    run = Executor(policy)
    while policy.counters.search_done < 30:
        run.step()
        members = policy.islands.members
        assert all(len(island) <= 2 for island in members)                  # 6 places shared by 3 islands
        assert policy.population == list(dict.fromkeys(i for island in members for i in island))
    assert [p.island for p, _, _ in run.proposed[:7]] == [0, 1, 2, 0, 1, 2, 0]
    checked = 0
    for (proposal, population, _), islands in zip(run.proposed, run.islands_then):
        if not population:   # proposed while the seed was measured
            continue
        own = islands[proposal.island]
        assert set(proposal.parent_ids) <= set(own)                         # parents from the child's island
        assert proposal.parent_ids[0] == policy._ranked(own)[0]             # best selection: that island's best
        checked += 1
    assert checked >= 20
    assert len({tuple(sorted(island)) for island in policy.islands.members}) > 1   # the islands hold different lines


def test_every_few_children_each_islands_best_joins_the_next_island():
    from evo.search.islands import MIGRATE_EVERY, Islands
    score = {"seed": 5.0}
    rank = lambda ids: sorted((i for i in ids if i in score), key=lambda i: (score[i], i))   # noqa: E731
    islands = Islands.of(2, 6)
    islands.start("seed")
    for n in range(MIGRATE_EVERY * 2 - 1):          # one short of a migration
        child = f"c{n}"
        score[child] = 1.0 + n / 10 if n % 2 == 0 else 3.0 + n / 10   # island 0's children are the better ones
        islands.assign(child, n % 2)
        assert islands.place(child, rank) == (child in islands.members[n % 2])
    island_0 = set(islands.members[0])
    assert not island_0 & set(islands.members[1])  # until now the two lines stay apart
    score["last"] = 4.5
    islands.assign("last", 1)
    islands.place("last", rank)                    # the migration comes with this child
    best_0 = rank(list(island_0))[0]
    assert best_0 == "c0" and "c0" in islands.members[1]
    assert rank(islands.members[1])[0] == "c0" and len(islands.members[1]) == 3
    assert rank(islands.members[0]) == ["c0", "c2", "c4"]   # island 1's best (c1) came round too, and lost its place


def test_a_run_with_islands_resumed_from_its_saved_state_makes_the_same_decisions():
    config = settings(population=8, islands=2, evaluations=20, operators={"hyper.mutate": 1.0, "hyper.crossover": 1.0})
    first = SearchPolicy(config, SEED)
    run = Executor(first)
    while first.counters.search_done < 9 or first.confirm_queue:
        run.step()
    run.propose()
    assert first.ready and first.islands.home                     # children proposed for an island, not run yet
    second = SearchPolicy(first.config, SEED, lookahead=first.lookahead, history=run.history())
    assert second.islands.members == first.islands.members and second.islands.home == first.islands.home
    assert second.population == first.population
    side_by_side(first, second, 8, lambda p: vary(p)[0])
    assert second.state() == first.state()


def test_a_disqualified_member_leaves_every_island_it_was_copied_to():
    from evo.search.islands import Islands

    islands = Islands(count=2, size=2, members=[["a", "b"], ["b", "c"]], home={"d": 1})
    islands.remove("b")
    assert islands.members == [["a"], ["c"]] and islands.population() == ["a", "c"]


def test_the_run_status_counts_are_the_policys_counters_and_its_phase_is_stored_as_its_word():
    policy = SearchPolicy(settings(), SEED)
    Executor(policy).run()
    counts = EvaluationCounts.of(policy.counters, running=2)
    c = policy.counters
    assert (counts.search_done, counts.confirm_done, counts.noise_done, counts.failed, counts.invalid, counts.running) \
        == (c.search_done, c.confirm_done, c.noise_done, c.failed, c.invalid, 2) and counts.search_done == 6
    assert policy.phase is Phase.FINISHED and json.loads(json.dumps(policy.state()))["phase"] == "finished"
    status = RunStatus.build(run_id="r", phase=policy.phase, active_seconds=1.0, busy_seconds=1.0, workers=1,
                             best=policy.best(), evaluations=counts, target_evaluations=6, noise_floor=None,
                             population=len(policy.population), individuals=len(policy.parents), llm_cost_usd=0.0,
                             llm_calls=0)
    assert status.status == "finished" and json.loads(json.dumps(status.as_dict()))["phase"] == "finished"
