"""Selection on noisy fitness (evo.search.selection): who becomes a parent, who stays in the population."""

import random

from evo.fitness import score
from evo.search.selection import Member, elites, select_parents, survivors


def test_one_lucky_draw_cannot_outrank_a_confirmed_member():
    confirmed = Member("a", score(3.00, 0.01, 4, noise_floor=0.05), 3.00, 4)
    lucky = Member("b", score(2.98, None, 1, noise_floor=0.05), 2.98, 1)
    assert confirmed.score < lucky.score
    assert [m.id for m in elites([lucky, confirmed], 1)] == ["a"]
    kept, dropped = survivors([lucky, confirmed], 1)
    assert [m.id for m in kept] == ["a"] and [m.id for m in dropped] == ["b"]


def test_selection_methods_follow_the_score():
    members = [Member(str(i), float(i), float(i), 1) for i in range(10)]
    rng = random.Random(0)
    assert [m.id for m in select_parents(members, 2, rng, "best", 3)][0] == "0"
    picks = [select_parents(members, 1, rng, "tournament", 5)[0].score for _ in range(300)]
    uniform = [select_parents(members, 1, rng, "random", 5)[0].score for _ in range(300)]
    assert sum(picks) / 300 < sum(uniform) / 300 - 1.5  # tournaments favour low scores
    pair = select_parents(members, 2, rng, "tournament", 3)
    assert pair[0].id != pair[1].id
