"""Islands: the population as a ring of sub-populations that select and replace within themselves, the best of each
copied into the next one every few children (migration).

- why: several lines of descent stay apart, so one early lucky lineage does not take over the whole population;
  the price is that each island sees only its share of the children
- proposals go to the islands in turn: a child's parents come from its island, and it competes for a place there
- one island (the default) is the plain steady-state population: the same members, in the same order, from the same
  random draws
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

MIGRATE_EVERY = 4   # children placed per island between two migrations

Rank = Callable[[list[str]], list[str]]   # ids -> those with a score, best first


@dataclass
class Islands:
    count: int
    size: int                                               # places per island
    members: list[list[str]] = field(default_factory=list)  # each island's members, best first once placed
    home: dict[str, int] = field(default_factory=dict)      # child -> its island (only with more than one)
    turn: int = 0                                           # proposals made so far: whose turn it is
    placed: int = 0                                         # children placed so far: when to migrate

    @classmethod
    def of(cls, count: int, population: int) -> Islands:
        """count islands sharing a population of this size (each gets population // count places)."""
        return cls(count, population // count)

    def start(self, seed_id: str) -> None:
        """The noise phase is over: the seed is every island's one member."""
        self.members = [[seed_id] for _ in range(self.count)]

    def population(self) -> list[str]:
        """Every island's members, each once (island by island)."""
        seen: dict[str, None] = {}
        for island in self.members:
            seen.update(dict.fromkeys(island))
        return list(seen)

    def next(self) -> int:
        """The island the next proposal is for (in turn)."""
        island = self.turn % self.count
        self.turn += 1
        return island

    def island(self, index: int) -> list[str]:
        return self.members[index] if self.members else []

    def assign(self, child: str, island: int) -> None:
        if self.count > 1:
            self.home[child] = island

    def drop(self, child: str) -> int:
        """Forgets a child's island (it was placed, or failed); returns it."""
        return self.home.pop(child, 0)

    def remove(self, id: str) -> None:
        """Takes a member out of every island it is in (a disqualified one: evo.integrity)."""
        self.home.pop(id, None)
        self.members = [[m for m in island if m != id] for island in self.members]

    def place(self, child: str, rank: Rank) -> bool:
        """A child measured on the search seed competes for a place on its island (the worst leaves when it is
        full); every MIGRATE_EVERY children per island, each island's best is copied into the next. True when the
        child kept its place."""
        index = self.drop(child)
        self.members[index] = rank(self.members[index] + [child])[:self.size]
        kept = child in self.members[index]
        self.placed += 1
        if self.count > 1 and self.placed % (MIGRATE_EVERY * self.count) == 0:
            self.migrate(rank)
        return kept

    def migrate(self, rank: Rank) -> None:
        """Each island's best joins the next island round the ring (where it is not a member already)."""
        bests = [rank(island)[:1] for island in self.members]
        for index, best in enumerate(bests):
            target = (index + 1) % self.count
            if best and best[0] not in self.members[target]:
                self.members[target] = rank(self.members[target] + best)[:self.size]

    def state(self) -> dict:
        return {"members": self.members, "home": self.home, "turn": self.turn, "placed": self.placed}

    def restore(self, state: dict | None, population: list[str]) -> None:
        """From a saved state; without one (a run of one island), the stored population is the one island."""
        if state and self.count > 1:
            self.members = [list(island) for island in state["members"]]
            self.home = dict(state["home"])
            self.turn, self.placed = state["turn"], state["placed"]
        else:
            self.members = [list(population) for _ in range(self.count)] if population else []
