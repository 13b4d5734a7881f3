"""Domains and constraints inferred from names, values, comments and the code that reads them."""

from genome import infer_rules
from genome.constraints import string_choices
from tests.support.genomes import seed_source

OTHER = '''
N_EMBD = 384
N_HEAD = 6
N_KV_HEADS = 2
N_LAYER = 6
BLOCK_SIZE = 256
DROPOUT = 0.0
BETAS = (0.9, 0.99)
WARMUP_RATIO = 0.1
COOLDOWN_RATIO = 0.3
WEIGHT_DECAY = 0.0
CLIP_NORM = 0
ACTIVATION = "gelu"
NORM = "rms"            # one of: rms, layer
DTYPE = "bfloat16"
MODE = "fixed"
COMPILE = True
LR = 6e-4

def act(x):
    if ACTIVATION == "relu2":
        return x
    return {"gelu": x, "silu": x}[ACTIVATION]
'''


def test_the_seed_genome_gets_the_domains_its_names_and_values_imply():
    rules = infer_rules(seed_source())
    kinds = {n: d.kind for n, d in rules.domains.items()}
    expected = {"WIDTH": "pow2", "N_HEADS": "pow2", "BATCH_SIZE": "pow2", "DEPTH": "step", "MLP_RATIO": "step",
                "LEARNING_RATE": "log", "ADAM_BETA1": "beta", "ADAM_BETA2": "beta", "WARMUP_FRACTION": "fraction",
                "WARMDOWN_FRACTION": "fraction", "GRAD_CLIP": "switch", "LOGIT_SOFTCAP": "switch"}
    # Every name is asserted: if train.py is retuned and drops one, this list is updated with it (the rules themselves
    # are not name lists: test_rules_are_inferred_for_names_this_repository_never_used).
    assert {name: kinds.get(name) for name in expected} == expected
    described = {(c.kind, c.names) for c in rules.constraints}
    assert ("divides", ("N_HEADS", "WIDTH")) in described
    assert ("even_quotient", ("N_HEADS", "WIDTH")) in described
    assert ("sum_at_most", ("WARMUP_FRACTION", "WARMDOWN_FRACTION")) in described


def test_rules_are_inferred_for_names_this_repository_never_used():
    rules = infer_rules(OTHER)
    kinds = {n: d.kind for n, d in rules.domains.items()}
    assert kinds["N_EMBD"] == "step"  # 384 is not a power of two: it steps, kept divisible by N_HEAD
    assert kinds["N_HEAD"] == "step" and kinds["N_LAYER"] == "step" and kinds["BLOCK_SIZE"] == "pow2"
    assert kinds["DROPOUT"] == "fraction" and kinds["WARMUP_RATIO"] == "fraction"
    assert kinds["BETAS"] == "tuple" and [d.kind for d in rules.domains["BETAS"].elements] == ["beta", "beta"]
    assert kinds["COMPILE"] == "flag" and kinds["LR"] == "log"
    assert "WEIGHT_DECAY" not in kinds and "CLIP_NORM" not in kinds  # zero: off, and no step says what "on" is
    assert "MODE" not in kinds  # a string with no known alternatives stays as it is
    assert set(rules.domains["ACTIVATION"].choices) == {"gelu", "relu2", "silu"}
    assert set(rules.domains["NORM"].choices) == {"rms", "layer"}
    assert set(rules.domains["DTYPE"].choices) == {"bfloat16", "float16", "float32"}
    described = {(c.kind, c.names) for c in rules.constraints}
    assert ("divides", ("N_HEAD", "N_EMBD")) in described
    assert ("divides", ("N_KV_HEADS", "N_HEAD")) in described
    assert ("sum_at_most", ("WARMUP_RATIO", "COOLDOWN_RATIO")) in described


def test_violations_name_the_broken_constraint():
    rules = infer_rules(OTHER)
    values = {"N_EMBD": 384, "N_HEAD": 5, "N_KV_HEADS": 2, "BETAS": (0.9, 1.0), "WARMUP_RATIO": 0.8,
              "COOLDOWN_RATIO": 0.3}
    found = " | ".join(rules.violations(values))
    assert "N_EMBD = 384 must be divisible by N_HEAD = 5" in found
    assert "N_HEAD = 5 must be divisible by N_KV_HEADS = 2" in found
    assert "BETAS[1]" in found
    assert "WARMUP_RATIO + COOLDOWN_RATIO" in found


def test_a_constraint_the_parent_already_breaks_is_not_inferred():
    rules = infer_rules("WIDTH = 100\nN_HEADS = 3\n")
    assert not [c for c in rules.constraints if c.kind in ("divides", "even_quotient")]


def test_string_choices_come_from_comparisons_lookups_and_match():
    source = ('OPT = "adamw"\nif OPT in ("sgd", "lion"):\n    pass\nmatch OPT:\n    case "muon":\n        pass\n'
              'TABLE = {"adam": 1}\nx = TABLE[OPT]\n')
    assert string_choices(source, "OPT") == {"sgd", "lion", "muon", "adam"}


def test_a_width_that_is_not_a_power_of_two_steps_in_units_that_keep_it_divisible():
    rules = infer_rules(OTHER)
    assert rules.domains["N_EMBD"].unit == 12  # N_HEAD = 6, head size 64 is even
