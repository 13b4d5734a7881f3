"""hyper.mutate, hyper.sample and hyper.crossover on the real seed train.py (re-read each run: it may be retuned)."""

import random
import re

from genome import Genome, hyperparameters, infer_rules, validate, values
from operators import get
from operators.hyper import crossover, mutate, sample
from tests.support.genomes import seed_source, with_hyperparameters

SEED = seed_source()
PARENT = Genome.seed(SEED)


def _known_constraints(v: dict, parent: dict) -> list[str]:
    """The constraints the issue names, checked directly (not through genome.constraints)."""
    broken = []
    for name in ("DEPTH", "WIDTH", "N_HEADS", "MLP_RATIO", "BATCH_SIZE"):
        if name in v and not (isinstance(v[name], int) and v[name] >= 1):
            broken.append(f"{name} = {v[name]}")
    if "WIDTH" in v and "N_HEADS" in v:
        if v["WIDTH"] % v["N_HEADS"] or (v["WIDTH"] // v["N_HEADS"]) % 2:
            broken.append(f"WIDTH {v['WIDTH']} / N_HEADS {v['N_HEADS']}")
    for name, value in v.items():
        if name.endswith("_FRACTION") and not 0 <= value <= 1:
            broken.append(f"{name} = {value}")
        if name.startswith("ADAM_BETA") and not 0 < value < 1:
            broken.append(f"{name} = {value}")
        if name in ("GRAD_CLIP", "LOGIT_SOFTCAP") and value < 0:
            broken.append(f"{name} = {value}")
        if isinstance(parent[name], float) and parent[name] > 0 and not value > 0:
            broken.append(f"{name} = {value} (was positive)")
        if type(value) is not type(parent[name]):
            broken.append(f"{name} changed type")
    if "WARMUP_FRACTION" in v and "WARMDOWN_FRACTION" in v and v["WARMUP_FRACTION"] + v["WARMDOWN_FRACTION"] > 1:
        broken.append("WARMUP_FRACTION + WARMDOWN_FRACTION > 1")
    return broken


def test_a_thousand_mutations_of_the_seed_parse_keep_every_constraint_and_differ_from_it():
    rng = random.Random(0)
    parent_values = values(SEED)
    rules = infer_rules(SEED)
    hyper_lines = {h.line - 1 for h in hyperparameters(SEED).values()}
    seed_lines = SEED.split("\n")
    children, moved = set(), set()
    for i in range(1000):
        variation = mutate(PARENT, rng)
        assert variation.ok, variation.reason
        source = variation.source
        child = values(source)
        assert child.keys() == parent_values.keys()  # the view of a source that does not parse is empty
        assert child != parent_values
        assert rules.violations(child) == []
        assert _known_constraints(child, parent_values) == []
        lines = source.split("\n")
        assert [ln for j, ln in enumerate(lines) if j not in hyper_lines] == \
               [ln for j, ln in enumerate(seed_lines) if j not in hyper_lines]
        if i % 100 == 0:
            assert validate(source).ok
        children.add(source)
        moved |= {n for n in child if child[n] != parent_values[n]}
    assert len(children) > 600  # real variety (sizes have few neighbours, so some children repeat)
    assert moved == set(rules.domains)  # every hyperparameter that may change did, somewhere


def test_mutation_is_reproducible_from_the_random_state():
    first = [mutate(PARENT, random.Random(7)).source for _ in range(3)]
    assert len(set(first)) == 1
    assert mutate(PARENT, random.Random(8)).source != first[0] or mutate(PARENT, random.Random(9)).source != first[0]


def test_a_mutation_is_described_like_a_pbt_step():
    for seed in range(50):
        variation = mutate(PARENT, random.Random(seed))
        for change in variation.description.split("; "):
            assert re.fullmatch(r"[A-Z][A-Z0-9_]* \S+ -> \S+( \((x\d+\.\d\d|[+-]\d+|x2|/2)\))?", change), change


def test_strings_and_flags_move_among_known_values():
    source = ('ACTIVATION = "relu"  # one of "relu", "gelu", "silu"\nCOMPILE = False\n'
              'def act():\n    return ACTIVATION == "relu2"\n')
    seen = {"ACTIVATION": set(), "COMPILE": set()}
    rng = random.Random(1)
    for _ in range(200):
        child = values(mutate(Genome.seed(source), rng).source)
        for name in seen:
            seen[name].add(child[name])
    assert seen["ACTIVATION"] == {"relu", "gelu", "silu", "relu2"}
    assert seen["COMPILE"] == {False, True}


def test_a_parent_with_nothing_to_mutate_gives_an_invalid_variation_with_the_reason():
    variation = mutate(Genome.seed("import math\nX = math.pi\n"), random.Random(0))
    assert variation.status == "invalid" and variation.source is None
    assert "no hyperparameters" in variation.reason


def test_sampling_draws_several_values_over_a_wide_range_and_keeps_every_constraint():
    rng = random.Random(0)
    parent_values = values(SEED)
    rules = infer_rules(SEED)
    counts, ratios, betas, fractions = [], [], [], []
    for i in range(500):
        variation = sample(PARENT, rng)
        assert variation.ok and variation.operator == "hyper.sample", variation.reason
        child = values(variation.source)
        assert rules.violations(child) == [] and _known_constraints(child, parent_values) == []
        if i % 100 == 0:
            assert validate(variation.source).ok
        changed = [n for n in child if child[n] != parent_values[n]]
        counts.append(len(changed))
        if "LEARNING_RATE" in changed:
            ratios.append(child["LEARNING_RATE"] / parent_values["LEARNING_RATE"])
        if "ADAM_BETA2" in changed:
            betas.append(child["ADAM_BETA2"])
        if "WARMDOWN_FRACTION" in changed:
            fractions.append(child["WARMDOWN_FRACTION"])
    assert min(counts) >= 3 and max(counts) == 12       # 3 to 12 values at once, not mutate's one or two
    assert min(ratios) < 0.15 and max(ratios) > 6 and all(0.099 <= r <= 10.1 for r in ratios)   # x/÷ 10
    assert min(betas) < 0.7 and max(betas) > 0.99 and all(0 < b < 1 for b in betas)   # 1 - 0.95 x/÷ 10
    assert min(fractions) < 0.1 and max(fractions) > 0.9


def test_sampling_leaves_a_switched_off_value_off_and_is_reproducible():
    parent = Genome.seed(with_hyperparameters(SEED, GRAD_CLIP="0.0"))
    for seed in range(100):
        assert values(sample(parent, random.Random(seed), min_changes=12, max_changes=17).source)["GRAD_CLIP"] == 0
    assert sample(PARENT, random.Random(3)).source == sample(PARENT, random.Random(3)).source
    assert sample(PARENT, random.Random(3)).description.startswith("drawn afresh: ")
    assert get("hyper.sample")([PARENT], random.Random(3)).source == sample(PARENT, random.Random(3)).source


def test_uniform_crossover_takes_each_value_from_one_parent_and_keeps_the_constraints():
    a = Genome.seed(with_hyperparameters(SEED, WIDTH="128", N_HEADS="4", DEPTH="2", LEARNING_RATE="3e-3"))
    b = Genome.seed(with_hyperparameters(SEED, WIDTH="192", N_HEADS="3", DEPTH="4", LEARNING_RATE="1e-3"))
    va, vb = values(a.source), values(b.source)
    rng = random.Random(0)
    mixes = set()
    for _ in range(200):
        variation = get("hyper.crossover")([a, b], rng)
        assert variation.ok, variation.reason
        child = values(variation.source)
        assert all(child[n] in (va[n], vb[n]) for n in child)
        assert variation.source not in (a.source, b.source)
        assert child["WIDTH"] % child["N_HEADS"] == 0 and (child["WIDTH"] // child["N_HEADS"]) % 2 == 0
        mixes.add((child["WIDTH"], child["N_HEADS"], child["DEPTH"], child["LEARNING_RATE"]))
    assert (128, 3) not in {m[:2] for m in mixes}  # 128 is not divisible by 3
    assert len(mixes) >= 5
    assert "from b" in variation.description and b.short_id in variation.description


def test_crossover_of_parents_with_equal_hyperparameters_says_there_is_nothing_to_cross():
    variation = crossover(PARENT, PARENT, random.Random(0))
    assert variation.status == "invalid" and "do not differ" in variation.reason


# The benchmark's box, written out here: every constant of the seed bounded, on each of its scales.
BOUNDS = {"DEPTH": (1, 4), "WIDTH": (64, 256), "N_HEADS": (1, 4), "MLP_RATIO": (1, 6), "BATCH_SIZE": (4, 32),
          "LEARNING_RATE": (3e-4, 3e-2), "EMBED_LR_SCALE": (0.1, 10.0), "WEIGHT_DECAY": (1e-4, 0.3),
          "ADAM_BETA1": (0.5, 0.98), "ADAM_BETA2": (0.8, 0.999), "WARMUP_FRACTION": (0.0, 0.2),
          "WARMDOWN_FRACTION": (0.1, 0.8), "FINAL_LR_FRACTION": (0.0, 0.5), "GRAD_CLIP": (0.1, 10.0),
          "LOGIT_SOFTCAP": (3.0, 100.0), "ROPE_BASE": (100.0, 1e6), "INIT_STD": (0.002, 0.2)}


def test_with_bounds_sampling_draws_each_bounded_value_over_its_whole_bound_and_never_outside():
    bounds = {n: b for n, b in BOUNDS.items() if n in values(SEED)}
    assert len(bounds) >= 10
    rng = random.Random(1)
    parent_values = values(SEED)
    rules = infer_rules(SEED)
    seen: dict[str, list] = {n: [] for n in bounds}
    for _ in range(600):
        variation = sample(PARENT, rng, bounds=bounds)
        assert variation.ok, variation.reason
        child = values(variation.source)
        broken = [b for b in _known_constraints(child, parent_values)   # a bound from 0 lets a value reach 0
                  if not (b.endswith("(was positive)") and bounds[b.split(" = ")[0]][0] == 0)]
        assert rules.violations(child) == [] and broken == []
        for name, (low, high) in bounds.items():
            assert low <= child[name] <= high, (name, child[name])
            if child[name] != parent_values[name]:
                seen[name].append(child[name])
    # the whole bound, not a range around the parent: both ends of the learning rate's 100x are reached
    lr = seen["LEARNING_RATE"]
    assert min(lr) < 5e-4 and max(lr) > 1.8e-2
    assert set(seen["WIDTH"]) <= {64, 128, 256} and len(set(seen["WIDTH"])) >= 2
    beta2 = seen["ADAM_BETA2"]
    assert min(beta2) < 0.85 and max(beta2) > 0.995


def test_with_bounds_mutation_and_crossover_never_leave_them():
    bounds = {"LEARNING_RATE": (values(SEED)["LEARNING_RATE"], values(SEED)["LEARNING_RATE"] * 1.2)}
    rng = random.Random(2)
    moved = 0
    for _ in range(300):
        variation = mutate(PARENT, rng, bounds=bounds)
        assert variation.ok, variation.reason
        lr = values(variation.source)["LEARNING_RATE"]
        assert bounds["LEARNING_RATE"][0] <= lr <= bounds["LEARNING_RATE"][1]
        moved += lr != values(SEED)["LEARNING_RATE"]
    assert moved > 0                                    # it still moves inside the bound
    outside = Genome.seed(with_hyperparameters(SEED, LEARNING_RATE=repr(values(SEED)["LEARNING_RATE"] * 5),
                                               WARMDOWN_FRACTION="0.33"))
    for _ in range(50):
        variation = crossover(PARENT, outside, rng, bounds=bounds)
        assert variation.ok, variation.reason
        assert values(variation.source)["LEARNING_RATE"] == values(SEED)["LEARNING_RATE"]   # never taken from b
