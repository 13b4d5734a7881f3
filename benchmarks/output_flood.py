"""The evaluating process's memory while a child floods its output: the seed train.py with N MiB written to stdout
before it submits, in pieces of 1 MiB, with or without newlines, each case in a fresh process that runs one
evaluation (token budget 8,192, 1 thread).

    python benchmarks/output_flood.py [--mib 400 1024] [--out benchmarks/results/output_flood.json]

Per case: the evaluation's status, how much of the output it kept, the evaluating process's peak resident memory
before and after the evaluation (ru_maxrss), and the wall time. The process imports what a worker imports to
evaluate (evo.sandbox.evaluation), so the peak before the evaluation is its baseline.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.task_baseline import cpu_model  # noqa: E402

CASE = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
import prepare
from evo.sandbox.evaluation import Budget, EvalRequest, evaluate
from tests.support.genomes import ROOT, tiny_source

piece = ("x" * 1023 + "\\n") if {lines!r} else "x" * 1024
flood = (f"import sys\\nblock = {{piece!r}} * 1024\\nfor _ in range({mib}):\\n    sys.stdout.write(block)\\n"
         "sys.stdout.flush()\\n")
source = tiny_source().replace("submit(model)\\n", flood + "submit(model)\\n")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.time()
r = evaluate(EvalRequest(source=source, seed=1, harness=ROOT / "prepare.py", dataset=prepare.active_dataset(),
                         threads=1, fixed_files=(ROOT / "kernels.py",), budget=Budget(tokens=8192)))
print(json.dumps({{"status": r.status, "error": r.error, "log_chars": len(r.log),
                  "peak_rss_mb_before": round(before),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "seconds": round(time.time() - t0, 1)}}))
"""


def measure(mib: int, lines: bool) -> dict:
    """One case in a fresh interpreter: the evaluation's result fields and the process's peak memory."""
    proc = subprocess.run([sys.executable, "-c", CASE.format(root=str(ROOT), mib=mib, lines=lines)],
                          capture_output=True, text=True, cwd=ROOT, timeout=1200)
    if proc.returncode != 0:
        raise SystemExit(f"the case {mib} MiB ({'lines' if lines else 'one line'}) failed: {proc.stderr[-2000:]}")
    return {"mib": mib, "newlines": lines, **json.loads(proc.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, nargs="+", default=[400, 1024])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "output_flood.json")
    args = parser.parse_args()
    cases = []
    for mib in args.mib:
        for lines in (False, True):
            cases.append(measure(mib, lines))
            print(json.dumps(cases[-1]), flush=True)
    record = {"command": "python " + " ".join(["benchmarks/output_flood.py", *sys.argv[1:]]),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "machine": f"{cpu_model()}, "
              f"{platform.system()} {platform.release()}", "cases": cases}
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
