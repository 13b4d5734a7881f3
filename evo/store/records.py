"""Plain, frozen records the store's reads return: one per row of runs, individuals, evaluations and fitness.

Rows come out of DuckDB as tuples; `from_row(columns, row)` builds a record from a row whose columns are named
like the record's fields (extra columns are ignored)."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any


def _from_row(cls, columns: list[str], row: tuple, **extra):
    names = {f.name for f in fields(cls)}
    values = {c: v for c, v in zip(columns, row) if c in names}
    values.update(extra)
    return cls(**values)


@dataclass(frozen=True)
class Run:
    """A run: its settings (config), the engine's resumable state (None until first saved) and its status."""

    run_id: str
    status: str
    config: dict
    state: dict | None
    started_at: datetime
    finished_at: datetime | None = None
    state_saved_at: datetime | None = None
    noise_floor: float | None = None
    hostname: str | None = None
    pid: int | None = None

    @classmethod
    def from_row(cls, columns: list[str], row: tuple) -> "Run":
        d = dict(zip(columns, row))
        return _from_row(cls, columns, row, config=json.loads(d["config"]),
                         state=None if d["state"] is None else json.loads(d["state"]))


@dataclass(frozen=True)
class Individual:
    """One proposal of a run and its place in the lineage. parents are ordered (parent, second_parent); source is
    filled only when asked for (it can be large)."""

    run_id: str
    id: str
    uid: int
    birth: int
    generation: int
    operator: str
    description: str
    source_hash: str | None
    status: str
    reason: str | None
    in_population: bool
    created_at: datetime
    updated_at: datetime
    parents: tuple[str, ...] = ()
    source: str | None = None

    @classmethod
    def from_row(cls, columns: list[str], row: tuple) -> "Individual":
        d = dict(zip(columns, row))
        parents = tuple(p for p in (d.get("parent"), d.get("second_parent")) if p is not None)
        return _from_row(cls, columns, row, parents=parents)


@dataclass(frozen=True)
class Evaluation:
    """One evaluation as stored (without its log: ask StoreReader.evaluation_log for that)."""

    id: int
    run_id: str
    individual_id: str
    purpose: str
    status: str
    seed: int | None = None
    budget_seconds: float | None = None
    budget_tokens: int | None = None
    val_bpb: float | None = None
    test_bpb: float | None = None
    training_seconds: float | None = None
    eval_seconds: float | None = None
    total_seconds: float | None = None
    tokens: int | None = None
    num_steps: int | None = None
    num_params: int | None = None
    peak_memory_mb: float | None = None
    worker: str | None = None
    device: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    conditions: dict | None = None    # what the score depends on besides seed and budget (evo.conditions)
    limits: str | None = None         # what held training's memory and process limits

    @classmethod
    def from_row(cls, columns: list[str], row: tuple) -> "Evaluation":
        d = dict(zip(columns, row))
        return _from_row(cls, columns, row, conditions=json.loads(d["conditions"]) if d.get("conditions") else None)


@dataclass(frozen=True)
class Fitness:
    """A row of the fitness view: an individual's ok evaluations summed up, and its noise-aware score
    (mean_bpb + k * std_err; lower is better; see schema.py)."""

    run_id: str
    individual_id: str
    n: int
    n_confirm: int
    mean_bpb: float
    std_bpb: float | None
    best_bpb: float
    std_err: float
    score: float

    @classmethod
    def from_row(cls, columns: list[str], row: tuple) -> "Fitness":
        return _from_row(cls, columns, row)


@dataclass(frozen=True)
class LineageStep:
    """One individual on the line from the seed to another (first parents only), with its fitness so far."""

    id: str
    depth: int                      # steps from the individual the line was asked for (0: that one)
    operator: str
    description: str
    status: str
    parent: str | None
    second_parent: str | None
    mean_bpb: float | None
    std_bpb: float | None
    n: int
    source_hash: str | None
    source: str | None = None
    reason: str | None = None       # why rejected, invalid or a duplicate ("disqualified: ..." for a cheat)

    @classmethod
    def from_row(cls, columns: list[str], row: tuple) -> "LineageStep":
        return _from_row(cls, columns, row)


def as_mapping(record: Any) -> dict:
    """A dataclass instance, a mapping, or any object with attributes, as a plain dict of its fields."""
    if isinstance(record, dict):
        return dict(record)
    if hasattr(record, "__dataclass_fields__"):
        return {f.name: getattr(record, f.name) for f in fields(record)}
    return dict(vars(record))
