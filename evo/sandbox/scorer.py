"""The scoring process: checks the handed-over model archive and scores it with the harness's metric.

    python -I -m evo.sandbox.scorer SPEC RESULT_FD

- SPEC: a JSON file from the evaluating process: {"harness": prepare.py, "model": the archive, "weights": the
  weights handed over at the budget's end, "val_dir", "test_dir" (only when test_bpb is asked for), "device",
  "threads"}. Every path in it is the evaluating process's choice, none the child's: the harness is the task
  bundle's copy, the archive the bytes the batch server received.
- No code from train.py runs here: the archive is parsed and checked by evo.sandbox.graph.archive before any tensor
  is built (no torch loader ever sees it), and the graph runs op by op from an allow-list.
- The result goes to RESULT_FD as one JSON object; the evaluating process takes it only from there and only when
  this process exits 0.
- A NaN or infinite score is a rejection ("non-finite val_bpb: nan"), whatever the harness's metric says of it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from evo.results import NON_FINITE, score_problem
from evo.sandbox.graph.archive import (
    MAGIC,
    WEIGHTS_MAGIC,
    ArchiveRefused,
    check_weights,
    read_archive,
    read_payload,
    read_weights,
)
from evo.task_files import load_harness


def score(spec: dict) -> dict:
    """The result of scoring spec's archive: {"status": "ok", "val_bpb", ...} or {"status": "rejected", "error"}."""
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    harness = load_harness(Path(spec["harness"]))
    device = torch.device(spec.get("device") or "cpu")
    t0 = time.time()
    try:
        archive = read_archive(read_payload(spec["model"], MAGIC, "graph"))
        check_weights(archive, read_weights(read_payload(spec["weights"], WEIGHTS_MAGIC, "weights")))
        model = archive.callable(device)
        result = {"status": "ok", **harness.evaluate_program(model, Path(spec["val_dir"]), device),
                  "num_params": archive.num_params()}
        if spec.get("test_dir") and hasattr(harness, "evaluate_test"):   # an older prepare.py has no test split
            result.update(harness.evaluate_test(model, Path(spec["test_dir"]), device))
    except ArchiveRefused as e:
        result = {"status": "rejected", "error": f"archive refused: {e}"}
    except harness.ModelRefused as e:
        result = {"status": "rejected", "error": str(e)}
    for name in ("val_bpb", "test_bpb"):   # a task's own prepare.py may not refuse a NaN or infinite score itself
        if result["status"] == "ok" and score_problem(result.get(name, 0.0)) == NON_FINITE:
            result = {"status": "rejected", "error": f"{NON_FINITE} {name}: {result[name]!r}"}
    result["eval_seconds"] = round(time.time() - t0, 2)
    return result


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        sys.stderr.write("usage: python -I -m evo.sandbox.scorer SPEC RESULT_FD\n")
        return 2
    result = score(json.loads(Path(argv[0]).read_text()))
    with os.fdopen(int(argv[1]), "w") as out:
        out.write(json.dumps(result, allow_nan=False))  # never NaN or Infinity, which JSON has not
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
