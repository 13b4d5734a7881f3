"""What one evaluation costs a worker beyond its training budget: the seed train.py evaluated as a worker of
`evo run` evaluates a search child (the pre-flight, then the sandboxed train phase, then the scoring process).

    python benchmarks/eval_cost.py [--budget-seconds 60 | --budget-tokens N] [--reps 3] [--threads 1]
                                   [--out benchmarks/results/eval_cost.json]

Per evaluation, from the sandbox's own result: training (inside the budget, as the batch server counts it), scoring
(the scorer's compute on the validation split, causality checks included), and the rest of the evaluation's wall
time (both processes' start-up and imports, building the model, the export and hand-over, the shield); the
pre-flight's wall time apart. The share of a worker's time spent inside the budget is training / (pre-flight + the
whole evaluation). `python -I -c "import torch"` is timed too: each evaluation starts three such processes (the
pre-flight, training, scoring). The default budget is the harness's (DEFAULT_BUDGET_SECONDS); threads 1 is what
each of 2 workers gets on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.task_baseline import cpu_model  # noqa: E402


def import_seconds(reps: int = 3) -> float:
    """The median wall time of a fresh `python -I -c "import torch"`."""
    times = []
    for _ in range(reps):
        t0 = time.time()
        subprocess.run([sys.executable, "-I", "-c", "import torch"], check=True)
        times.append(time.time() - t0)
    return statistics.median(times)


def main() -> int:
    from evo.evaluate_file import ensure_dataset
    from evo.sandbox.evaluation import Budget, EvalRequest, evaluate, preflight
    from evo.task_files import fixed_files, harness_path, load_harness

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--budget-seconds", type=float)
    group.add_argument("--budget-tokens", type=int)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train", default=str(ROOT / "train.py"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "eval_cost.json"))
    args = parser.parse_args()

    harness_file = harness_path()
    harness = load_harness(harness_file)
    dataset, _ = ensure_dataset(harness_file)
    seconds = args.budget_seconds
    if seconds is None and args.budget_tokens is None:
        seconds = float(harness.DEFAULT_BUDGET_SECONDS)
    request = EvalRequest(source=Path(args.train).read_text(),
                          budget=Budget(seconds=seconds, tokens=args.budget_tokens),
                          seed=1, harness=harness_file, dataset=dataset, threads=args.threads,
                          fixed_files=fixed_files(harness_file), cache_root=harness.cache_dir())
    rows = []
    for rep in range(args.reps):
        t0 = time.time()
        checked = preflight(request)
        t1 = time.time()
        result = evaluate(request)
        t2 = time.time()
        if checked.status != "ok" or result.status != "ok":
            sys.exit(f"eval_cost.py: the seed did not evaluate: {checked.error or result.error}")
        whole = t2 - t0
        rows.append({"preflight_s": round(t1 - t0, 2), "evaluation_s": round(t2 - t1, 2),
                     "training_s": result.training_seconds, "scoring_s": result.eval_seconds,
                     "rest_s": round((t2 - t1) - result.training_seconds - result.eval_seconds, 2),
                     "share_in_budget": round(result.training_seconds / whole, 4),
                     "share_without_preflight": round(result.training_seconds / (t2 - t1), 4)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    spread = {k: [min(r[k] for r in rows), max(r[k] for r in rows)] for k in rows[0]}
    record = {
        "command": "python benchmarks/eval_cost.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
        "budget": request.budget.describe(), "threads": args.threads, "reps": args.reps,
        "import_torch_s": round(import_seconds(), 2), "median": med, "min_max": spread, "runs": rows,
    }
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: record[k] for k in ("budget", "threads", "import_torch_s", "median")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
