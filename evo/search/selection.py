"""Selection on noisy fitness: who becomes a parent, who stays in the population.

A member's fitness is its noise-aware score (evo.fitness; lower is better): a child measured once carries the run's
whole seed noise as a penalty, and cannot outrank a confirmed member on a lucky draw. Parents are picked with DEAP's
selectors, on fitness objects whose single weight is -1 (DEAP maximises weighted values, so -1 minimises).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from deap import base, tools

SELECTIONS = ("tournament", "best", "random")


class _Fitness(base.Fitness):
    weights = (-1.0,)


@dataclass
class Member:
    """One population member as selection sees it."""

    id: str
    score: float
    mean_bpb: float
    n: int

    def __post_init__(self):
        self.fitness = _Fitness((self.score,))


def select_parents(members: list[Member], k: int, rng: random.Random, method: str, tournament_size: int) -> list[Member]:
    """k parents (distinct when the population allows) by the chosen method."""
    state = random.getstate()
    random.seed(rng.random())  # DEAP's selectors draw from the global generator; keep the run's own in charge
    try:
        picked: list[Member] = []
        pool = list(members)
        for _ in range(k):
            if method == "tournament":
                choice = tools.selTournament(pool, 1, tournsize=min(tournament_size, len(pool)))[0]
            elif method == "best":
                choice = tools.selBest(pool, 1)[0] if not picked else rng.choice(tools.selBest(pool, 2))
            elif method == "random":
                choice = tools.selRandom(pool, 1)[0]
            else:
                raise ValueError(f"unknown selection {method!r}")
            picked.append(choice)
            if len(pool) > 1:
                pool = [m for m in pool if m.id != choice.id]
        return picked
    finally:
        random.setstate(state)


def survivors(members: list[Member], size: int) -> tuple[list[Member], list[Member]]:
    """Steady-state replacement of the worst: keeps the `size` best by score (so the elites, the best few, are
    always kept). Returns (kept, dropped)."""
    ranked = sorted(members, key=lambda m: (m.score, m.id))
    return ranked[:size], ranked[size:]


def elites(members: list[Member], count: int) -> list[Member]:
    """The `count` best members by score: always kept, and confirmed on fresh seeds as they get there."""
    return sorted(members, key=lambda m: (m.score, m.id))[:count]
