"""Reading a store wherever it is: `open_view(db)` gives the reads of StoreReader over the live run's actor while a run
holds the file (DuckDB lets one process open it), else over a read-only connection of this process.

    with open_view("evo.duckdb") as store:    # the same methods either way
        run = store.run()
        steps = store.lineage(run.run_id, store.resolve(run.run_id, "3fa9"))

- the run actor answers each read on its own connection (StoreReader's methods are the writer's reads too)
- its run status is the engine's own, with the evaluations running now
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from evo.errors import StoreError, first_line
from evo.store.lock import lock_is_live, read_lock
from evo.store.reader import READS, StoreReader, open_reader


def live_actor(db: str | os.PathLike):
    """The run actor of the live run holding db, or None when no live run holds it (connects to its Ray)."""
    info = read_lock(db)
    if not info or not lock_is_live(info) or not info.get("actor"):
        return None
    import ray

    if not ray.is_initialized():
        ray.init(address=info["ray_address"], namespace=info["namespace"], logging_level="ERROR",
                 log_to_driver=False)
    try:
        return ray.get_actor(info["actor"], namespace=info["namespace"])
    except ValueError:
        raise StoreError(f"{Path(db).name} is held by a live run whose run actor cannot be reached "
                         f"({info['actor']})") from None


class LiveReader:
    """StoreReader's reads, answered by the actor of the live run (see READS)."""

    def __init__(self, actor, path: str | os.PathLike):
        self.actor = actor
        self.path = Path(path)

    def __getattr__(self, name: str):
        if name not in READS:
            raise AttributeError(name)

        def read(*args, **kwargs):
            import ray

            try:
                return ray.get(self.actor.read.remote(name, args, kwargs), timeout=120)
            except ray.exceptions.RayTaskError as e:
                cause = getattr(e, "cause", None)
                if isinstance(cause, StoreError):
                    raise cause from None
                raise StoreError(first_line(cause, typed=True) if cause is not None else first_line(e)) from None
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as e:
                raise StoreError(f"the live run's actor did not answer ({type(e).__name__}); "
                                 f"try again when the run has ended") from None
        return read

    def close(self) -> None:
        pass


@contextmanager
def open_view(db: str | os.PathLike) -> Iterator[StoreReader | LiveReader]:
    """The store's reads: through the live run's actor while a run holds db, else from the file itself."""
    actor = live_actor(db)
    if actor is not None:
        yield LiveReader(actor, db)
        return
    with open_reader(db) as reader:
        yield reader
