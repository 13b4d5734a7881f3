"""Ancestry questions the operators need answered from the lineage graph (child id -> parent ids)."""

from __future__ import annotations

from collections import deque
from typing import Mapping, Sequence


def ancestors(node: str, parents: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Every ancestor of node, node itself included, with its distance in generations (the shortest path)."""
    seen = {node: 0}
    queue = deque([node])
    while queue:
        current = queue.popleft()
        for parent in parents.get(current, ()):
            if parent not in seen:
                seen[parent] = seen[current] + 1
                queue.append(parent)
    return seen


def lowest_common_ancestor(a: str, b: str, parents: Mapping[str, Sequence[str]]) -> str | None:
    """The common ancestor of a and b closest to both (fewest generations in all, then the nearer to either,
    then the smaller id, so the answer is deterministic); a itself when b descends from a. None when they share
    no ancestor. This is what merge.crossover merges against."""
    from_a, from_b = ancestors(a, parents), ancestors(b, parents)
    common = from_a.keys() & from_b.keys()
    if not common:
        return None
    return min(common, key=lambda n: (from_a[n] + from_b[n], max(from_a[n], from_b[n]), n))
