"""How busy `evo run` keeps its workers: 2 workers on this machine, evaluations that sleep a fixed time.

    python benchmarks/utilisation.py [--evaluations 24] [--sleep 3] [--out benchmarks/results/utilisation.json]

Utilisation = the time workers spent inside evaluations / (workers x the wall time from the first evaluation's
start to the last one's end), read from the store's evaluation rows (start and end as the workers saw them).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.task_baseline import cpu_model  # noqa: E402
from tests.support.genomes import SLEEPER  # noqa: E402


def genome(seconds: float) -> str:
    # LEARNING_RATE gives the offline operators something to mutate; the sleep itself stays fixed.
    return "LEARNING_RATE = 0.01      # unused\n" + SLEEPER.replace("SLEEP_SECONDS", repr(seconds))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=24)
    parser.add_argument("--sleep", type=float, default=3.0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "utilisation.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        (Path(work) / "train.py").write_text(genome(args.sleep))
        (Path(work) / "program.md").write_text("sleep\n")
        cmd = [str(Path(sys.executable).with_name("evo")), "run", "--evaluations", str(args.evaluations),
               "--workers", "2", "--population", "4", "--operators", "hyper", "--budget-tokens", "1000",
               "--no-preflight", "--noise-seeds", "2", "--confirm-seeds", "1", "--quiet"]
        subprocess.run(cmd, cwd=work, check=True)
        import duckdb

        con = duckdb.connect(str(Path(work) / "evo.duckdb"), read_only=True)
        rows = con.execute("SELECT epoch(started_at), epoch(finished_at) FROM evaluations "
                           "WHERE status <> 'interrupted' ORDER BY started_at").fetchall()
    first, last = rows[0][0], max(end for _, end in rows)
    busy = sum(end - start for start, end in rows)
    record = {
        "command": " ".join(["evo", *cmd[1:]]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
        "evaluations": len(rows),
        "sleep_seconds": args.sleep,
        "mean_evaluation_seconds": round(busy / len(rows), 2),
        "wall_seconds_after_start_up": round(last - first, 1),
        "utilisation": round(busy / (2 * (last - first)), 4),
    }
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
