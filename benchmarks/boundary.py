"""The evaluation boundary's cost and its effect on honest scores: `evo eval` of the seed through this tree and
through an earlier commit, alternated, at a fixed seed, token budget and thread count.

    python benchmarks/boundary.py [--before 7ffee2a] [--repeats 3] [--tokens 98304 100000]
                                  [--out benchmarks/results/boundary.json]

The earlier commit is checked out into a temporary git worktree and run by a bare venv whose site-packages are
this interpreter's (a .pth file points at them and at the worktree, and at nothing else), so both sides use the
same packages and the same prepared data, and every subprocess of the earlier side imports the earlier evo.
Records, per side and budget: val_bpb of every run (an honest score should not move), the harness's token count,
and the time split (training, scoring, the rest: start-up, export, the shield), with medians and ranges.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.task_baseline import cpu_model  # noqa: E402

RUN = """
import json, sys
from evo.config import EvalConfig
from evo.evaluate_file import evaluate_file
print(json.dumps(evaluate_file("train.py", EvalConfig(budget_tokens=int(sys.argv[1]), seed=42, threads=2))))
"""


def venv_for(tree: Path, where: Path) -> str:
    """A venv that imports evo from tree and every other package from this interpreter's site-packages."""
    import site

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    packages = next(p for p in site.getsitepackages() if p.endswith("site-packages"))
    target = next(where.glob("lib/python*/site-packages"))
    (target / "evo_tree.pth").write_text(f"{tree}\n{packages}\n")
    return str(where / "bin" / "python")


def one(python: str, tree: Path, tokens: int) -> dict:
    proc = subprocess.run([python, "-c", RUN, str(tokens)], cwd=tree, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"evo eval in {tree} failed:\n{proc.stderr[-2000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    rest = r["total_seconds"] - (r["training_seconds"] or 0) - (r["eval_seconds"] or 0)
    return {"val_bpb": r["val_bpb"], "tokens": r["tokens"], "total_seconds": r["total_seconds"],
            "training_seconds": r["training_seconds"], "eval_seconds": r["eval_seconds"],
            "other_seconds": round(rest, 2), "shielded": r["shielded"], "status": r["status"]}


def summary(runs: list[dict]) -> dict:
    out = {"val_bpb": sorted({r["val_bpb"] for r in runs}), "tokens": sorted({r["tokens"] for r in runs}),
           "shielded": sorted({r["shielded"] for r in runs})}
    for key in ("total_seconds", "training_seconds", "eval_seconds", "other_seconds"):
        values = [r[key] for r in runs]
        out[key] = {"median": round(statistics.median(values), 2), "min": min(values), "max": max(values)}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="7ffee2a", help="the commit to compare against")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, nargs="+", default=[98304, 100000])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "boundary.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="evo-before-") as tmp:
        before = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(before), args.before], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            pythons = {"before": venv_for(before, Path(tmp) / "venv"), "after": sys.executable}
            runs: dict = {"before": {}, "after": {}}
            for tokens in args.tokens:
                for side in runs:
                    runs[side][tokens] = []
                for i in range(args.repeats):  # alternated, so both sides see the same load over time
                    for side, tree in (("before", before), ("after", ROOT)):
                        runs[side][tokens].append(one(pythons[side], tree, tokens))
                        print(side, tokens, i, runs[side][tokens][-1], flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, capture_output=True)
    record = {
        "command": "python benchmarks/boundary.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
        "before": args.before,
        "setting": "evo eval train.py (the seed), seed 42, 2 threads, token budgets as listed",
        "summary": {side: {str(t): summary(r) for t, r in by.items()} for side, by in runs.items()},
        "runs": {side: {str(t): r for t, r in by.items()} for side, by in runs.items()},
    }
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["summary"], indent=2))


if __name__ == "__main__":
    main()
