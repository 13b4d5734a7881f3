"""LLM settings from an environment mapping, availability, and the cost estimate (no network)."""

import pytest

from operators import (
    DEFAULT_MODEL,
    UNAVAILABLE,
    LLMClient,
    LLMSettings,
    check_available,
    settings_from_env,
)
from operators.errors import OperatorConfigError, OperatorUnavailable
from operators.usage import PRICES, LLMUsage, estimate_cost


def test_settings_come_from_the_given_environment_mapping_and_overrides():
    settings = settings_from_env({"ANTHROPIC_API_KEY": "sk-test", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9/"},
                                 model="claude-opus-5-5", max_cost_usd=2.5, timeout_s=None)
    assert settings.api_key == "sk-test" and settings.base_url == "http://127.0.0.1:9"
    assert settings.model == "claude-opus-5-5" and settings.max_cost_usd == 2.5
    assert settings.timeout_s == LLMSettings().timeout_s  # None means "not given"
    assert "sk-test" not in repr(settings)
    assert settings_from_env({}).model == DEFAULT_MODEL


def test_without_a_key_the_llm_operators_are_unavailable_in_one_line():
    settings = settings_from_env({"ANTHROPIC_BASE_URL": "http://127.0.0.1:9"})
    assert not settings.available
    with pytest.raises(OperatorUnavailable) as e:
        check_available(settings)
    assert str(e.value) == UNAVAILABLE and "\n" not in UNAVAILABLE and "ANTHROPIC_API_KEY" in UNAVAILABLE
    with pytest.raises(OperatorUnavailable):
        LLMClient(settings)
    check_available(settings_from_env({"ANTHROPIC_API_KEY": "k"}))


@pytest.mark.parametrize("kwargs, words", [
    ({"timeout_s": 0}, "timeout"),
    ({"max_retries": -1}, "retry"),
    ({"max_concurrent": 0}, "concurrency"),
    ({"max_cost_usd": -1.0}, "--max-llm-cost"),
    ({"model": ""}, "--model"),
    ({"base_url": "api.anthropic.com"}, "ANTHROPIC_BASE_URL"),
])
def test_bad_settings_say_what_to_change(kwargs, words):
    with pytest.raises(OperatorConfigError, match=words):
        LLMSettings(api_key="k", **kwargs)


def test_cost_is_estimated_from_the_model_family_prices():
    cost, note = estimate_cost("claude-sonnet-5-5", 1_000_000, 100_000, 200_000, 2_000_000)
    p_in, p_out, p_write, p_read = PRICES["sonnet"]
    assert cost == pytest.approx(p_in + 0.1 * p_out + 0.2 * p_write + 2 * p_read)
    assert note == ""
    opus, _ = estimate_cost("claude-opus-5-5", 1_000_000, 0)
    haiku, _ = estimate_cost("claude-haiku-5-5", 1_000_000, 0)
    assert opus > cost / 2 > haiku


def test_an_unknown_model_is_priced_as_the_default_family_and_says_so():
    cost, note = estimate_cost("my-local-model", 1_000_000, 0)
    assert cost == pytest.approx(PRICES["sonnet"][0])
    assert "unknown model 'my-local-model'" in note


def test_a_usage_record_refuses_impossible_values():
    with pytest.raises(ValueError):
        LLMUsage("llm.mutate", "m", "fine")
    with pytest.raises(ValueError):
        LLMUsage("llm.mutate", "m", "ok", input_tokens=-1)
