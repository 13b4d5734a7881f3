"""Selection on noisy fitness: who becomes a parent, who stays in the population.

- fitness: a member's noise-aware score (evo.fitness; lower is better): a child measured once carries the run's
  whole seed noise as a penalty, and cannot outrank a confirmed member on a lucky draw
- parents: DEAP's selectors, one per --selection method (SELECTORS), on fitness objects whose single weight is -1
  (DEAP maximises weighted values, so -1 minimises)
- survivors and elites: the best by score (evo.fitness.ranked)
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from deap import base, tools

from evo.choices import SELECTIONS
from evo.fitness import ranked


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


# A selector picks one parent from pool, given those picked already, the run's generator and the tournament size.
Selector = Callable[[list[Member], list[Member], random.Random, int], Member]


def _tournament(pool: list[Member], picked: list[Member], rng: random.Random, tournament_size: int) -> Member:
    return tools.selTournament(pool, 1, tournsize=min(tournament_size, len(pool)))[0]


def _best(pool: list[Member], picked: list[Member], rng: random.Random, tournament_size: int) -> Member:
    return tools.selBest(pool, 1)[0] if not picked else rng.choice(tools.selBest(pool, 2))


def _random(pool: list[Member], picked: list[Member], rng: random.Random, tournament_size: int) -> Member:
    return tools.selRandom(pool, 1)[0]


# The --selection methods and their selectors; the names are evo.choices.SELECTIONS, which the settings validate
# against without importing the policy.
SELECTORS: dict[str, Selector] = {"tournament": _tournament, "best": _best, "random": _random}
if tuple(SELECTORS) != SELECTIONS:
    raise ImportError(f"evo.search.selection: the selectors {tuple(SELECTORS)} are not the --selection methods "
                      f"{SELECTIONS} (evo.choices)")


def select_parents(members: list[Member], k: int, rng: random.Random, method: str,
                   tournament_size: int) -> list[Member]:
    """k parents (distinct when the population allows) by the chosen method."""
    try:
        selector = SELECTORS[method]
    except KeyError:
        raise ValueError(f"unknown selection {method!r}") from None
    state = random.getstate()
    random.seed(rng.random())  # DEAP's selectors draw from the global generator; keep the run's own in charge
    try:
        picked: list[Member] = []
        pool = list(members)
        for _ in range(k):
            choice = selector(pool, picked, rng, tournament_size)
            picked.append(choice)
            if len(pool) > 1:
                pool = [m for m in pool if m.id != choice.id]
        return picked
    finally:
        random.setstate(state)


def survivors(members: list[Member], size: int) -> tuple[list[Member], list[Member]]:
    """Steady-state replacement of the worst: keeps the `size` best by score (so the elites, the best few, are
    always kept). Returns (kept, dropped)."""
    best_first = ranked(members)
    return best_first[:size], best_first[size:]


def elites(members: list[Member], count: int) -> list[Member]:
    """The `count` best members by score: always kept, and confirmed on fresh seeds as they get there."""
    return ranked(members)[:count]
