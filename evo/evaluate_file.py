"""`evo eval FILE`: one train.py, through the harness, in the sandbox."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from evo.config import EvalConfig, with_default_budget
from evo.errors import TaskError
from evo.results import typed
from evo.sandbox.evaluation import EvalRequest, evaluate
from evo.task_files import fixed_files, harness_path, load_harness, read_genome_file


def ensure_dataset(harness_file: Path, notify: Callable[[str], None] | None = None) -> tuple[Path, dict]:
    """The active prepared dataset and its fingerprint; prepares the embedded default when nothing is prepared, or
    when what is prepared came from it under an older layout of the harness."""
    harness = load_harness(harness_file)
    try:
        if not (harness.cache_dir() / "active.json").exists():
            _prepare_default(harness_file, "no prepared data yet", notify)
        try:
            root = harness.active_dataset()
        except getattr(harness, "DataOutdated", ()) as e:   # a task folder's older prepare.py has no such class
            if not e.from_default:
                raise
            _prepare_default(harness_file, "the prepared data has an older layout", notify)
            root = harness.active_dataset()
        fingerprint_of = harness.fingerprint
        return root, fingerprint_of(root)
    except harness.HarnessError as e:
        raise TaskError(str(e)) from None


def _prepare_default(harness_file: Path, why: str, notify: Callable[[str], None] | None) -> None:
    if notify:
        notify(f"{why}: running prepare.py on the embedded default")
    code = subprocess.call([sys.executable, str(harness_file)], stdout=sys.stderr if notify else subprocess.DEVNULL)
    if code != 0:
        raise TaskError(f"{harness_file} failed to prepare the data (exit {code})")


def evaluate_file(path: str, config: EvalConfig = EvalConfig(), *, on_line: Callable[[str], None] | None = None,
                  notify: Callable[[str], None] | None = None, env: Mapping[str, str] | None = None) -> dict:
    """Evaluates the train.py at path and returns the result as a dict (with the dataset's fingerprint). env: the
    values of the variables config.env names (evo.sandbox.environment.passed_values), for training and scoring."""
    harness_file = harness_path()
    harness = load_harness(harness_file)
    config = with_default_budget(config, harness.DEFAULT_BUDGET_SECONDS)
    budget, seed = config.budget, config.seed
    source = read_genome_file(path)
    seed = harness.DEFAULT_SEED if seed is None else seed
    dataset, fingerprint = ensure_dataset(harness_file, notify)
    if config.test and not (dataset / "test").is_dir():
        raise TaskError(f"--test: the prepared data at {dataset} has no test split (an older prepare.py made it)")
    if notify:
        notify(f"evaluating {path}: budget {budget.describe()}, seed {seed}")
    request = EvalRequest(source=source, budget=budget, seed=seed, harness=harness_file, dataset=dataset,
                          cache_root=harness.cache_dir(),
                          time_limit=config.time_limit, threads=config.threads, fixed_files=fixed_files(harness_file),
                          memory_mb=config.memory_mb, disk_mb=config.disk_mb,
                          test=config.test, env=dict(env or {}))
    result = typed(evaluate(request, on_line=on_line).to_dict())  # never a NaN, an infinity or a field out of type
    result["fingerprint"] = fingerprint
    return result
