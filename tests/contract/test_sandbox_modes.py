"""The evaluation behaves the same behind the shield and without it (EVO_SHIELD=off): every case runs in both modes.

- an ok tiny child is ok, with the same val_bpb, tokens, steps and parameters;
- a child that raises is `crash`, with the same error;
- a child that trains on past its budget and hands its weights over late is `timeout`, with the same reason.

Where the shield cannot run on this machine the shielded half skips with the reason (and fails where
EVO_EXPECT_SHIELD=1 says it should run, as tests/integration/test_shield.py does).
"""

from __future__ import annotations

import math
import os

import pytest

from evo.sandbox import shield
from evo.sandbox.evaluation import Budget, EvalRequest, evaluate
from tests.support.genomes import ROOT, tiny_source

MODES = ("shielded", "unshielded")
SEEN: dict[str, dict[str, tuple]] = {}    # case -> mode -> what the mode gave, compared across modes


@pytest.fixture(scope="module", params=MODES)
def mode(request):
    """The shield on (required, so a machine without it cannot pass for one with it), or off by EVO_SHIELD=off,
    the setting `evo run` and `evo eval` read; shield.unavailable() asks once per process, so it asks again."""
    if request.param == "shielded":
        why = shield.unavailable()
        if why is not None:
            if os.environ.get("EVO_EXPECT_SHIELD") == "1":
                pytest.fail(f"EVO_EXPECT_SHIELD=1 but the shield cannot run here: {why}")
            pytest.skip(f"no shield on this machine: {why}")
        yield request.param
        return
    previous = os.environ.get("EVO_SHIELD")
    os.environ["EVO_SHIELD"] = "off"
    shield.unavailable.cache_clear()
    try:
        yield request.param
    finally:
        if previous is None:
            os.environ.pop("EVO_SHIELD", None)
        else:
            os.environ["EVO_SHIELD"] = previous
        shield.unavailable.cache_clear()


def run(mode: str, source: str, dataset, budget: Budget):
    result = evaluate(EvalRequest(source=source, budget=budget, seed=1, harness=ROOT / "prepare.py", dataset=dataset,
                                  threads=1, fixed_files=(ROOT / "kernels.py",), require_shield=mode == "shielded"))
    assert result.shielded is (mode == "shielded"), (result.status, result.error)
    return result


def same_in_both_modes(case: str, mode: str, seen: tuple) -> None:
    """Records what this mode gave for case; once both modes ran, they must agree."""
    SEEN.setdefault(case, {})[mode] = seen
    assert len(set(SEEN[case].values())) == 1, SEEN[case]


def test_an_ok_child_scores_the_same(mode, dataset):
    result = run(mode, tiny_source(), dataset, Budget(tokens=4096))
    assert result.status == "ok", (result.error, result.log[-2000:])
    assert math.isfinite(result.val_bpb) and 0 < result.val_bpb < 20
    assert 0 < result.tokens <= 4096 and result.num_steps >= 1
    same_in_both_modes("ok", mode, (result.val_bpb, result.tokens, result.num_steps, result.num_params))


def test_a_child_that_raises_is_a_crash(mode, dataset):
    source = "raise RuntimeError('the child gives up')\n" + tiny_source()
    result = run(mode, source, dataset, Budget(tokens=4096))
    assert result.status == "crash" and result.val_bpb is None
    assert "RuntimeError: the child gives up" in result.error, result.error
    same_in_both_modes("crash", mode, (result.status, result.error))


def test_a_child_that_trains_past_its_budget_times_out(mode, dataset):
    # after the batches end, 3 s more of "training" before the weights are handed over: far past the allowance
    # of a 1 s budget (a tenth of it)
    source = tiny_source().replace("submit(model)\n", "import time\ntime.sleep(3)\nsubmit(model)\n")
    assert source != tiny_source()
    result = run(mode, source, dataset, Budget(seconds=1.0))
    assert result.status == "timeout" and result.val_bpb is None, (result.status, result.error)
    assert "did not arrive within" in result.error and "of the budget's end" in result.error, result.error
    same_in_both_modes("late", mode, (result.status, result.error))
