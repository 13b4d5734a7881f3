"""The DuckDB store: one file (default evo.duckdb) holding every run, individual, lineage edge, evaluation and LLM
call, so lineage is plain SQL.

    schema.py   tables, the fitness/leaderboard views, the ancestry/descendants table macros; ids and score decided
    writer.py   StoreWriter, the run actor's one connection: every method commits before it returns
    reader.py   open_reader for a file no live run holds; StoreReader, the reads every command and the engine use
    live.py     open_view: those reads from the live run's actor while a run holds the file, else from the file itself
    lock.py     `<db>.lock`: who holds the file during a live run and where it answers queries
    query.py    run_query: users' SQL, refused unless read-only by DuckDB's own parse
    records.py  the frozen records reads return

Who owns the file:
- a live run's actor (evo.run_actor) opens it read-write for the whole run (DuckDB lets one process hold a file, even
  for reading) and writes `<db>.lock` beside it
- `evo sql` and friends ask that actor (over Ray, at the address in the lock file), which answers StoreReader's reads
  on its own connection; once the run is over (or its actor is dead) they open the file themselves (open_reader)
- open_view chooses, so every command reads one way
"""

from evo.store.live import LiveReader, live_actor, open_view
from evo.store.lock import (
                            RunLock,
                            acquire_lock,
                            describe_lock,
                            lock_is_live,
                            lock_path,
                            read_lock,
                            release_lock,
)
from evo.store.query import run_query
from evo.store.reader import READS, StoreReader, open_reader
from evo.store.records import Evaluation, Fitness, Individual, Run
from evo.store.schema import (
                            EVALUATION_STATUSES,
                            INDIVIDUAL_STATUSES,
                            PURPOSES,
                            RUN_STATUSES,
                            SCHEMA_VERSION,
                            create_schema,
)
from evo.store.writer import StoreWriter, open_writer

__all__ = [
    "EVALUATION_STATUSES", "INDIVIDUAL_STATUSES", "PURPOSES", "RUN_STATUSES", "SCHEMA_VERSION",
    "Evaluation", "Fitness", "Individual", "LiveReader", "READS", "Run", "RunLock", "StoreReader", "StoreWriter",
    "acquire_lock", "create_schema", "describe_lock", "live_actor", "lock_is_live", "lock_path", "open_reader",
    "open_view", "open_writer",
    "read_lock", "release_lock", "run_query",
]
