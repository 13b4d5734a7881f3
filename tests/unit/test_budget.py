"""evo.sandbox.budget.Budget: the one training budget, checked in one place and built once by the config."""

import pytest

from evo.config import EvalConfig, ReplayConfig, RunConfig, with_default_budget
from evo.errors import ConfigError
from evo.sandbox.budget import Budget


@pytest.mark.parametrize("kwargs, message", [
    ({"seconds": 1, "tokens": 1}, "give --budget-seconds or --budget-tokens, not both"),
    ({}, "give --budget-seconds or --budget-tokens (a training budget is needed)"),
    ({"seconds": 0}, "--budget-seconds must be positive; got 0"),
    ({"seconds": float("nan")}, "--budget-seconds must be positive; got nan"),
    ({"tokens": -5}, "--budget-tokens must be positive; got -5"),
    ({"tokens": True}, "--budget-tokens must be positive; got True"),
    ({"tokens": "100"}, "--budget-tokens must be positive; got '100'"),
])
def test_a_bad_budget_is_one_line_naming_the_flag(kwargs, message):
    with pytest.raises(ConfigError) as caught:
        Budget(**kwargs)
    assert str(caught.value) == message


@pytest.mark.parametrize("config", [RunConfig, EvalConfig])
def test_the_configs_check_through_budget_and_build_it(config):
    with pytest.raises(ConfigError, match="^--budget-tokens must be positive; got 0$"):
        config(budget_tokens=0)
    assert config(budget_tokens=4096).budget == Budget(tokens=4096)
    assert with_default_budget(config(), 300).budget == Budget(seconds=300.0)
    assert with_default_budget(config(budget_tokens=10), 300).budget == Budget(tokens=10)


def test_a_replay_keeps_the_stored_runs_budget_and_records_carry_it_as_fields():
    stored = RunConfig(budget_seconds=60.0).stored()
    assert ReplayConfig.budget_of(stored) == Budget(seconds=60.0)
    assert Budget(tokens=8192).fields() == {"budget_seconds": None, "budget_tokens": 8192}
    assert Budget(seconds=5.0).describe() == "5 s" and Budget(tokens=8192).describe() == "8,192 tokens"
