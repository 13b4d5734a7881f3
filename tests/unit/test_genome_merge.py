"""Three-way merge: edits to different regions are all kept; overlapping different edits conflict."""

from hypothesis import assume, given
from hypothesis import strategies as st

from genome import merge3
from tests.support.genomes import seed_source, with_hyperparameters


@st.composite
def disjoint_edits(draw):
    """An ancestor of distinct lines, and two edits of it at different places (they may touch, not overlap)."""
    n = draw(st.integers(2, 30))
    base = [f"line {i}\n" for i in range(n)]
    cuts = sorted(draw(st.lists(st.integers(0, n), min_size=4, max_size=4)))
    a_start, a_end, b_start, b_end = cuts
    a_new = draw(st.lists(st.sampled_from(["A1\n", "A2\n", "A3\n"]), max_size=3))
    b_new = draw(st.lists(st.sampled_from(["B1\n", "B2\n", "B3\n"]), max_size=3))
    # Each edit must change something, and two insertions at one place would have no defined order.
    assume(a_new or a_end > a_start)
    assume(b_new or b_end > b_start)
    assume(not (a_start == a_end == b_start == b_end))
    a = base[:a_start] + a_new + base[a_end:]
    b = base[:b_start] + b_new + base[b_end:]
    both = base[:a_start] + a_new + base[a_end:b_start] + b_new + base[b_end:]
    flip = draw(st.booleans())
    return "".join(base), "".join(a), "".join(b), "".join(both), flip


@given(disjoint_edits())
def test_merging_edits_to_different_regions_keeps_both(case):
    base, a, b, both, flip = case
    result = merge3(base, b, a) if flip else merge3(base, a, b)
    assert result.ok, result.reason
    assert result.source == both


def test_neighbouring_hyperparameters_changed_by_each_parent_merge_cleanly():
    seed = seed_source()
    a = with_hyperparameters(seed, LEARNING_RATE="1e-3")
    b = with_hyperparameters(seed, EMBED_LR_SCALE="2.0")
    result = merge3(seed, a, b)
    assert result.source == with_hyperparameters(seed, LEARNING_RATE="1e-3", EMBED_LR_SCALE="2.0")


def test_the_same_change_on_both_sides_is_taken_once():
    seed = seed_source()
    a = with_hyperparameters(seed, DEPTH="3", WIDTH="256")
    b = with_hyperparameters(seed, DEPTH="3")
    assert merge3(seed, a, b).source == a


def test_different_changes_to_one_line_conflict_and_say_where():
    seed = seed_source()
    line = next(i for i, ln in enumerate(seed.splitlines(), 1) if ln.startswith("LEARNING_RATE"))
    result = merge3(seed, with_hyperparameters(seed, LEARNING_RATE="1e-3"), with_hyperparameters(seed,
                                                                                                LEARNING_RATE="5e-3"))
    assert not result.ok and result.source is None
    assert f"line {line}" in result.reason and "LEARNING_RATE" in result.reason


def test_different_insertions_at_one_place_conflict():
    result = merge3("a\nb\n", "a\nX\nb\n", "a\nY\nb\n")
    assert not result.ok
    assert "insert" in result.reason


def test_a_parent_equal_to_the_ancestor_yields_the_other_parent():
    seed = seed_source()
    a = with_hyperparameters(seed, DEPTH="3")
    assert merge3(seed, a, seed).source == a
    assert merge3(seed, seed, a).source == a
