"""How much training a seconds budget leaves possible after its end, by the batch server's own record.

    python benchmarks/post_budget.py [--budgets 5 60 300] [--aims 0 0.5 0.8 0.9 1.0] [--slow-steps]
                                     [--out benchmarks/results/post_budget.json]

Each run trains a child in the sandbox's train phase (shielded where the kernel allows, 1 thread, seed 1; no
scoring: the weights' arrival is what is measured). The child is the tiny seed that keeps its latest batches and,
once the server stops serving, trains on them until `aim` x the documented weights allowance (min(5 s, a tenth of
the budget)) has passed since the budget's end (the deadline, which progress() gives away), then submits: aim
1.0 is a child that hands over its weights at the last moment it can know of. Records, per run: the status and
error; the server's budget end to the weights' arrival (`post_budget_seconds`, the compute after the budget;
negative: the weights came that long before the deadline); the first batch to the weights (`training_seconds`);
when the budget ended, and why. With --slow-steps it also runs honest children (the seed's loop: submit as soon
as the stream ends) whose every step takes twice the allowance (a sleep in each step), to show what they lose.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evo.evaluate_file import ensure_dataset  # noqa: E402
from evo.sandbox import evaluation as sandbox  # noqa: E402
from evo.sandbox import shield  # noqa: E402
from evo.sandbox.environment import clean_environment  # noqa: E402
from evo.task_files import fixed_files, harness_path, load_harness  # noqa: E402
from tests.support.genomes import tiny_source  # noqa: E402

LOOP = '''
from prepare import budget

AIM = {aim}              # share of the weights allowance to train on after the budget's end; None: none
STEP_SLEEP = {sleep}     # seconds added to every served step: an honest child with slow steps
HOARD = 64               # latest batches kept
seconds = budget().seconds
allowance = min(5.0, seconds / 10)
hoard = []
first = deadline = None
step = 0


def one_step(x, y, p):
    global step
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] * lr_multiplier(p)
    loss = model.loss(x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if GRAD_CLIP:
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    optimizer.step()
    step += 1


for x, y in train_batches(BATCH_SIZE, CONTEXT, device):
    if first is None:
        first = time.time()
        deadline = first + (1.0 - progress()) * seconds
    hoard = [*hoard[-(HOARD - 1):], (x, y)]
    one_step(x, y, progress())
    if STEP_SLEEP:
        time.sleep(STEP_SLEEP)
served = step
while AIM is not None and time.time() < deadline + AIM * allowance:  # the budget ends at its deadline
    x, y = hoard[step % len(hoard)]
    one_step(x, y, 1.0)
print(f"post-budget: {{served}} steps served, {{step - served}} after the budget's end", flush=True)
submit(model)
'''


def child_source(aim: float, sleep: float) -> str:
    seed = tiny_source()
    start = seed.index("t0 = time.time()")
    return seed[:start] + LOOP.format(aim=aim, sleep=sleep)


def run(seconds: float, aim: float, sleep: float) -> dict:
    """One train phase; the server's record of it."""
    harness = harness_path()
    dataset, _ = ensure_dataset(harness)
    request = sandbox.EvalRequest(source=child_source(aim, sleep), budget=sandbox.Budget(seconds=seconds), seed=1,
                                  harness=harness, dataset=dataset, cache_root=load_harness(harness).cache_dir(),
                                  threads=1, fixed_files=fixed_files(harness), score=False)
    result = sandbox.EvalResult(status="crash")
    work = Path(tempfile.mkdtemp(prefix="evo-post-budget-"))
    (work / "score").mkdir()
    shielded = shield.unavailable() is None
    env = clean_environment(os.environ, {"OMP_NUM_THREADS": "1"})
    t0 = time.monotonic()
    server = sandbox._train(request, result, work, env, shielded, None)
    wall = time.monotonic() - t0
    row = {"budget_seconds": seconds, "aim": aim, "step_sleep": sleep, "shielded": shielded,
           "status": "ok" if server is not None else result.status, "error": result.error,
           "training_seconds": result.training_seconds, "num_steps": result.num_steps, "wall_seconds": round(wall, 2)}
    if server is not None:
        row.update(post_budget_seconds=round(server.weighed - server.budget_end, 3), end_reason=server.end_reason,
                   budget_end_after_first_batch=round(server.budget_end - server.first_batch, 3),
                   weights_allowance=server.weights_allowance())
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budgets", type=float, nargs="+", default=[5.0, 60.0, 300.0])
    p.add_argument("--aims", type=float, nargs="+", default=[0.0, 0.5, 0.8, 0.9, 1.0])
    p.add_argument("--slow-steps", action="store_true", help="also honest children with steps over the allowance")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "post_budget.json")
    args = p.parse_args()
    runs = []
    plan = [(b, aim, 0.0) for b in args.budgets for aim in args.aims]
    if args.slow_steps:  # steps of twice the allowance
        plan += [(b, None, 2 * min(5.0, b / 10)) for b in args.budgets]
    for seconds, aim, sleep in plan:
        row = run(seconds, aim, sleep)
        print(json.dumps(row), flush=True)
        runs.append(row)
    done = [r for r in runs if r["status"] == "ok" and r["aim"] is not None]
    most = {str(b): max((r["post_budget_seconds"] for r in done if r["budget_seconds"] == b), default=None)
            for b in args.budgets}
    record = {"command": "python benchmarks/post_budget.py " + " ".join(sys.argv[1:]),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.node()}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
                         f"Python {platform.python_version()}",
              "most_post_budget_seconds_ok": most, "runs": runs}
    existing = json.loads(args.out.read_text()) if args.out.exists() else {"records": []}
    existing["records"].append(record)
    args.out.write_text(json.dumps(existing, indent=1) + "\n")
    print(json.dumps(most))


if __name__ == "__main__":
    main()
