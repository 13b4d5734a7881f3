"""The seed train.py run standalone, as autoresearch runs it: `python train.py` prints the summary block."""

import os
import re
import subprocess
import sys

import pytest

from tests.support.genomes import ROOT

SUMMARY_KEYS = ["val_bpb", "training_seconds", "total_seconds", "peak_memory_mb", "total_tokens_M", "num_steps",
                "num_params_M"]


def run_standalone(timeout, **env):
    proc = subprocess.run([sys.executable, "train.py"], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    summary = dict(re.findall(r"^(\w+):\s+([-\d.]+)$", proc.stdout, re.M))
    assert list(summary) == SUMMARY_KEYS, proc.stdout
    return {k: float(v) for k, v in summary.items()}


def test_standalone_run_prints_the_summary_block():
    summary = run_standalone(180, EVO_BUDGET_TOKENS="50000", EVO_SEED="1")
    assert summary["num_steps"] == 13  # ceil(50,000 tokens / (16 sequences x 256 tokens))
    assert 0 < summary["val_bpb"] < 3.3


@pytest.mark.slow
def test_default_budget_reaches_below_2_6_bpb():
    summary = run_standalone(300)
    assert summary["training_seconds"] <= 61
    assert summary["val_bpb"] < 2.6
