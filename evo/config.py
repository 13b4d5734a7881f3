"""The settings of a run, validated where they are built, with messages that say what to change."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from evo.choices import SELECTIONS
from evo.errors import ConfigError
from evo.sandbox.budget import Budget
from evo.sandbox.environment import check_names
from evo.sandbox.supervise import Limits


def flag(help: str, *, metavar: str | None = None, group: str | None = None, exclusive: str | None = None,
         name: str | None = None, cli_default=dataclasses.MISSING, negate: bool = False, repeat: bool = False) -> dict:
    """A setting's command-line flag, kept beside the setting (the CLI builds its flags from these): help text,
    metavar, an argument group or a mutually exclusive group, another flag name, the default the command line
    shows when it differs from the setting's own, for a boolean that is on by default, a --no-NAME flag, and for
    a tuple, a flag given once per value (repeat)."""
    return {"flag": {"help": help, "metavar": metavar, "group": group, "exclusive": exclusive, "name": name,
                     "cli_default": cli_default, "negate": negate, "repeat": repeat}}


def setting(default, help: str, **kwargs):
    """A dataclass field with its flag (see flag())."""
    if callable(default) and not isinstance(default, (int, float, str, bool)):
        return field(default_factory=default, metadata=flag(help, **kwargs))
    return field(default=default, metadata=flag(help, **kwargs))


MEMORY_HELP = ("memory limit of each phase of an evaluation, all its processes together, shared memory included "
               "(default none)")
DISK_HELP = ("what each phase of an evaluation may leave in the folders it can write, and hand over as its model "
             "(default 4096; 0: none)")
DEFAULT_DISK_MB = Limits.disk_mb
ENV_HELP = ("pass the environment variable NAME, with its value here, to training and scoring (repeatable); "
            "they get only the locale, thread, CUDA and path variables otherwise")
# Flags that may change when a run is resumed (the stop conditions); everything else must match the stored run.
EXTENDABLE = ("evaluations", "hours")
CONFIRMS = ("elites", "close", "final")
# Settings that describe where and how this invocation runs rather than what the run is.
PER_INVOCATION = ("db", "address", "resume", "workers", "quiet", "allow_unshielded", "accept_changes",
                  "llm_timeout")


@dataclass(frozen=True)
class RunConfig:
    population: int = setting(16, "population size (default 16)")
    evaluations: int | None = setting(None, "search evaluations to run (default 32)", metavar="N",
                                      group="stop conditions (extendable with --resume)")
    hours: float | None = setting(None, "hours of searching", metavar="H",
                                  group="stop conditions (extendable with --resume)")
    budget_seconds: float | None = setting(None, "training budget per evaluation, seconds", metavar="S",
                                           exclusive="budget")
    budget_tokens: int | None = setting(None, "training budget per evaluation, tokens", metavar="N",
                                        exclusive="budget")
    operators: dict = setting(lambda: {"hyper": 1.0, "merge": 1.0},
                              "operator mix, e.g. hyper,merge,llm or hyper=3,llm=1 (default hyper,merge,llm)",
                              cli_default="hyper,merge,llm")
    selection: str = setting("tournament", "tournament, best or random (default tournament)")
    tournament_size: int = setting(3, "contestants per tournament (default 3)")
    elites: int = setting(2, "best members always kept and confirmed (default 2)")
    workers: int | None = setting(None, "evaluations at once (default: one per GPU, else cores / 2)")
    address: str | None = setting(None, "join this Ray cluster (HOST:PORT) instead of starting a local one")
    db: str = setting("evo.duckdb", "the store (default evo.duckdb)")
    resume: bool = setting(False, "continue the latest run in --db")
    seed: int = setting(0, "the run's random seed (default 0)")
    train: str = setting("train.py", "the seed genome (default train.py)")
    program: str = setting("program.md", "the research direction (default program.md)")
    model: str | None = setting(None, "Claude model for the LLM operators")
    max_llm_cost: float | None = setting(None, "stop making LLM calls past this spend", metavar="USD")
    llm_timeout: float = setting(300.0, "seconds one LLM call may take before it is retried (default 300)",
                                 metavar="S")
    noise_seeds: int = setting(3, "seeds the seed genome is measured on (default 3)")
    confirm_seeds: int = setting(2, "fresh seeds each elite is confirmed on (default 2)")
    confirm: str = setting("elites", "which elites are confirmed: elites (every one), close (one only while "
                                     "another member is within two noise floors of it) or final (none during the "
                                     "search); the best is always confirmed before the end (default elites)")
    bounds: dict = setting(dict, "bounds the hyper operators keep each named constant within, and hyper.sample "
                                 "draws it over, e.g. LEARNING_RATE=3e-4:3e-2,DEPTH=1:4 (default none)",
                           metavar="NAME=LOW:HIGH,...")
    islands: int = setting(1, "split the population into N islands that select and replace within themselves, "
                              "each one's best copied to the next every few children (default 1)", metavar="N")
    adaptive_steps: bool = setting(False, "hyper.mutate's step size follows its success rate (the 1/5 rule)")
    adaptive_operators: bool = setting(False, "operators whose children beat their parents more often are drawn "
                                              "more often (each operator's weight times its success rate)")
    preflight: bool = setting(True, "skip the one-step pre-flight", negate=True)
    time_limit: float | None = setting(None, "wall-clock limit per training (default: budget)", metavar="S")
    memory_mb: float = setting(0, MEMORY_HELP, metavar="MB")
    disk_mb: float = setting(DEFAULT_DISK_MB, DISK_HELP, metavar="MB")
    env: tuple = setting(tuple, ENV_HELP, metavar="NAME", repeat=True)
    quiet: bool = setting(False, "no live view; only the final lines")
    allow_unshielded: bool = setting(False, "search even where training cannot be shielded (children could then "
                                            "forge their scores)")
    accept_changes: bool = setting(False, "with --resume: go on where the run's conditions (threads, device, CPU, "
                                          "torch, harness, data) cannot be reproduced; the store records the change")

    def __post_init__(self):
        object.__setattr__(self, "env", check_names(self.env))  # a stored run's list, or the flags' values
        if self.population < 2:
            raise ConfigError(f"--population must be at least 2; got {self.population}")
        if not 2 <= self.tournament_size <= self.population:
            raise ConfigError(f"--tournament-size must be between 2 and the population size ({self.population}); "
                              f"got {self.tournament_size}")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"--selection must be one of {', '.join(SELECTIONS)}; got {self.selection!r}")
        if not 0 <= self.elites < self.population:
            raise ConfigError(f"--elites must be between 0 and {self.population - 1}; got {self.elites}")
        if self.islands < 1 or self.population // self.islands < 2:
            raise ConfigError(f"--islands must be between 1 and half the population ({self.population // 2}); "
                              f"got {self.islands}")
        if self.evaluations is not None and self.evaluations < 1:
            raise ConfigError(f"--evaluations must be at least 1; got {self.evaluations}")
        if self.hours is not None and not self.hours > 0:
            raise ConfigError(f"--hours must be positive; got {self.hours:g}")
        _check_budget(self.budget_seconds, self.budget_tokens)
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers must be at least 1; got {self.workers}")
        if self.max_llm_cost is not None and self.max_llm_cost < 0:
            raise ConfigError(f"--max-llm-cost must be 0 or more; got {self.max_llm_cost:g}")
        if not self.llm_timeout > 0:
            raise ConfigError(f"--llm-timeout must be positive; got {self.llm_timeout:g}")
        if self.noise_seeds < 2:
            raise ConfigError(f"--noise-seeds must be at least 2 (a spread needs two draws); got {self.noise_seeds}")
        if self.confirm_seeds < 1:
            raise ConfigError(f"--confirm-seeds must be at least 1; got {self.confirm_seeds}")
        if self.confirm not in CONFIRMS:
            raise ConfigError(f"--confirm must be one of {', '.join(CONFIRMS)}; got {self.confirm!r}")
        check_limits(self.memory_mb, self.disk_mb)
        if not self.operators or any(not w > 0 for w in self.operators.values()):
            raise ConfigError("--operators needs at least one operator with a positive weight")
        for name, bound in self.bounds.items():
            if not (isinstance(bound, (list, tuple)) and len(bound) == 2
                    and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bound)
                    and bound[0] < bound[1]):
                raise ConfigError(f"--bounds {name}: needs LOW:HIGH with LOW below HIGH; got {bound!r}")

    @property
    def budget(self) -> Budget:
        """The training budget per evaluation (ConfigError where neither flag is given: launch.settle fills in
        the harness's default first, with_default_budget)."""
        return Budget(seconds=self.budget_seconds, tokens=self.budget_tokens)

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


@dataclass(frozen=True)
class EvalConfig:
    """The settings of one `evo eval`."""

    budget_seconds: float | None = setting(None, "training budget in seconds", metavar="S", exclusive="budget")
    budget_tokens: int | None = setting(None, "training budget in tokens", metavar="N", exclusive="budget")
    seed: int | None = setting(None, "evaluation seed (default: the harness's)")
    time_limit: float | None = setting(None, "wall-clock limit of training (default: from budget)", metavar="S")
    threads: int | None = setting(None, "torch threads (default: torch's own choice)", metavar="N")
    test: bool = setting(False, "also score the test split (test_bpb), which `evo run` never selects on")
    env: tuple = setting(tuple, ENV_HELP, metavar="NAME", repeat=True)
    memory_mb: float = setting(0, MEMORY_HELP, metavar="MB")
    disk_mb: float = setting(DEFAULT_DISK_MB, DISK_HELP, metavar="MB")

    def __post_init__(self):
        object.__setattr__(self, "env", check_names(self.env))
        check_limits(self.memory_mb, self.disk_mb)
        if self.seed is not None and self.seed < 0:
            raise ConfigError(f"--seed must be 0 or more; got {self.seed}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be 1 or more; got {self.threads}")
        if self.time_limit is not None and not self.time_limit > 0:
            raise ConfigError(f"--time-limit must be positive; got {self.time_limit:g}")
        _check_budget(self.budget_seconds, self.budget_tokens)

    @property
    def budget(self) -> Budget:
        """The training budget (ConfigError where neither flag is given: evaluate_file fills in the harness's
        default first, with_default_budget)."""
        return Budget(seconds=self.budget_seconds, tokens=self.budget_tokens)


@dataclass(frozen=True)
class ReplayConfig:
    """The settings of one `evo replay`."""

    seeds: int | None = setting(None, "fresh seeds, shared by every step (default 3)", metavar="K",
                                exclusive="seeds")
    same_seeds: bool = setting(False, "each individual's recorded seeds", exclusive="seeds")
    ablate: bool = setting(False, "remove each step from ID alone and re-evaluate")
    workers: int | None = setting(None, "evaluations at once (default: the run's)")
    address: str | None = setting(None, "a Ray cluster to run on (HOST:PORT)")

    def __post_init__(self):
        if self.seeds is not None and self.seeds < 1:
            raise ConfigError(f"--seeds must be at least 1; got {self.seeds}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers must be at least 1; got {self.workers}")

    @staticmethod
    def budget_of(run_config: dict) -> Budget:
        """The budget a replay evaluates with: the stored run's own (its settings as the runs table holds them)."""
        return Budget(seconds=run_config.get("budget_seconds"), tokens=run_config.get("budget_tokens"))


def with_default_budget(config, default_seconds: float):
    """config (a RunConfig or an EvalConfig) with the harness's default budget, default_seconds, where neither
    --budget-seconds nor --budget-tokens was given; its .budget is then always a Budget."""
    if config.budget_seconds is None and config.budget_tokens is None:
        return dataclasses.replace(config, budget_seconds=float(default_seconds))
    return config


def _check_budget(seconds: float | None, tokens: int | None) -> None:
    """--budget-seconds and --budget-tokens, where either is given: Budget checks them (neither: the harness's
    default, filled in later)."""
    if seconds is not None or tokens is not None:
        Budget(seconds=seconds, tokens=tokens)


def check_limits(memory_mb: float, disk_mb: float) -> None:
    """--memory-mb and --disk-mb, shared by evo run and evo eval: finite, 0 (no limit) or more."""
    for name, value in (("--memory-mb", memory_mb), ("--disk-mb", disk_mb)):
        if not (isinstance(value, (int, float)) and 0 <= value < float("inf")):
            raise ConfigError(f"{name} must be a number of MiB, 0 (no limit) or more; got {value:g}")


def parse_bounds(text: str | None) -> dict:
    """--bounds "NAME=LOW:HIGH,..." as {name: (low, high)}; ConfigError with the offending part otherwise."""
    bounds: dict = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, eq, rest = part.partition("=")
        low, colon, high = rest.partition(":")
        try:
            if not (eq and colon and name.strip()):
                raise ValueError
            values = tuple(int(v) if v.strip().lstrip("+-").isdigit() else float(v) for v in (low, high))
        except ValueError:
            raise ConfigError(f"--bounds: {part.strip()!r} is not NAME=LOW:HIGH (e.g. LEARNING_RATE=3e-4:3e-2)") \
                from None
        bounds[name.strip()] = values
    return bounds


def _normal(value):
    return json.loads(json.dumps(value))


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) if value else "(none)"
    if isinstance(value, dict):
        return ",".join(f"{k}={v[0]:g}:{v[1]:g}" if isinstance(v, (list, tuple)) else f"{k}={v:g}"
                        for k, v in value.items())
    return str(value)


def read_text_file(path: str, flag: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{flag} {path}: no such file")
    try:
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{flag} {path}: cannot be read ({e})") from None
