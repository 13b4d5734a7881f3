"""llm.mutate and llm.crossover through the real `anthropic` client, against a local server that speaks the
Messages API and answers from a per-test script. Every scripted answer ends as a valid child or a recorded
`invalid`, never as an exception out of the operator."""

import dataclasses
import random
import threading
import time

import pytest

from genome import Genome, hyperparameters, validate, values
from operators import (
    Attempt,
    Lineage,
    LLMClient,
    LLMContext,
    LLMSettings,
    OperatorContext,
    Step,
    get,
    settings_from_env,
)
from operators.errors import OperatorUnavailable
from operators.usage import estimate_cost
from tests.support.genomes import seed_source, with_hyperparameters
from tests.support.messages_server import MessagesServer, Reply, error, message

SEED = seed_source()
PARENT = Genome.seed(SEED)
MODEL = "claude-sonnet-5-5"
CONTEXT = LLMContext(
    program="Lower val_bpb within the fixed budget. Prefer simple changes.",
    parent=Lineage(1.62, (Step("LEARNING_RATE 3e-3 -> 4e-3 (x1.33)", "hyper.mutate", 1.63, -0.012),)),
    recent=(Attempt("DEPTH 2 -> 4", "discarded", "hyper.mutate", 0.04),
            Attempt("switch the MLP to GELU", "crash", "llm.mutate", None, "shape mismatch in MLP")),
    noise_bpb=0.01,
)


def _line(name: str) -> str:
    return next(line for line in SEED.split("\n") if line.startswith(f"{name} ="))


def _retuned(name: str, text: str) -> str:
    """The parent's line for hyperparameter name, with its literal replaced by text."""
    return _line(name).replace(hyperparameters(SEED)[name].text, text, 1)


def edit(name: str, text: str) -> str:
    return f"<<<<<<< SEARCH\n{_line(name)}\n=======\n{_retuned(name, text)}\n>>>>>>> REPLACE\n"


GOOD = "Hypothesis: a lower peak learning rate is more stable at this width.\n\n" + edit("LEARNING_RATE", "1e-3")
NOT_APPLYING = ("Hypothesis: a lower peak learning rate is more stable.\n\n<<<<<<< SEARCH\nLEARNING_RATE = 0.003"
                "\n=======\nLEARNING_RATE = 0.001\n>>>>>>> REPLACE\n")


@pytest.fixture
def server():
    with MessagesServer() as s:
        yield s


def client_for(server: MessagesServer, **overrides) -> LLMClient:
    settings = dict(api_key="test-key", base_url=server.url, model=MODEL, timeout_s=5.0, max_retries=2)
    return LLMClient(LLMSettings(**{**settings, **overrides}))


def sent_key(headers: dict) -> str | None:
    """The API key a request carried (the client sends x-api-key, or a bearer token in newer versions)."""
    bearer = headers.get("authorization", "")
    return headers.get("x-api-key") or (bearer[len("Bearer "):] if bearer.startswith("Bearer ") else None)


def mutate(client: LLMClient, parent: Genome = PARENT, context: LLMContext = CONTEXT):
    return get("llm.mutate")([parent], random.Random(0), OperatorContext(client=client, context=context))


def assert_lowered_learning_rate(variation):
    assert variation.ok, variation.reason
    assert values(variation.source) == {**values(SEED), "LEARNING_RATE": 1e-3}
    assert validate(variation.source).ok


def test_a_good_edit_makes_a_valid_child(server):
    server.script(message(GOOD))
    client = client_for(server)
    variation = mutate(client)
    assert_lowered_learning_rate(variation)
    assert variation.operator == "llm.mutate"
    assert variation.description == "a lower peak learning rate is more stable at this width. [+1/-1]"
    assert [u.status for u in variation.usage] == ["ok"]
    assert sent_key(server.headers[0]) == "test-key"
    assert server.requests[0]["model"] == MODEL


def test_edits_wrapped_in_prose_and_fences_apply(server):
    answer = ("Looking at the schedule and the optimiser, I think the step size is the issue.\n\n"
              "**Hypothesis:** a lower peak learning rate is more stable.\n\nHere is the change:\n\n```python\n"
              + edit("LEARNING_RATE", "1e-3") + "```\n\nThis should reduce loss spikes early in training.")
    server.script(message(answer))
    variation = mutate(client_for(server))
    assert_lowered_learning_rate(variation)
    assert variation.description.startswith("a lower peak learning rate is more stable.")


def test_a_full_file_answer_in_a_code_fence_is_accepted(server):
    new = SEED.replace(_line("LEARNING_RATE"), _retuned("LEARNING_RATE", "1e-3"))
    server.script(message(f"Hypothesis: lower learning rate.\n\nThe whole file:\n\n```python\n{new}```\n"))
    variation = mutate(client_for(server))
    assert_lowered_learning_rate(variation)
    assert variation.source == new


def test_an_edit_that_does_not_apply_gets_one_repair_attempt(server):
    server.script(message(NOT_APPLYING), message(GOOD))
    variation = mutate(client_for(server))
    assert_lowered_learning_rate(variation)
    assert [u.purpose for u in variation.usage] == ["propose", "repair"]
    assert "repaired" in variation.description
    repair = server.requests[1]
    assert [m["role"] for m in repair["messages"]] == ["user", "assistant", "user"]
    assert repair["messages"][1]["content"] == NOT_APPLYING
    feedback = repair["messages"][2]["content"]
    assert "do not occur in the parent" in feedback and _line("LEARNING_RATE") in feedback  # the closest lines
    assert repair["messages"][0] == server.requests[0]["messages"][0]  # the cached prefix is reused as is


def test_an_edit_that_still_does_not_apply_after_the_repair_is_invalid(server):
    server.script(message(NOT_APPLYING), message(NOT_APPLYING))
    variation = mutate(client_for(server))
    assert variation.status == "invalid" and variation.source is None
    assert "do not occur in the parent" in variation.reason and "after one repair attempt" in variation.reason
    assert len(server.requests) == 2 and len(variation.usage) == 2


def test_edits_that_break_the_syntax_get_the_repair_too(server):
    broken = "Hypothesis: x\n" + edit("LEARNING_RATE", "1e-3 +")
    server.script(message(broken), message(GOOD))
    variation = mutate(client_for(server))
    assert_lowered_learning_rate(variation)
    assert "does not parse" in server.requests[1]["messages"][2]["content"]


def test_garbage_is_invalid_without_a_repair(server):
    server.script(message("As an optimisation enthusiast I feel the model is fine as it is. 42 %%% ###"))
    variation = mutate(client_for(server))
    assert variation.status == "invalid"
    assert "neither edit blocks nor a code block" in variation.reason
    assert len(server.requests) == 1 and [u.status for u in variation.usage] == ["ok"]


def test_a_body_that_is_not_a_message_is_invalid(server):
    server.script(Reply(200, b"<html>502 bad gateway</html>"))
    variation = mutate(client_for(server))
    assert variation.status == "invalid"
    assert [u.status for u in variation.usage] == ["error"]


def test_an_empty_answer_is_invalid(server):
    server.script(message(""))
    variation = mutate(client_for(server))
    assert variation.status == "invalid" and variation.reason == "the answer is empty"


@pytest.mark.parametrize("status", [529, 429, 500])
def test_a_529_then_success_is_retried_by_the_client_itself(server, status):
    server.script(error(status), message(GOOD))
    variation = mutate(client_for(server))
    assert_lowered_learning_rate(variation)
    assert len(server.requests) == 2  # the client's own retry
    assert len(variation.usage) == 1 and variation.usage[0].status == "ok"  # one call, one record


def test_529_until_the_retries_run_out_is_an_invalid_child_recorded_as_overloaded(server):
    server.script(error(529), error(529), error(529))
    variation = mutate(client_for(server, max_retries=2))
    assert variation.status == "invalid" and "overloaded" in variation.reason
    assert len(server.requests) == 3
    assert variation.usage[0].status == "overloaded" and variation.usage[0].cost_usd == 0


def test_a_timeout_then_success_makes_a_child(server):
    server.script(message(GOOD, delay=3.0), message(GOOD))
    start = time.monotonic()
    variation = mutate(client_for(server, timeout_s=0.5, max_retries=1))
    assert_lowered_learning_rate(variation)
    assert len(server.requests) == 2
    assert variation.usage[0].latency_s >= 0.5 and time.monotonic() - start < 3.0


def test_timeouts_until_the_retries_run_out_are_an_invalid_child_recorded_as_timeout(server):
    server.script(message(GOOD, delay=3.0), message(GOOD, delay=3.0))
    variation = mutate(client_for(server, timeout_s=0.5, max_retries=1))
    assert variation.status == "invalid" and "timeout" in variation.reason
    assert variation.usage[0].status == "timeout"


def test_requests_carry_cache_control_on_the_stable_prefix(server):
    server.script(message(GOOD), message(GOOD))
    client = client_for(server)
    mutate(client)
    other = LLMContext(program=CONTEXT.program, recent=(Attempt("other idea", "kept"),))
    get("llm.mutate")([PARENT], random.Random(99), OperatorContext(client=client, context=other))
    first, second = server.requests
    assert first["system"][-1]["cache_control"] == {"type": "ephemeral"}
    blocks = first["messages"][0]["content"]
    assert [b.get("cache_control") for b in blocks] == [{"type": "ephemeral"}, {"type": "ephemeral"}, None]
    assert CONTEXT.program in blocks[0]["text"]
    assert SEED in blocks[1]["text"]
    dynamic = blocks[2]["text"]
    for words in ("LEARNING_RATE 3e-3 -> 4e-3", "-0.0120", "discarded, +0.0400: DEPTH 2 -> 4",
                  "shape mismatch in MLP", "0.0100"):
        assert words in dynamic
    # The prefix is byte-for-byte the same across calls on one parent: that is what the cache matches.
    assert second["system"] == first["system"]
    assert second["messages"][0]["content"][:2] == blocks[:2]
    assert second["messages"][0]["content"][2] != blocks[2]


def test_the_run_s_bounds_are_in_the_request_and_out_of_the_cached_prefix(server):
    server.script(message(GOOD), message(GOOD))
    client = client_for(server)
    mutate(client)
    bounded = dataclasses.replace(CONTEXT, bounds=(("LEARNING_RATE", 3e-4, 3e-2), ("DEPTH", 1, 4)))
    mutate(client, context=bounded)
    plain, told = (r["messages"][0]["content"] for r in server.requests)
    assert "within bounds" not in plain[2]["text"]
    assert "LEARNING_RATE 0.0003 to 0.03, DEPTH 1 to 4" in told[2]["text"]
    assert told[:2] == plain[:2]
    with pytest.raises(ValueError, match="DEPTH"):
        LLMContext(bounds=(("DEPTH", 4, 1),))


def test_the_recorded_usage_matches_what_the_server_reported(server):
    server.script(message(GOOD, input_tokens=321, output_tokens=45, cache_read=2000, cache_write=500))
    client = client_for(server)
    variation = mutate(client)
    (usage,) = variation.usage
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == \
           (321, 45, 2000, 500)
    assert usage.cost_usd == pytest.approx(estimate_cost(MODEL, 321, 45, 500, 2000)[0]) and usage.cost_usd > 0
    assert usage.model == MODEL and usage.operator == "llm.mutate" and usage.status == "ok"
    assert usage.latency_s > 0 and usage.note == ""
    assert client.usage == (usage,) and client.spent_usd == pytest.approx(usage.cost_usd)


def test_the_spend_cap_stops_new_calls(server):
    server.default = message(GOOD, input_tokens=10_000)  # 10k input tokens cost about 3 cents
    client = client_for(server, max_cost_usd=0.01)
    assert mutate(client).ok
    with pytest.raises(OperatorUnavailable, match="spend cap"):
        mutate(client)
    assert len(server.requests) == 1
    resumed = client_for(server, max_cost_usd=1.0)
    with pytest.raises(OperatorUnavailable):
        LLMClient(resumed.settings, spent_usd=1.0).ensure_budget()


def test_no_repair_call_is_made_once_the_cap_is_reached(server):
    server.script(message(NOT_APPLYING, input_tokens=100_000))
    variation = mutate(client_for(server, max_cost_usd=0.05))
    assert variation.status == "invalid" and "spend cap" in variation.reason
    assert len(server.requests) == 1


def test_concurrent_calls_are_capped(server):
    server.default = message(GOOD, delay=0.3)
    client = client_for(server, max_concurrent=2)
    results = []
    threads = [threading.Thread(target=lambda: results.append(mutate(client))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 6 and all(v.ok for v in results)
    assert server.max_in_flight == 2


def test_a_refused_key_makes_the_llm_operators_unavailable(server):
    server.script(error(401, "invalid x-api-key"))
    with pytest.raises(OperatorUnavailable, match="refused the key"):
        mutate(client_for(server))


def test_settings_from_the_environment_reach_a_local_server(server):
    server.script(message(GOOD))
    client = LLMClient(settings_from_env({"ANTHROPIC_API_KEY": "sk-from-env", "ANTHROPIC_BASE_URL": server.url},
                                         timeout_s=5.0))
    assert_lowered_learning_rate(mutate(client))
    assert sent_key(server.headers[0]) == "sk-from-env"


def test_llm_crossover_combines_two_parents(server):
    a = Genome(with_hyperparameters(SEED, LEARNING_RATE="1e-3"), (PARENT.id,), "hyper.mutate")
    b = Genome(with_hyperparameters(SEED, DEPTH="3"), (PARENT.id,), "hyper.mutate")
    depth_edit = f"<<<<<<< SEARCH\n{_line('DEPTH')}\n=======\n{_retuned('DEPTH', '3')}\n>>>>>>> REPLACE\n"
    server.script(message("Hypothesis: A's learning rate with B's extra layer.\n" + depth_edit))
    context = LLMContext(program="p", parent=Lineage(1.60), other=Lineage(1.61), recent=CONTEXT.recent)
    variation = get("llm.crossover")([a, b], random.Random(0),
                                     OperatorContext(client=client_for(server), context=context, ancestor=PARENT))
    assert variation.ok, variation.reason
    assert values(variation.source) == {**values(SEED), "LEARNING_RATE": 1e-3, "DEPTH": 3}
    assert variation.operator == "llm.crossover"
    blocks = server.requests[0]["messages"][0]["content"]
    assert [b.get("cache_control") is not None for b in blocks] == [True, True, True, False]
    assert a.source in blocks[1]["text"] and b.source in blocks[2]["text"]
    dynamic = blocks[3]["text"]
    assert "+++ A/train.py" in dynamic and "+++ B/train.py" in dynamic
    assert "val_bpb 1.6000" in dynamic and "val_bpb 1.6100" in dynamic


def test_llm_crossover_with_garbage_is_invalid(server):
    server.script(message("no idea"))
    variation = get("llm.crossover")([PARENT, Genome(with_hyperparameters(SEED, DEPTH="3"))], random.Random(0),
                                     OperatorContext(client=client_for(server)))
    assert variation.status == "invalid" and len(variation.usage) == 1
