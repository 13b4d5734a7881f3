"""Named choices that several layers share, defined once; this module imports nothing of evo, so the settings
(evo.config), the policy (evo.search), the engine, the store's readers and the CLI may all read it.

- Phase: where a run is (noise, search, final, then finished, interrupted or failed), as the policy moves through
  it, saved in the store's state and shown by `evo status`
- SELECTIONS: the --selection methods; evo.search.selection maps each to its selector
"""

from __future__ import annotations

from enum import Enum


class Phase(str, Enum):
    """A run's phase; each is its own word as a string, so stored states and JSON read the same as plain text."""

    NOISE = "noise"                # the seed on the noise seeds: the noise floor
    SEARCH = "search"              # children, and confirmations of the elites
    FINAL = "final"                # the search is over: the best is confirmed before the end
    FINISHED = "finished"
    INTERRUPTED = "interrupted"    # stopped; a resume goes on where it stopped
    FAILED = "failed"              # the seed failed, or the run died

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


ENDED = frozenset({Phase.FINISHED, Phase.INTERRUPTED, Phase.FAILED})   # the phases that are also a run's status

SELECTIONS = ("tournament", "best", "random")
