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
