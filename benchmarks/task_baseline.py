"""Times `python prepare.py` (fresh cache, then again) and one standalone `python train.py` at the default budget.

    python benchmarks/task_baseline.py [--out benchmarks/results/task_baseline.json]

Records the commands, the machine, the date, the seconds each step took and the summary block of the run.
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evo.conditions import cpu_model  # noqa: E402,F401  (the other benchmarks import it from here)


def timed(cmd, env):
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return time.time() - t0, proc.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "task_baseline.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "EVO_CACHE_DIR": cache}
        first, _ = timed([sys.executable, "prepare.py"], env)
        second, out2 = timed([sys.executable, "prepare.py"], env)
        train, out = timed([sys.executable, "train.py"], env)
    summary = dict(re.findall(r"^(\w+):\s+([\d.]+)$", out, re.M))
    record = {
        "commands": ["python prepare.py", "python prepare.py", "python train.py"],
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
        "prepare_seconds_first": round(first, 2),
        "prepare_seconds_second": round(second, 2),
        "prepare_second_run_was_noop": "nothing to do" in out2,
        "train_wall_seconds": round(train, 1),
        "summary": {k: float(v) for k, v in summary.items()},
    }
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
