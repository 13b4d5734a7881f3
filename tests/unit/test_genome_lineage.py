"""Lowest common ancestors in a lineage with crossovers, and genome-to-genome diffs."""

from genome import Genome, apply_diff, lowest_common_ancestor

#        s
#       / \
#      a   b
#     / \ / \
#    c   d   e        d = crossover(a, b)
#    |       |
#    f       g
PARENTS = {"a": ("s",), "b": ("s",), "c": ("a",), "d": ("a", "b"), "e": ("b",), "f": ("c",), "g": ("e",)}


def test_the_lowest_common_ancestor_is_the_nearest_shared_one():
    assert lowest_common_ancestor("f", "d", PARENTS) == "a"
    assert lowest_common_ancestor("g", "d", PARENTS) == "b"
    assert lowest_common_ancestor("f", "g", PARENTS) == "s"
    assert lowest_common_ancestor("c", "f", PARENTS) == "c"  # f descends from c
    assert lowest_common_ancestor("f", "zz", PARENTS) is None


def test_a_genome_diff_names_the_ids_and_applies():
    a, b = Genome.seed("x = 1\ny = 2\n"), Genome.seed("x = 1\ny = 3\n")
    diff = a.diff_to(b)
    assert f"--- {a.short_id}/train.py" in diff and f"+++ {b.short_id}/train.py" in diff
    assert apply_diff(a.source, diff) == b.source
