"""Reading a store, live or finished, for `evo sql`, `evo lineage`, `evo show`, `evo export` and `evo logs`.

Everything here goes through one read-only query function: while a run is live it is the driver's (the Population
actor answers on a cursor of its own connection, see evo.store), afterwards a read-only connection of our own. So
the same code serves both, and nothing here ever writes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from evo.errors import StoreError

Query = Callable[[str], tuple[list[str], list[tuple]]]
_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")


@contextmanager
def store_query(db: str) -> Iterator[Query]:
    """A read-only query function over db: the live driver's while a run holds it, else a reader's."""
    from evo.status import live_actor

    actor = live_actor(db)
    if actor is not None:
        import ray

        def ask(sql: str):
            try:
                return ray.get(actor.query.remote(sql))
            except ray.exceptions.RayTaskError as e:
                cause = e.cause if isinstance(getattr(e, "cause", None), StoreError) else None
                raise cause or StoreError(str(e).splitlines()[-1]) from None

        yield ask
        return
    if not Path(db).exists():
        raise StoreError(f"no database at {db}")
    from evo.store import open_reader

    with open_reader(db) as reader:
        yield reader.query


def _literal(value: str, what: str) -> str:
    if not _ID.match(value):
        raise StoreError(f"{what} {value!r} is not a valid id")
    return f"'{value}'"


def latest_run(q: Query, run_id: str | None = None) -> str:
    if run_id:
        rows = q(f"SELECT run_id FROM runs WHERE run_id = {_literal(run_id, 'run')}")[1]
        if not rows:
            raise StoreError(f"no run {run_id!r} in this database")
        return rows[0][0]
    rows = q("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1")[1]
    if not rows:
        raise StoreError("this database has no run")
    return rows[0][0]


def resolve(q: Query, run_id: str, id: str) -> str:
    """The individual whose id is id, or starts with it (a unique prefix of at least 4 characters)."""
    _literal(id, "individual")
    rows = q(f"SELECT id FROM individuals WHERE run_id = '{run_id}' AND (id = '{id}' OR "
             f"(length('{id}') >= 4 AND starts_with(id, '{id}'))) ORDER BY id = '{id}' DESC, birth LIMIT 2")[1]
    if not rows:
        raise StoreError(f"no individual {id!r} in run {run_id}")
    if len(rows) > 1 and rows[0][0] != id:
        raise StoreError(f"{id!r} is the start of several ids in run {run_id} ({rows[0][0]}, {rows[1][0]}, ...)")
    return rows[0][0]


@dataclass(frozen=True)
class Node:
    id: str
    operator: str
    description: str
    status: str
    parent: str | None
    second_parent: str | None
    mean_bpb: float | None
    std_bpb: float | None
    n: int
    source_hash: str | None


def node(q: Query, run_id: str, id: str) -> Node:
    cols, rows = q(f"""
        SELECT i.id, i.operator, i.description, i.status,
               (SELECT parent_id FROM lineage l WHERE l.run_id = i.run_id AND l.child_id = i.id AND role = 'parent'),
               (SELECT parent_id FROM lineage l WHERE l.run_id = i.run_id AND l.child_id = i.id
                  AND role = 'second_parent'),
               f.mean_bpb, f.std_bpb, coalesce(f.n, 0), i.source_hash
        FROM individuals i LEFT JOIN fitness f ON f.run_id = i.run_id AND f.individual_id = i.id
        WHERE i.run_id = '{run_id}' AND i.id = '{id}'""")
    if not rows:
        raise StoreError(f"no individual {id!r} in run {run_id}")
    return Node(*rows[0])


def path_from_seed(q: Query, run_id: str, id: str) -> list[Node]:
    """The individuals from the seed to id, following each one's first parent."""
    path = [node(q, run_id, id)]
    while path[-1].parent is not None and len(path) < 100_000:
        path.append(node(q, run_id, path[-1].parent))
    return list(reversed(path))


def source(q: Query, run_id: str, id: str) -> str:
    n = node(q, run_id, id)
    if n.source_hash is None:
        raise StoreError(f"individual {id} has no source (status {n.status})")
    rows = q(f"SELECT text FROM sources WHERE source_hash = '{n.source_hash}'")[1]
    return rows[0][0]


def evaluation_log(q: Query, evaluation_id: str) -> str:
    if not evaluation_id.isdigit():
        raise StoreError(f"an evaluation id is a number; got {evaluation_id!r}")
    rows = q(f"SELECT log, status, error FROM evaluations WHERE id = {int(evaluation_id)}")[1]
    if not rows:
        raise StoreError(f"no evaluation {evaluation_id}")
    log, status, error = rows[0]
    return log or f"(no output captured; status {status}{': ' + error if error else ''})"
