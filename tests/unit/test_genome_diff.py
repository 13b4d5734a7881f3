"""Unified diffs: a diff applied to its source gives the target."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genome import PatchError, apply_diff, diff_stats, unified_diff
from tests.support.genomes import seed_source, with_hyperparameters

# Lines drawn from a small pool repeat often, which is what makes diffs ambiguous and hunks hard to place.
lines = st.lists(st.sampled_from(["a\n", "b\n", "c\n", "    x = 1\n", "\n", "# comment\n"]) | st.text(max_size=12),
                 max_size=40)
texts = lines.map("".join)


@given(texts, texts)
def test_a_diff_applied_to_its_source_gives_the_target(a, b):
    assert apply_diff(a, unified_diff(a, b)) == b


@given(st.text(), st.text())
def test_diffs_between_arbitrary_texts_apply(a, b):
    assert apply_diff(a, unified_diff(a, b)) == b


@given(texts)
def test_a_source_has_no_diff_with_itself(a):
    assert unified_diff(a, a) == ""
    assert apply_diff(a, "") == a


def test_a_missing_final_newline_is_marked_and_restored():
    a, b = "x = 1\ny = 2", "x = 1\ny = 3\n"
    diff = unified_diff(a, b)
    assert "\\ No newline at end of file" in diff
    assert apply_diff(a, diff) == b
    assert apply_diff(b, unified_diff(b, a)) == a


def test_a_hunk_still_applies_after_the_lines_above_it_moved():
    source = seed_source()
    diff = unified_diff(source, with_hyperparameters(source, LEARNING_RATE="1e-3"))
    moved = "# a new comment at the top\n" * 5 + source
    assert apply_diff(moved, diff) == "# a new comment at the top\n" * 5 + with_hyperparameters(source,
                                                                                               LEARNING_RATE="1e-3")


def test_a_diff_against_another_source_is_refused_with_the_hunk_named():
    diff = unified_diff("a\nb\nc\n", "a\nB\nc\n")
    with pytest.raises(PatchError, match="hunk 1"):
        apply_diff("x\ny\nz\n", diff)


def test_diff_stats_count_added_and_removed_lines_not_file_names():
    diff = unified_diff("-- a\nb\n", "-- a\nc\nd\n", a_name="--- weird", b_name="+++ weird")
    assert diff_stats(diff) == (2, 1)
