"""Small real genomes for tests: the seed train.py with its hyperparameters turned down, and variants of it."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

TINY = {"DEPTH": "1", "WIDTH": "32", "N_HEADS": "2", "MLP_RATIO": "2", "BATCH_SIZE": "4"}


def seed_source() -> str:
    return (ROOT / "train.py").read_text()


def with_hyperparameters(source: str, **values: str) -> str:
    """Rewrites top-level `NAME = ...` assignments; fails loudly if a name is missing."""
    for name, value in values.items():
        source, n = re.subn(rf"^{name} = [^#\n]*?(\s*#|$)", rf"{name} = {value}\1", source, count=1, flags=re.M)
        assert n == 1, f"{name} not found in train.py"
    return source


def tiny_source(**values: str) -> str:
    """The seed genome at a size that trains a few steps in about a second."""
    return with_hyperparameters(seed_source(), **{**TINY, **values})


SLEEPER = '''
"""A test genome that trains nothing: it sleeps, reports what it saw, and submits a constant model."""
import os, time
import torch
from prepare import seed, submit, train_batches, vocab_size

torch.manual_seed(seed())
print("START", time.time(), "CUDA_VISIBLE_DEVICES=" + os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"), flush=True)
next(iter(train_batches(1, 8)))
time.sleep(SLEEP_SECONDS)
print("END", time.time(), flush=True)


class Constant(torch.nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(vocab))

    def forward(self, idx):
        return self.bias.expand(idx.shape[0], idx.shape[1], -1) + 0.0


submit(Constant(vocab_size()))
'''


def sleeper_source(seconds: float, tag: str = "") -> str:
    """A genome that sleeps for `seconds` and submits a uniform model (a different tag gives a different source)."""
    return SLEEPER.replace("SLEEP_SECONDS", repr(seconds)) + (f"# {tag}\n" if tag else "")


def napper_source(seconds: float = 2.0) -> str:
    """A sleeper with hyperparameters, so the offline operators can make children of it: each child sleeps
    NAP_SECONDS (mutated) and submits a constant model."""
    return ("NAP_SECONDS = %r          # how long the evaluation sleeps\nLEARNING_RATE = 0.01       # unused\n"
            % seconds) + SLEEPER.replace("SLEEP_SECONDS", "min(NAP_SECONDS, 10.0)")


FAILING = '''
"""A seed genome that cannot train: its first evaluation crashes."""
from prepare import seed, submit, train_batches
LEARNING_RATE = 0.01      # unused
seed()
next(iter(train_batches(1, 8)))
raise RuntimeError("this seed genome is broken on purpose")
submit(None)
'''
