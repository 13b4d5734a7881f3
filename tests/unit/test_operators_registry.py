"""The registry: names, families, arity, weights, and the offline fallback."""

import pickle
import random

import pytest

from genome import Genome
from operators import REGISTRY, Registry, get, parse_weights
from operators.errors import OperatorConfigError
from operators.hyper import mutate
from tests.support.genomes import seed_source


def test_the_five_operators_are_registered_with_their_arity():
    assert {n: (get(n).arity, get(n).needs_llm) for n in REGISTRY.names()} == {
        "hyper.mutate": (1, False), "hyper.crossover": (2, False), "merge.crossover": (2, False),
        "llm.mutate": (1, True), "llm.crossover": (2, True)}
    assert REGISTRY.families() == {"hyper": ["hyper.mutate", "hyper.crossover"], "merge": ["merge.crossover"],
                                   "llm": ["llm.mutate", "llm.crossover"]}


def test_family_weights_are_shared_among_members_and_members_can_be_named_alone():
    assert parse_weights("hyper=3,llm=1") == {"hyper.mutate": 1.5, "hyper.crossover": 1.5, "llm.mutate": 0.5,
                                              "llm.crossover": 0.5}
    assert parse_weights("hyper,merge,llm") == {"hyper.mutate": 0.5, "hyper.crossover": 0.5,
                                                "merge.crossover": 1.0, "llm.mutate": 0.5, "llm.crossover": 0.5}
    assert parse_weights("hyper, hyper.mutate=2") == {"hyper.mutate": 2.0, "hyper.crossover": 0.5}
    assert parse_weights("llm.mutate=0, hyper.mutate") == {"hyper.mutate": 1.0}


@pytest.mark.parametrize("spec, words", [
    ("hyper,genetic", "unknown operator 'genetic' in --operators; known: hyper, hyper.mutate, hyper.crossover, "
                      "merge, merge.crossover, llm, llm.mutate, llm.crossover"),
    ("hyper=x", "must be a number"),
    ("hyper=-1", "must be >= 0"),
    ("hyper,hyper", "twice"),
    ("hyper=0", "weight 0"),
    (" , ", "names no operator"),
])
def test_a_bad_operator_spec_is_one_config_error_line(spec, words):
    with pytest.raises(OperatorConfigError) as e:
        parse_weights(spec)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_without_the_llm_the_offline_operators_carry_the_run():
    assert REGISTRY.offline(parse_weights("hyper=3,llm=1")) == {"hyper.mutate": 1.5, "hyper.crossover": 1.5}
    assert REGISTRY.offline(parse_weights("llm")) == {"hyper.mutate": 1.0, "hyper.crossover": 1.0,
                                                      "merge.crossover": 1.0}


def test_operators_are_called_through_the_registry_with_bound_settings_and_pickle():
    registry = Registry()
    registry.register("hyper.mutate", mutate, arity=1, max_changes=1)
    spec = registry.get("hyper.mutate")
    parent = Genome.seed(seed_source())
    assert all(";" not in spec([parent], random.Random(i)).description for i in range(30))
    with pytest.raises(ValueError, match="1 parent"):
        spec([parent, parent], random.Random(0))
    assert pickle.loads(pickle.dumps(spec)).function is mutate
    with pytest.raises(OperatorConfigError, match="unknown operator"):
        registry.get("merge.crossover")


def test_pick_follows_the_weights():
    rng = random.Random(0)
    weights = {"hyper.mutate": 9.0, "merge.crossover": 1.0}
    picks = [REGISTRY.pick(weights, rng).name for _ in range(2000)]
    assert 0.85 < picks.count("hyper.mutate") / len(picks) < 0.95
