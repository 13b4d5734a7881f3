"""The settings of a run, validated where they are built, with messages that say what to change."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from evo.errors import ConfigError
from evo.selection import SELECTIONS

# Flags that may change when a run is resumed (the stop conditions); everything else must match the stored run.
EXTENDABLE = ("evaluations", "hours")
CONFIRMS = ("elites", "close")
# Settings that describe where and how this invocation runs rather than what the run is.
PER_INVOCATION = ("db", "address", "resume", "workers", "quiet", "allow_unshielded")


@dataclass(frozen=True)
class RunConfig:
    population: int = 16
    evaluations: int | None = None          # search evaluations (children trained); None: until --hours
    hours: float | None = None
    budget_seconds: float | None = None
    budget_tokens: int | None = None
    operators: dict = field(default_factory=lambda: {"hyper": 1.0, "merge": 1.0})
    selection: str = "tournament"
    tournament_size: int = 3
    elites: int = 2
    workers: int | None = None              # None: one per GPU, else one per 2 CPU cores (at least 1)
    address: str | None = None
    db: str = "evo.duckdb"
    resume: bool = False
    seed: int = 0
    train: str = "train.py"
    program: str = "program.md"
    model: str | None = None
    max_llm_cost: float | None = None
    noise_seeds: int = 3                     # evaluations of the seed genome that measure the noise floor
    confirm_seeds: int = 2                   # extra fresh-seed evaluations for each elite
    confirm: str = "elites"                  # elites: every elite; close: only an elite that luck could have put there
    adaptive_steps: bool = False             # hyper.mutate's step size follows its success rate (the 1/5 rule)
    preflight: bool = True
    time_limit: float | None = None          # wall-clock limit of one training phase; None: from the budget
    memory_mb: float = 0                     # resident-memory limit per evaluation; 0: none
    quiet: bool = False
    allow_unshielded: bool = False           # search even where training cannot run behind evo.shield

    def __post_init__(self):
        if self.population < 2:
            raise ConfigError(f"--population must be at least 2; got {self.population}")
        if not 2 <= self.tournament_size <= self.population:
            raise ConfigError(f"--tournament-size must be between 2 and the population size ({self.population}); "
                              f"got {self.tournament_size}")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"--selection must be one of {', '.join(SELECTIONS)}; got {self.selection!r}")
        if not 0 <= self.elites < self.population:
            raise ConfigError(f"--elites must be between 0 and {self.population - 1}; got {self.elites}")
        if self.evaluations is not None and self.evaluations < 1:
            raise ConfigError(f"--evaluations must be at least 1; got {self.evaluations}")
        if self.hours is not None and not self.hours > 0:
            raise ConfigError(f"--hours must be positive; got {self.hours:g}")
        if self.budget_seconds is not None and self.budget_tokens is not None:
            raise ConfigError("give --budget-seconds or --budget-tokens, not both")
        if self.budget_seconds is not None and not self.budget_seconds > 0:
            raise ConfigError(f"--budget-seconds must be positive; got {self.budget_seconds:g}")
        if self.budget_tokens is not None and self.budget_tokens < 1:
            raise ConfigError(f"--budget-tokens must be positive; got {self.budget_tokens}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers must be at least 1; got {self.workers}")
        if self.max_llm_cost is not None and self.max_llm_cost < 0:
            raise ConfigError(f"--max-llm-cost must be 0 or more; got {self.max_llm_cost:g}")
        if self.noise_seeds < 2:
            raise ConfigError(f"--noise-seeds must be at least 2 (a spread needs two draws); got {self.noise_seeds}")
        if self.confirm_seeds < 1:
            raise ConfigError(f"--confirm-seeds must be at least 1; got {self.confirm_seeds}")
        if self.confirm not in CONFIRMS:
            raise ConfigError(f"--confirm must be one of {', '.join(CONFIRMS)}; got {self.confirm!r}")
        if self.memory_mb < 0:
            raise ConfigError(f"--memory-mb must be 0 or more; got {self.memory_mb:g}")
        if not self.operators or any(not w > 0 for w in self.operators.values()):
            raise ConfigError("--operators needs at least one operator with a positive weight")

    def stored(self) -> dict:
        """The settings that define the run, as stored in the runs table (JSON-ready)."""
        d = dataclasses.asdict(self)
        for key in PER_INVOCATION:
            d.pop(key, None)
        return d

    def with_stored(self, stored: dict, given: set[str]) -> "RunConfig":
        """This invocation resumed onto a stored run: the stored settings win; a flag the user gave that
        conflicts with them is refused, except the stop conditions, which the new value extends."""
        merged = {}
        for name, value in stored.items():
            mine = getattr(self, name, value)
            if name in given and name not in EXTENDABLE and _normal(mine) != _normal(value):
                raise ConfigError(f"--{name.replace('_', '-')} {_show(mine)} conflicts with the stored run's "
                                  f"{_show(value)}; drop the flag to resume, or start a new run with another --db")
            merged[name] = mine if (name in given and name in EXTENDABLE) else value
        for key in PER_INVOCATION:
            merged[key] = getattr(self, key)
        return RunConfig(**{k: v for k, v in merged.items() if k in {f.name for f in dataclasses.fields(self)}})


def _normal(value):
    return json.loads(json.dumps(value))


def _show(value) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}={v:g}" for k, v in value.items())
    return str(value)


def read_text_file(path: str, flag: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{flag} {path}: no such file")
    try:
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{flag} {path}: cannot be read ({e})") from None
