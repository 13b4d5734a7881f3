"""`evo eval FILE`: one train.py, through the harness, in the sandbox."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from evo.errors import TaskError
from evo.sandbox import Budget, EvalRequest, evaluate
from evo.task import fixed_files, harness_path, load_harness, read_genome_file


def ensure_dataset(harness_file: Path, notify: Callable[[str], None] | None = None) -> tuple[Path, dict]:
    """The active prepared dataset and its fingerprint; prepares the embedded default when nothing is prepared."""
    harness = load_harness(harness_file)
    try:
        if not (harness.cache_dir() / "active.json").exists():
            if notify:
                notify("no prepared data yet: running prepare.py on the embedded default")
            code = subprocess.call([sys.executable, str(harness_file)],
                                   stdout=sys.stderr if notify else subprocess.DEVNULL)
            if code != 0:
                raise TaskError(f"{harness_file} failed to prepare the data (exit {code})")
        root = harness.active_dataset()
        return root, harness.fingerprint(root)
    except harness.HarnessError as e:
        raise TaskError(str(e)) from None


def evaluate_file(path: str, *, budget_seconds: float | None = None, budget_tokens: int | None = None,
                  seed: int | None = None, time_limit: float | None = None, threads: int | None = None,
                  on_line: Callable[[str], None] | None = None,
                  notify: Callable[[str], None] | None = None) -> dict:
    """Evaluates the train.py at path and returns the result as a dict (with the dataset's fingerprint)."""
    harness_file = harness_path()
    harness = load_harness(harness_file)
    if budget_seconds is None and budget_tokens is None:
        budget_seconds = float(harness.DEFAULT_BUDGET_SECONDS)
    budget = Budget(seconds=budget_seconds, tokens=budget_tokens)
    source = read_genome_file(path)
    seed = harness.DEFAULT_SEED if seed is None else seed
    dataset, fingerprint = ensure_dataset(harness_file, notify)
    if notify:
        notify(f"evaluating {path}: budget {budget.describe()}, seed {seed}")
    request = EvalRequest(source=source, budget=budget, seed=seed, harness=harness_file, dataset=dataset,
                          time_limit=time_limit, threads=threads, fixed_files=fixed_files(harness_file))
    result = evaluate(request, on_line=on_line).to_dict()
    result["fingerprint"] = fingerprint
    return result
