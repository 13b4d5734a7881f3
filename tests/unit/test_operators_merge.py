"""merge.crossover: clean three-way merges make a child; conflicts and the rest make none, and say why."""

import random

from genome import Genome, values
from operators import OperatorContext, get
from tests.support.genomes import seed_source, with_hyperparameters

SEED = Genome.seed(seed_source())


def _child(**hyper) -> Genome:
    return Genome(with_hyperparameters(SEED.source, **hyper), (SEED.id,), "hyper.mutate")


def test_a_clean_merge_keeps_both_parents_changes():
    a = _child(LEARNING_RATE="1e-3")
    b = Genome(with_hyperparameters(SEED.source, DEPTH="3") + "print('trained')\n", (SEED.id,), "llm.mutate")
    variation = get("merge.crossover")([a, b], random.Random(0), OperatorContext(ancestor=SEED))
    assert variation.ok, variation.reason
    merged = values(variation.source)
    assert merged["LEARNING_RATE"] == 1e-3 and merged["DEPTH"] == 3
    assert variation.source.endswith("print('trained')\n")
    assert variation.description.startswith(f"merge of {a.short_id}")
    assert "LEARNING_RATE" in variation.description and "DEPTH" in variation.description


def test_a_conflict_yields_no_child_and_says_where():
    a, b = _child(LEARNING_RATE="1e-3"), _child(LEARNING_RATE="5e-3")
    variation = get("merge.crossover")([a, b], random.Random(0), OperatorContext(ancestor=SEED))
    assert variation.status == "invalid" and variation.source is None
    assert "conflict" in variation.reason and "LEARNING_RATE" in variation.reason


def test_without_a_common_ancestor_there_is_nothing_to_merge():
    variation = get("merge.crossover")([_child(DEPTH="3"), _child(WIDTH="256")], random.Random(0), OperatorContext())
    assert variation.status == "invalid" and "common ancestor" in variation.reason


def test_a_merge_that_equals_a_parent_is_not_a_new_child():
    a = _child(DEPTH="3", WIDTH="256")
    b = _child(DEPTH="3")
    variation = get("merge.crossover")([a, b], random.Random(0), OperatorContext(ancestor=SEED))
    assert variation.status == "invalid" and a.short_id in variation.reason
