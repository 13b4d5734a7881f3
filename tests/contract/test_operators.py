"""The contract every registered operator keeps (operators/registry.py REGISTRY), run against each of them:

- deterministic given its rng: the same seed and the same parents give the same variation;
- a variation: an ok child whose source differs from every parent's, or, where no change is possible, its declared
  no-change outcome (status `invalid` with a reason and no source), never a copy of a parent;
- bounds: an operator that accepts the run's bounds keeps every bounded constant of every child within them.

The LLM operators talk through the real `anthropic` client to a local server speaking the Messages API
(tests/support/messages_server.py), answering the same scripted replies on every call.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from genome import Genome, hyperparameters, values
from operators import LLMClient, LLMContext, LLMSettings, OperatorContext
from operators.registry import REGISTRY
from tests.support.genomes import seed_source, with_hyperparameters
from tests.support.messages_server import MessagesServer, message

SEED = Genome.seed(seed_source())
SEEDS = range(6)


def _child(**hyper: str) -> Genome:
    return Genome(with_hyperparameters(SEED.source, **hyper), (SEED.id,), "hyper.mutate")


def _line(source: str, name: str) -> str:
    return next(line for line in source.split("\n") if line.startswith(f"{name} ="))


def edit(source: str, name: str, text: str) -> str:
    """An LLM answer: a hypothesis and one SEARCH/REPLACE block setting hyperparameter name's literal to text."""
    line = _line(source, name)
    new = line.replace(hyperparameters(source)[name].text, text, 1)
    return f"Hypothesis: {name} {text} trains better.\n\n<<<<<<< SEARCH\n{line}\n=======\n{new}\n>>>>>>> REPLACE\n"


def unchanged(source: str, name: str) -> str:
    """An LLM answer whose one edit replaces a line with itself: the parent, unchanged."""
    line = _line(source, name)
    return f"Hypothesis: keep {name}.\n\n<<<<<<< SEARCH\n{line}\n=======\n{line}\n>>>>>>> REPLACE\n"


@dataclass
class Case:
    """Parents for one operator, what it is given besides them, and the LLM's scripted answers (if it asks)."""

    parents: tuple[Genome, ...]
    ancestor: Genome | None = None
    replies: tuple[str, ...] = ()
    settings: dict = field(default_factory=dict)


A = _child(LEARNING_RATE="1e-3")
B = _child(DEPTH=str(values(SEED.source)["DEPTH"] + 1))

# Parents from which each operator can make a child.
CHANGING = {
    "hyper.mutate": Case((SEED,)),
    "hyper.sample": Case((SEED,)),
    "hyper.crossover": Case((A, B)),
    "merge.crossover": Case((A, B), ancestor=SEED),
    "llm.mutate": Case((SEED,), replies=(edit(SEED.source, "LEARNING_RATE", "1e-3"),)),
    "llm.crossover": Case((A, B), ancestor=SEED, replies=(edit(A.source, "DEPTH", str(values(B.source)["DEPTH"])),)),
}

NO_HYPERPARAMETERS = Genome.seed("import torch\nprint(torch.ones(1))\n")

# Parents (and answers) from which no change is possible: each operator must say so, not hand back a parent.
STILL = {
    "hyper.mutate": Case((NO_HYPERPARAMETERS,)),
    "hyper.sample": Case((NO_HYPERPARAMETERS,)),
    "hyper.crossover": Case((A, Genome(A.source, (SEED.id,), "llm.mutate"))),   # the same values
    "merge.crossover": Case((A, _child(LEARNING_RATE="1e-3", DEPTH=str(values(B.source)["DEPTH"]))),
                            ancestor=A),    # the second holds all of the first's changes: the merge is the second
    # the answer leaves the parent as it is
    "llm.mutate": Case((SEED,), replies=(unchanged(SEED.source, "DEPTH"),)),
    "llm.crossover": Case((A, B), ancestor=SEED, replies=(unchanged(A.source, "DEPTH"),)),
}


# The operators that take the run's --bounds (the hyper family).
BOUNDED = [name for name in REGISTRY.names() if "bounds" in REGISTRY.get(name).accepts]


def test_every_registered_operator_has_its_cases():
    """A newly registered operator must be added here, so that the contract covers it."""
    assert set(REGISTRY.names()) == set(CHANGING) == set(STILL)
    assert {"hyper.mutate", "hyper.sample", "hyper.crossover"} <= set(BOUNDED)


@pytest.fixture
def server():
    with MessagesServer() as s:
        yield s


@pytest.fixture(params=REGISTRY.names())
def spec(request):
    return REGISTRY.get(request.param)


def run(spec, case: Case, seed: int, server: MessagesServer, **settings):
    """The operator on the case's parents with a fresh Random(seed), the LLM answering the case's replies."""
    client = None
    if spec.needs_llm:
        server.script(*(message(text) for text in case.replies))
        client = LLMClient(LLMSettings(api_key="test-key", base_url=server.url, model="claude-sonnet-test",
                                       timeout_s=5.0, max_retries=0))
    given = OperatorContext(client=client, context=LLMContext(program="Lower val_bpb."), ancestor=case.ancestor)
    before = len(server.requests)
    variation = spec(list(case.parents), random.Random(seed), given, **{**case.settings, **settings})
    if spec.needs_llm:
        assert server.unused == 0, f"{spec.name} asked the LLM fewer times than the case scripted"
    return variation, server.requests[before:]


def outcome(variation) -> tuple:
    return variation.operator, variation.status, variation.source, variation.description, variation.reason


def test_the_same_seed_and_parents_give_the_same_variation(spec, server):
    for case in (CHANGING[spec.name], STILL[spec.name]):
        for seed in SEEDS[:3]:
            first, asked = run(spec, case, seed, server)
            again, asked_again = run(spec, case, seed, server)
            assert outcome(again) == outcome(first), (spec.name, seed)
            assert asked_again == asked   # an LLM operator sends the same requests, too


def test_a_variation_differs_from_every_parent(spec, server):
    case = CHANGING[spec.name]
    for seed in SEEDS:
        variation, _ = run(spec, case, seed, server)
        assert variation.operator == spec.name
        assert variation.ok, (spec.name, seed, variation.reason)
        assert variation.source not in [p.source for p in case.parents], (spec.name, seed)
        assert variation.description


def test_where_no_change_is_possible_the_operator_says_so(spec, server):
    case = STILL[spec.name]
    for seed in SEEDS:
        variation, _ = run(spec, case, seed, server)
        assert variation.operator == spec.name
        assert variation.status == "invalid" and variation.source is None and variation.reason, (spec.name, seed)


def _bounds() -> dict[str, tuple[float, float]]:
    """Tight bounds around the seed's own values, on constants of several kinds."""
    seed = values(SEED.source)
    return {"LEARNING_RATE": (round(seed["LEARNING_RATE"] * 0.8, 6), round(seed["LEARNING_RATE"] * 1.25, 6)),
            "DEPTH": (seed["DEPTH"], seed["DEPTH"] + 1), "WIDTH": (seed["WIDTH"], seed["WIDTH"]),
            "BATCH_SIZE": (seed["BATCH_SIZE"] // 2, seed["BATCH_SIZE"]),
            "ADAM_BETA2": (seed["ADAM_BETA2"] - 0.01, min(0.999, seed["ADAM_BETA2"] + 0.01)),
            "WARMUP_FRACTION": (0.0, max(0.05, seed["WARMUP_FRACTION"]))}


@pytest.mark.parametrize("name", BOUNDED)
def test_an_operator_that_accepts_bounds_keeps_every_constant_within_them(name, server):
    spec = REGISTRY.get(name)
    bounds = _bounds()
    seed_values = values(SEED.source)
    assert all(low <= seed_values[n] <= high for n, (low, high) in bounds.items())  # the parents keep them
    case = CHANGING[spec.name]
    if spec.arity == 2:
        # the second parent's bounded constants lie outside the bounds, so none of them may be taken; its MLP_RATIO
        # is not bounded, so a child is still possible
        case = Case((SEED, _child(LEARNING_RATE="0.5", DEPTH=str(seed_values["DEPTH"] + 3),
                                  WIDTH=str(seed_values["WIDTH"] * 4), ADAM_BETA2="0.5",
                                  MLP_RATIO=str(seed_values["MLP_RATIO"] + 1))))
    made = 0
    for seed in SEEDS:
        variation, _ = run(spec, case, seed, server, bounds=bounds)
        if not variation.ok:
            continue
        made += 1
        child = values(variation.source)
        for name, (low, high) in bounds.items():
            assert low <= child[name] <= high, (spec.name, seed, name, child[name], (low, high))
    assert made == len(SEEDS), f"{spec.name} made a child for {made} of {len(SEEDS)} seeds within the bounds"
