"""Every adversarial child through `evo eval`, as a user runs it: each attack is caught (a recorded failure whose
reason matches the child's EXPECT line) or comes to nothing (ok, and no better than the honest tiny seed at the same
budget and seed), and the evaluation leaves the machine as it found it."""

import json
import secrets
import subprocess

import pytest

from genome import validate
from tests.support.adversarial import (
    CLASSES,
    EVAL_ARGS,
    Listener,
    Surroundings,
    child,
    children,
    eval_env,
    plant_decoys,
    verdict,
)
from tests.support.genomes import ROOT, tiny_source

# One child per class runs by default; the rest are marked slow.
DEFAULT = {"writes_eval_harness", "runs_pickle_payload", "peeks_between_checked_positions",
           "finds_validation_copies", "overspends_giant_batch", "escapes_api_key", "reaches_local_port",
           "crashes_nested_header", "spoofs_terminal_escapes", "poisons_infinite_loss", "hoards_memfd"}


def _params():
    return [pytest.param(c.name, id=c.name, marks=() if c.name in DEFAULT else pytest.mark.slow) for c in children()]


def evo_eval(evo_bin, path, args, env):
    proc = subprocess.run([evo_bin, "eval", str(path), *args, *EVAL_ARGS, "--json"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=env)
    assert proc.stdout.strip(), proc.stderr
    return proc, json.loads(proc.stdout)


@pytest.fixture(scope="module")
def canary():
    return f"sk-ant-canary-{secrets.token_hex(12)}"


@pytest.fixture(scope="module")
def honest(tmp_path_factory, canary):
    """The honest tiny seed's val_bpb under each set of evaluation arguments, evaluated once when first asked."""
    path = tmp_path_factory.mktemp("honest") / "train.py"
    path.write_text(tiny_source())
    scores = {}

    def measure(evo_bin, args):
        if args not in scores:
            _, result = evo_eval(evo_bin, path, args, eval_env(canary, "honest"))
            assert result["status"] == "ok", result
            scores[args] = result["val_bpb"]
        return scores[args]

    return measure


@pytest.fixture(scope="module")
def decoys(tmp_path_factory, dataset):
    planted = plant_decoys(tmp_path_factory.mktemp("decoys"), dataset)
    yield planted
    for path in planted:
        path.unlink(missing_ok=True)


@pytest.fixture
def listener():
    sock = Listener()
    yield sock
    sock.close()


def test_every_class_has_two_children_and_every_child_passes_the_validator():
    found = children()
    for klass in CLASSES:
        assert sum(c.klass == klass for c in found) >= 2, klass
    assert {child(name).klass for name in DEFAULT} == set(CLASSES)
    for c in found:
        verdict_ = validate(c.source)
        assert verdict_.ok, f"{c.name}: {verdict_.reason}"
        assert c.summary.endswith("."), c.name


@pytest.mark.parametrize("name", _params())
def test_an_attack_is_caught_or_comes_to_nothing_and_leaves_no_trace(evo_bin, name, honest, canary, decoys,
                                                                      listener):
    c = child(name)
    honest_bpb = honest(evo_bin, c.eval_args)
    arm = secrets.token_hex(8)
    around = Surroundings()
    problems = []
    try:
        for n in range(c.runs):
            proc, result = evo_eval(evo_bin, c.path, c.eval_args, eval_env(canary, arm))
            problem = verdict(c, result, honest_bpb)
            if problem:
                problems.append(f"evaluation {n + 1} of {c.runs}: {problem}")
            if canary in proc.stdout + proc.stderr:
                problems.append("the API key reached the output")
        problems += [f"left a trace: {change}" for change in around.changes()]
        if listener.received:
            problems.append(f"connected to a socket on 127.0.0.1: {listener.received}")
    finally:
        around.restore()
        around.close()
    assert not problems, f"{name}:\n" + "\n".join(problems)
