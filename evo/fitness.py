"""The noise-aware score and the ranking by it, defined once (lower is better):

    std_err = max(std_bpb (sample std; 0 with one evaluation), the run's noise floor (0 when unset)) / sqrt(n)
    score   = mean_bpb + SCORE_K * std_err

- a child measured once is charged a whole noise floor, so it cannot outrank a confirmed member on a lucky draw; a
  member with n evaluations on fresh seeds is charged floor / sqrt(n)
- ranked() and best(): every ranking and every "best" of a run (selection, the policy, the store's status), by
  score, ties broken by id
- STD_ERR_SQL and SCORE_SQL: the same formulas in the store's `fitness` view
- only the evaluations whose purpose is in SCORED_PURPOSES count
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import TypeVar

T = TypeVar("T")

SCORE_K = 1.0
# The purposes whose ok evaluations count towards fitness (replays do not: they are re-measurements on request).
SCORED_PURPOSES = ("search", "confirm", "noise")
# The evaluations that also measure test_bpb on the test split: the seed's noise evaluations and every confirmation,
# so the seed and any individual that can be reported as the best have it. Nothing here or in selection reads it.
TEST_PURPOSES = ("confirm", "noise")


def std_err(std_bpb: float | None, n: int, noise_floor: float | None) -> float:
    """The standard error charged to a member with n ok evaluations (n >= 1)."""
    return max(std_bpb or 0.0, noise_floor or 0.0) / math.sqrt(max(n, 1))


def score(mean_bpb: float, std_bpb: float | None, n: int, noise_floor: float | None) -> float:
    """The noise-aware score of a member with n ok evaluations (n >= 1)."""
    return mean_bpb + SCORE_K * std_err(std_bpb, n, noise_floor)


def ranked(rows: Iterable[T], id: Callable[[T], str] = attrgetter("id")) -> list[T]:
    """rows (each with a `score`) best first: by score, lower is better, ties broken by id (the `id` attribute
    unless told otherwise), so every ranking of a run agrees."""
    return sorted(rows, key=lambda row: (row.score, id(row)))


def best(rows: Iterable[T], id: Callable[[T], str] = attrgetter("id"),
         eligible: Callable[[T], bool] = lambda row: True) -> T | None:
    """The best of rows by ranked() that is eligible, or None."""
    return next((row for row in ranked(rows, id) if eligible(row)), None)


def sql_list(values: tuple[str, ...]) -> str:
    """A tuple of words as a SQL list: ('a', 'b')."""
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


# The same two formulas over the columns of the fitness view (std_bpb, noise_floor, n, mean_bpb, std_err).
STD_ERR_SQL = "greatest(coalesce(std_bpb, 0), coalesce(noise_floor, 0)) / sqrt(n)"
SCORE_SQL = f"mean_bpb + {SCORE_K!r} * std_err"
