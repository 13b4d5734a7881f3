"""The training-side API, standalone (no sandbox): budgets, seeds, batches, progress."""

import pytest
import torch

import prepare


@pytest.fixture
def session(monkeypatch, evo_cache):
    """A fresh harness session for each test, configured through the standalone environment variables."""

    def start(**env):
        for name in ("EVO_SEED", "EVO_BUDGET_SECONDS", "EVO_BUDGET_TOKENS"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, str(value))
        monkeypatch.setattr(prepare, "_session", None)
        return prepare

    yield start


def test_token_budget_ends_the_batches(session):
    h = session(EVO_BUDGET_TOKENS=10_000)
    assert h.budget() == h.Budget(tokens=10_000)
    seen = []
    for x, y in h.train_batches(4, 64):
        assert x.shape == y.shape == (4, 64) and x.dtype == torch.long
        assert torch.equal(x[:, 1:], y[:, :-1])
        seen.append(h.progress())
    assert len(seen) == 40  # ceil(10_000 / 256)
    assert seen[0] == pytest.approx(256 / 10_000) and seen[-1] == h.progress() == 1.0
    assert all(a < b for a, b in zip(seen, seen[1:]))


def test_batches_follow_the_harness_seed(session):
    def first_batch(**env):
        h = session(EVO_BUDGET_TOKENS=1_000, **env)
        return next(iter(h.train_batches(2, 32)))[0]

    assert torch.equal(first_batch(EVO_SEED=7), first_batch(EVO_SEED=7))
    assert not torch.equal(first_batch(EVO_SEED=7), first_batch(EVO_SEED=8))
    assert session().seed() == prepare.DEFAULT_SEED


def test_seconds_budget_is_the_default(session):
    h = session()
    assert h.budget() == h.Budget(seconds=float(prepare.DEFAULT_BUDGET_SECONDS))
    assert h.vocab_size() == prepare.VOCAB_SIZE


@pytest.mark.parametrize("env, message", [
    ({"EVO_BUDGET_TOKENS": -5}, "must be positive"),
    ({"EVO_BUDGET_SECONDS": "soon"}, "must be a number"),
    ({"EVO_BUDGET_SECONDS": 5, "EVO_BUDGET_TOKENS": 5}, "not both"),
])
def test_bad_budgets_are_refused(session, env, message):
    with pytest.raises(prepare.HarnessError, match=message):
        session(**env).budget()


def test_training_batches_never_contain_validation_tokens(session, dataset):
    """The batches come from train.bin alone: no validation window appears in them."""
    import numpy as np

    val = np.fromfile(dataset / "val" / "val.bin", dtype=np.uint16)
    windows = {tuple(val[i:i + 16]) for i in range(0, len(val) - 16, 7)}
    h = session(EVO_BUDGET_TOKENS=50_000)
    hits = 0
    for x, _ in h.train_batches(8, 64):
        for row in x.numpy():
            hits += sum(tuple(row[i:i + 16]) in windows for i in range(0, 48, 16))
    assert hits < 5  # a handful of repeated phrases (the Bible repeats itself), not a leak
