"""The hyperparameter view: top-level UPPERCASE literal assignments, and rewrites that touch nothing else."""

import ast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genome import format_value, hyperparameters, rewrite, values
from tests.support.genomes import seed_source

SEED = seed_source()
VIEW = hyperparameters(SEED)


def _top_level_uppercase_assignments(source):
    """name -> value node, for every `NAME = value` directly in the module body."""
    out = {}
    for stmt in ast.parse(source).body:
        if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id.isupper():
            out[stmt.targets[0].id] = stmt.value
    return out


def test_the_view_of_the_seed_holds_its_literal_assignments_and_nothing_else():
    assignments = _top_level_uppercase_assignments(SEED)
    literal = {n for n, v in assignments.items() if not any(isinstance(x, ast.Name) for x in ast.walk(v))}
    assert set(VIEW) == literal and len(VIEW) >= 10
    for name, h in VIEW.items():
        assert h.value == ast.literal_eval(assignments[name])
        assert SEED[h.start:h.end] == h.text
        assert SEED.splitlines()[h.line - 1].startswith(name)
    if "CONTEXT" in assignments:  # CONTEXT = SEQ_LEN: not a literal, so not a hyperparameter
        assert "CONTEXT" not in VIEW


def test_the_view_reads_every_literal_kind_and_skips_what_it_cannot_rewrite_alone():
    source = (
        'import os\n'
        'LR = 3e-3  # peak rate\n'
        'NEG: float = -0.5\n'
        'NAME = "relu"\n'
        "FLAG = True\n"
        "BETAS = (0.9, 0.95)\n"
        "BIG = 1_000_000\n"
        "DERIVED = LR * 2\n"
        "TWICE = 1\n"
        "TWICE = 2\n"
        "lower = 5\n"
        "SHARED = 4\n"
        "def f():\n"
        "    global SHARED\n"
        "    SHARED = 5\n"
        "    INNER = 3\n"
        "if True:\n"
        "    NESTED = 1\n"
    )
    view = hyperparameters(source)
    assert {n: h.value for n, h in view.items()} == {
        "LR": 3e-3, "NEG": -0.5, "NAME": "relu", "FLAG": True, "BETAS": (0.9, 0.95), "BIG": 1_000_000}
    assert view["LR"].comment == "peak rate"


def test_a_source_that_does_not_parse_has_an_empty_view():
    assert hyperparameters("LR = 3e-3\ndef (\n") == {}


@pytest.mark.parametrize("value, like, expected", [
    (0.0041, "3e-3", "4.1e-3"),
    (0.0041, "0.003", "0.0041"),
    (1e-05, "0.001", "1e-05"),
    (256, "128", "256"),
    (2_000_000, "1_000_000", "2_000_000"),
    ("gelu", '"relu"', '"gelu"'),
    ("gelu", "'relu'", "'gelu'"),
    ('say "hi"', '"x"', "'say \"hi\"'"),
    (False, "True", "False"),
    ((0.8, 0.99), "(0.9, 0.95)", "(0.8, 0.99)"),
    ((3,), "(2,)", "(3,)"),
    (-2.5e-4, "-1e-4", "-2.5e-4"),
])
def test_values_are_written_in_the_style_of_the_literal_they_replace(value, like, expected):
    text = format_value(value, like)
    assert text == expected
    assert ast.literal_eval(text) == value and type(ast.literal_eval(text)) is type(value)


def _new_value(old, draw):
    if isinstance(old, bool):
        return not old
    if isinstance(old, int):
        return draw(st.integers(1, 1 << 20).filter(lambda v: v != old))
    if isinstance(old, float):
        return draw(st.floats(1e-9, 1e9, allow_nan=False).filter(lambda v: v != old))
    if isinstance(old, str):
        return draw(st.text(max_size=10).filter(lambda v: v != old))
    return tuple(_new_value(e, draw) for e in old)


@given(st.data())
def test_a_rewrite_changes_only_the_named_assignment(data):
    name = data.draw(st.sampled_from(sorted(VIEW)))
    new = _new_value(VIEW[name].value, data.draw)
    out = rewrite(SEED, {name: new})
    before, after = SEED.split("\n"), out.split("\n")
    line = VIEW[name].line - 1
    assert len(before) == len(after)
    assert [ln for i, ln in enumerate(before) if i != line] == [ln for i, ln in enumerate(after) if i != line]
    assert after[line].startswith(f"{name} = ")
    if "#" in before[line]:  # the comment is kept, word for word
        assert after[line].endswith(before[line][before[line].index("#"):])
    assert values(out) == {**values(SEED), name: new}


def test_a_rewrite_keeps_aligned_comments_in_their_column():
    out = rewrite(SEED, {"LEARNING_RATE": 0.0041})
    line = next(ln for ln in out.splitlines() if ln.startswith("LEARNING_RATE"))
    old = next(ln for ln in SEED.splitlines() if ln.startswith("LEARNING_RATE"))
    if "#" in old:
        assert line.index("#") == old.index("#")


def test_rewriting_a_name_outside_the_view_is_refused():
    with pytest.raises(ValueError, match="NOT_THERE"):
        rewrite(SEED, {"NOT_THERE": 1})


def test_positions_count_characters_not_bytes():
    source = 'TITLE = "é"; SIZE = 4  # ü\n'
    out = rewrite(source, {"SIZE": 8})
    assert out == 'TITLE = "é"; SIZE = 8  # ü\n'
