"""The registry: names, families, arity, needs and fallbacks, weights, and the offline fallback."""

import pickle
import random

import pytest

from genome import Genome
from operators import (
    REGISTRY,
    LLMContext,
    OperatorContext,
    Registry,
    get,
    parse_weights,
)
from operators.errors import OperatorConfigError, OperatorUnavailable
from operators.hyper import mutate
from operators.merge import crossover as merge_crossover
from operators.variation import Variation
from tests.support.genomes import seed_source

SEED = Genome.seed(seed_source())


def told(a, b, rng, *, ancestor=None, context=None, client=None, **settings):
    """A two-parent operator that reports, as its description, which keyword arguments it was given."""
    given = {"ancestor": ancestor, "context": context, "client": client, **settings}
    return Variation.child("test.told", a.source, ",".join(sorted(k for k, v in given.items() if v is not None)))


def test_the_six_operators_are_registered_with_their_arity_needs_and_fallback():
    assert {n: (get(n).arity, get(n).needs, get(n).fallback, get(n).needs_llm) for n in REGISTRY.names()} == {
        "hyper.mutate": (1, (), None, False),
        "hyper.sample": (1, (), None, False),
        "hyper.crossover": (2, (), "hyper.mutate", False),
        "merge.crossover": (2, ("ancestor",), "hyper.mutate", False),
        "llm.mutate": (1, ("client", "context"), None, True),
        "llm.crossover": (2, ("client", "context", "ancestor"), "hyper.mutate", True)}
    assert REGISTRY.families() == {"hyper": ["hyper.mutate", "hyper.sample", "hyper.crossover"],
                                   "merge": ["merge.crossover"], "llm": ["llm.mutate", "llm.crossover"]}


def test_what_an_operator_accepts_and_its_step_size_are_declared_at_registration():
    assert {n: (get(n).accepts, get(n).step, get(n).base_step) for n in REGISTRY.names()} == {
        "hyper.mutate": (("bounds",), "sigma", 0.3),
        "hyper.sample": (("bounds",), None, None),
        "hyper.crossover": (("bounds",), None, None),
        "merge.crossover": ((), None, None),
        "llm.mutate": ((), None, None),
        "llm.crossover": ((), None, None)}
    registry = Registry()
    registry.register("test.bound", mutate, arity=1, step="sigma", sigma=0.1)
    assert registry.get("test.bound").base_step == 0.1      # a bound setting is the step it starts from


def test_an_operator_is_given_only_what_it_declared_from_the_context():
    registry = Registry()
    registry.register("test.nothing", told, arity=2)
    registry.register("test.ancestor", told, arity=2, needs=("ancestor",))
    registry.register("test.llm", told, arity=2, needs=("client", "context", "ancestor"), rate=0.5)
    given = OperatorContext(client=object(), context=LLMContext(program="p"), ancestor=SEED)
    parents = [SEED, SEED]
    assert registry.get("test.nothing")(parents, random.Random(0), given).description == ""
    assert registry.get("test.ancestor")(parents, random.Random(0), given).description == "ancestor"
    assert registry.get("test.llm")(parents, random.Random(0), given).description == "ancestor,client,context,rate"
    assert registry.get("test.llm").arguments(given) == {"client": given.client, "context": given.context,
                                                         "ancestor": SEED}
    # Call-time keyword arguments override both the bound settings and what the context holds.
    assert registry.get("test.ancestor")(parents, random.Random(0), given, ancestor=None, extra=1).description \
        == "extra"


def test_an_llm_operator_without_a_client_is_unavailable_before_it_runs():
    with pytest.raises(OperatorUnavailable, match="llm.mutate needs an LLM client"):
        get("llm.mutate")([SEED], random.Random(0), OperatorContext(context=LLMContext(program="p")))
    with pytest.raises(OperatorUnavailable, match="llm.crossover needs an LLM client"):
        get("llm.crossover")([SEED, SEED], random.Random(0))


@pytest.mark.parametrize("register, words", [
    (lambda r: r.register("test.x", told, arity=2, needs=("budget",)), "got budget"),
    (lambda r: r.register("test.x", mutate, arity=1, needs=("ancestor",)), "only a two-parent operator"),
    (lambda r: r.register("test.x", mutate, arity=1, needs=("client",)), "takes no client argument"),
    (lambda r: r.register("test.x", told, arity=2, needs=("ancestor",), ancestor=SEED), "not a setting"),
    (lambda r: r.register("test.x", told, arity=2, fallback="hyper.mutate"), "registered before it"),
    (lambda r: r.register("test.x", told, arity=2, fallback="test.y"), "registered before it"),
    (lambda r: r.register("test.x", mutate, arity=1, fallback="test.one"), "only a two-parent operator"),
    (lambda r: r.register("test.x", mutate, arity=1, accepts=("budget",)), "accepts some of bounds; got budget"),
    (lambda r: r.register("test.x", merge_crossover, arity=2, accepts=("bounds",)), "takes no bounds argument"),
    (lambda r: r.register("test.x", mutate, arity=1, step="bounds"), "must be a numeric argument"),
    (lambda r: r.register("test.x", mutate, arity=1, step="rate"), "must be a numeric argument"),
])
def test_a_registration_that_cannot_be_honoured_fails_at_once(register, words):
    registry = Registry()
    registry.register("test.one", mutate, arity=1)
    registry.register("test.y", told, arity=2)
    with pytest.raises(ValueError, match=words):
        register(registry)


def test_family_weights_are_shared_among_members_and_members_can_be_named_alone():
    assert parse_weights("hyper=3,llm=1") == {"hyper.mutate": 1.0, "hyper.sample": 1.0, "hyper.crossover": 1.0,
                                              "llm.mutate": 0.5, "llm.crossover": 0.5}
    third = pytest.approx(1 / 3)
    assert parse_weights("hyper,merge,llm") == {"hyper.mutate": third, "hyper.sample": third,
                                                "hyper.crossover": third, "merge.crossover": 1.0, "llm.mutate": 0.5,
                                                "llm.crossover": 0.5}
    assert parse_weights("hyper, hyper.mutate=2") == {"hyper.mutate": 2.0, "hyper.sample": third,
                                                      "hyper.crossover": third}
    assert parse_weights("llm.mutate=0, hyper.mutate") == {"hyper.mutate": 1.0}


@pytest.mark.parametrize("spec, words", [
    ("hyper,genetic", "unknown operator 'genetic' in --operators; known: hyper, hyper.mutate, hyper.sample, "
                      "hyper.crossover, "
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
    assert REGISTRY.offline(parse_weights("hyper=3,llm=1")) == {"hyper.mutate": 1.0, "hyper.sample": 1.0,
                                                                "hyper.crossover": 1.0}
    assert REGISTRY.offline(parse_weights("llm")) == {"hyper.mutate": 1.0, "hyper.sample": 1.0,
                                                      "hyper.crossover": 1.0, "merge.crossover": 1.0}


def test_operators_are_called_through_the_registry_with_bound_settings_and_pickle():
    registry = Registry()
    registry.register("hyper.mutate", mutate, arity=1, max_changes=1)
    spec = registry.get("hyper.mutate")
    parent = Genome.seed(seed_source())
    assert all(";" not in spec([parent], random.Random(i)).description for i in range(30))
    with pytest.raises(ValueError, match="1 parent"):
        spec([parent, parent], random.Random(0))
    assert pickle.loads(pickle.dumps(spec)).function is mutate
    assert pickle.loads(pickle.dumps(get("llm.crossover"))) == get("llm.crossover")
    with pytest.raises(OperatorConfigError, match="unknown operator"):
        registry.get("merge.crossover")


def test_pick_follows_the_weights():
    rng = random.Random(0)
    weights = {"hyper.mutate": 9.0, "merge.crossover": 1.0}
    picks = [REGISTRY.pick(weights, rng).name for _ in range(2000)]
    assert 0.85 < picks.count("hyper.mutate") / len(picks) < 0.95
