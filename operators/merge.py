"""Offline merge crossover: both parents' changes against their lowest common ancestor, merged three-way."""

from __future__ import annotations

import random

from genome import Genome, diff_stats, merge3, unified_diff, values
from genome.syntax import parse
from operators.variation import Variation

CROSSOVER = "merge.crossover"


def crossover(a: Genome, b: Genome, rng: random.Random, *, ancestor: Genome | None = None) -> Variation:
    """The three-way merge of a and b against ancestor (their lowest common ancestor, which the engine finds in
    the lineage). Clean merges only: a conflict, a merge that does not parse, or one that equals a parent (one
    side's changes already hold the other's) yields no child, and the reason says which. rng is unused: a merge is
    deterministic."""
    if ancestor is None:
        return Variation.invalid(CROSSOVER, "the parents have no common ancestor to merge against")
    result = merge3(ancestor.source, a.source, b.source)
    if not result.ok:
        return Variation.invalid(CROSSOVER, f"the parents' changes conflict: {result.reason}")
    source = result.source
    if source == a.source or source == b.source:
        same = a if source == a.source else b
        return Variation.invalid(CROSSOVER, f"the merge equals parent {same.short_id}: its changes already "
                                            f"contain the other parent's")
    try:
        parse(source)
    except SyntaxError as e:
        return Variation.invalid(CROSSOVER, f"the merged source does not parse: line {e.lineno}: {e.msg}")
    except ValueError as e:  # null bytes, carried in from a parent
        return Variation.invalid(CROSSOVER, f"the merged source does not parse: {e}")
    return Variation.child(CROSSOVER, source, f"merge of {a.short_id} ({_changes(ancestor, a)}) and {b.short_id} "
                                              f"({_changes(ancestor, b)}) over {ancestor.short_id}")


def _changes(ancestor: Genome, child: Genome) -> str:
    """"+3/-1 lines: LEARNING_RATE, DEPTH": the size of a parent's change and the hyperparameters it moved."""
    added, removed = diff_stats(unified_diff(ancestor.source, child.source))
    before, after = values(ancestor.source), values(child.source)
    moved = [n for n in after if n in before and after[n] != before[n]]
    return f"+{added}/-{removed} lines" + (f": {', '.join(moved)}" if moved else "")
