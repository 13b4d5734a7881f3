"""Run settings: validated where they are built; --resume keeps the stored run's settings."""

import subprocess
import sys

import pytest

from evo.choices import SELECTIONS
from evo.config import EvalConfig, RunConfig
from evo.errors import ConfigError
from evo.search.selection import SELECTORS


def test_resume_keeps_stored_settings_and_extends_stop_conditions():
    stored = RunConfig(population=8, evaluations=10, budget_tokens=5000).stored()
    resumed = RunConfig(evaluations=20, db="x.duckdb", resume=True).with_stored(stored, {"evaluations", "db"})
    assert resumed.population == 8 and resumed.budget_tokens == 5000
    assert resumed.evaluations == 20 and resumed.db == "x.duckdb"
    kept = RunConfig(resume=True).with_stored(stored, set())
    assert kept.evaluations == 10


def test_resume_refuses_a_conflicting_flag_in_one_line():
    stored = RunConfig(population=8, evaluations=10).stored()
    with pytest.raises(ConfigError, match="--population 16 conflicts with the stored run's 8"):
        RunConfig(population=16).with_stored(stored, {"population"})
    assert RunConfig(population=8).with_stored(stored, {"population"}).population == 8  # same value is fine


@pytest.mark.parametrize("kwargs, message", [
    ({"population": 1}, "--population must be at least 2"),
    ({"tournament_size": 17}, "--tournament-size must be between 2 and the population size (16)"),
    ({"selection": "roulette"}, "--selection must be one of"),
    ({"elites": 16}, "--elites must be between 0 and 15"),
    ({"budget_seconds": 1, "budget_tokens": 1}, "not both"),
    ({"hours": 0}, "--hours must be positive"),
    ({"islands": 0}, "--islands must be between 1 and half the population (8); got 0"),
    ({"population": 6, "islands": 4}, "--islands must be between 1 and half the population (3); got 4"),
    ({"memory_mb": -1}, "--memory-mb must be a number of MiB, 0 (no limit) or more; got -1"),
    ({"disk_mb": float("nan")}, "--disk-mb must be a number of MiB, 0 (no limit) or more; got nan"),
])
def test_bad_settings_say_what_to_change(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RunConfig(**kwargs)


def test_evo_eval_takes_the_same_limits_as_a_run():
    assert (EvalConfig().memory_mb, EvalConfig().disk_mb) == (RunConfig().memory_mb, RunConfig().disk_mb) == (0, 4096)
    with pytest.raises(ConfigError, match="--disk-mb must be a number of MiB"):
        EvalConfig(disk_mb=-5)


def test_the_selection_methods_are_read_without_the_policy_and_each_has_its_selector():
    assert tuple(SELECTORS) == SELECTIONS
    loaded = subprocess.run([sys.executable, "-c", "import sys, evo.config; "
                             "print(sorted(m for m in sys.modules if m.startswith(('evo.search', 'deap'))))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
