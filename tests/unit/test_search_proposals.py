"""The Proposer on its own (evo.search.proposals): which operator, told what, and the verdict on each child."""

import random

from evo.config import RunConfig
from evo.search.proposals import MAX_INVALID_IN_A_ROW, STEP_UP, Proposer, Verdict, vary
from genome import Genome, content_hash, hyperparameters, rewrite
from operators.registry import REGISTRY
from operators.variation import Variation
from tests.support.genomes import tiny_source

SEED = Genome.seed(tiny_source())


def proposer(**kw) -> Proposer:
    config = RunConfig(**{"population": 4, "tournament_size": 2, "operators": {"hyper.mutate": 1.0}, **kw})
    genomes, parents = {SEED.id: SEED}, {SEED.id: ()}
    made = Proposer(config, llm=False, program="", genomes=genomes, parents=parents, mean=lambda id: None)
    made.note(SEED.id, SEED.id)
    return made


def test_the_operators_declared_settings_reach_the_proposal():
    bounds = {"LEARNING_RATE": (1e-4, 1e-1)}
    p = proposer(bounds=bounds, adaptive_steps=True)
    p.step = 2.0
    mutate = p.proposal(REGISTRY.get("hyper.mutate"), [SEED], 0, random.Random(0), None)
    assert mutate.settings == {"bounds": bounds, "sigma": 0.3 * 2.0}
    fell_back = p.proposal(REGISTRY.get("merge.crossover"), [SEED, SEED], 0, random.Random(0), None)
    assert fell_back.operator == "hyper.mutate" and fell_back.parents == (SEED,)     # one parent twice
    merge_only = proposer(operators={"merge.crossover": 1.0}, bounds=bounds)
    assert merge_only.proposal(REGISTRY.get("merge.crossover"), [SEED, SEED], 0, random.Random(0), None) is None
    made = merge_only.proposal(REGISTRY.get("hyper.mutate"), [SEED], 0, random.Random(0), None)
    assert made.settings == {"bounds": bounds}          # no step multiplier without adaptive_steps


def test_a_proposal_draws_its_own_generator_from_the_run_one():
    p = proposer()
    rng, same = random.Random(5), random.Random(5)
    made = p.proposal(REGISTRY.get("hyper.mutate"), [SEED], 0, rng, None)
    assert made.rng.random() == random.Random(same.random()).random() and rng.random() == same.random()


def test_verdicts_invalid_duplicate_rejected_proposed():
    p = proposer(bounds={"LEARNING_RATE": (1e-4, 1e-1)})
    proposal = p.proposal(REGISTRY.get("hyper.mutate"), [SEED], 0, random.Random(0), None)
    assert p.verdict(proposal, Variation.invalid("hyper.mutate", "no change")).status == "invalid"
    assert p.verdict(proposal, Variation.child("hyper.mutate", SEED.source, "same")).reason == f"duplicate of {SEED.id}"
    name = "LEARNING_RATE"
    outside = rewrite(SEED.source, {name: 0.5})
    rejected = p.verdict(proposal, Variation.child("hyper.mutate", outside, "too big"))
    assert rejected.status == "rejected" and "outside --bounds" in rejected.reason
    assert p.attempts[-1].status == "rejected"
    variation, unavailable = vary(proposal)
    assert not unavailable and hyperparameters(variation.source)[name].value <= 1e-1
    assert p.verdict(proposal, variation) == Verdict("proposed", content_hash(variation.source))
    assert p.invalid_in_a_row == 0


def test_too_many_unusable_children_in_a_row_give_up():
    p = proposer()
    proposal = p.proposal(REGISTRY.get("hyper.mutate"), [SEED], 0, random.Random(0), None)
    verdicts = [p.verdict(proposal, Variation.invalid("hyper.mutate", "no change"))
                for _ in range(MAX_INVALID_IN_A_ROW)]
    assert [v.give_up is not None for v in verdicts] == [False] * (MAX_INVALID_IN_A_ROW - 1) + [True]


def test_an_evaluated_child_moves_its_operators_credit_and_the_step_of_an_operator_with_one():
    p = proposer(adaptive_steps=True)
    child = Genome(SEED.source, (SEED.id,), "hyper.mutate", "a change")
    p.evaluated(child, -0.01, "kept")
    p.evaluated(Genome(SEED.source, (SEED.id,), "hyper.sample", "another"), -0.01, "kept")
    assert p.step == STEP_UP                              # hyper.sample has no step size: only hyper.mutate moved it
    p.evaluated(child, None, "crash", "x" * 500)
    assert p.credit == {"hyper.mutate": [1, 2], "hyper.sample": [1, 1]}
    assert p.attempts[-1].status == "crash" and len(p.attempts[-1].reason) == 200
