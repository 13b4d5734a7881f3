"""What an individual is: its source text, its id (a content hash), its parents, the operator that made it and a
one-line description of the change."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from genome.diff import unified_diff

# The statuses an individual can have in the store; the store's schema (evo.store.schema) checks its column against
# this list. The genome itself carries none: the driver decides it.
STATUSES = ("proposed", "invalid", "rejected", "duplicate", "evaluated")

ID_LENGTH = 16  # hex digits of sha256: 64 bits, ample for a population search, short enough to read


def normalise(source: str) -> str:
    """The source with Windows line endings ("\\r\\n") turned into "\\n"; nothing else changes."""
    return source.replace("\r\n", "\n")


def content_hash(source: str) -> str:
    """The id of a source text: the first 16 hex digits of the sha256 of its UTF-8 bytes, after normalise().

    Independent of the process (no hash() salt), so ids are stable across runs and machines."""
    # surrogatepass: a string no file could hold (a lone surrogate) still gets an id instead of an exception
    return hashlib.sha256(normalise(source).encode("utf-8", "surrogatepass")).hexdigest()[:ID_LENGTH]


@dataclass(frozen=True)
class Genome:
    """One individual: source text (line endings normalised), the ids of its parents (none for a seed, one for a
    mutation, two for a crossover), the operator that made it and a one-line description of the change."""

    source: str
    parents: tuple[str, ...] = ()
    operator: str = "seed"
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.source, str):
            raise TypeError(f"a genome's source must be a str; got {type(self.source).__name__}")
        object.__setattr__(self, "source", normalise(self.source))
        parents = tuple(self.parents)
        if not all(isinstance(p, str) and p for p in parents):
            raise ValueError(f"a genome's parents must be non-empty id strings; got {parents!r}")
        if len(parents) > 2:
            raise ValueError(f"a genome has at most two parents; got {len(parents)}")
        object.__setattr__(self, "parents", parents)
        if not self.operator:
            raise ValueError("a genome needs the name of the operator that made it")
        if "\n" in self.description or "\r" in self.description:
            raise ValueError(f"a genome's description must be one line; got {self.description!r}")

    @property
    def id(self) -> str:
        """The content hash of the source: equal sources are the same individual."""
        return content_hash(self.source)

    @property
    def short_id(self) -> str:
        """The first 8 hex digits of the id, for descriptions and prompts."""
        return self.id[:8]

    def diff_to(self, other: "Genome", context: int = 3) -> str:
        """The unified diff turning this genome into other, with the ids as file names."""
        return unified_diff(self.source, other.source, a_name=f"{self.short_id}/train.py",
                            b_name=f"{other.short_id}/train.py", context=context)

    @classmethod
    def seed(cls, source: str, description: str = "the seed train.py") -> "Genome":
        """The starting individual of a run: no parents."""
        return cls(source=source, parents=(), operator="seed", description=description)
