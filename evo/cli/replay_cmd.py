"""`evo replay ID`: re-evaluates the path from the seed to ID (and with --ablate each step's removal) and reports
each step's paired gain with its 95% interval."""

from __future__ import annotations

import argparse
import os
import sys

from evo.cli.flags import add_flags, values
from evo.config import ReplayConfig
from evo.text import printable


def replay_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", metavar="ID")
    p.add_argument("--db", default="evo.duckdb", help="the store (default evo.duckdb)")
    p.add_argument("--run", help="the run (default: the latest)")
    add_flags(p, ReplayConfig)


def replay(args, argv) -> int:
    from evo.replay import run_replay

    config = ReplayConfig(**values(args, ReplayConfig))
    done = run_replay(args.db, args.run, args.id, config, environ=os.environ,
                      say=lambda line: print(printable(line), file=sys.stderr, flush=True))
    print(printable("\n".join(report_lines(done, config))))
    return 0


def report_lines(done, config: ReplayConfig) -> list[str]:
    """The table of steps (gain against the parent, its interval, a verdict), and the ablations."""
    from evo.replay import interval, mean

    lines = []
    jobs, ablations = done.jobs, done.ablations
    path_jobs = [j for j in jobs if not j.label.startswith("without")]
    lines.append(f"{'step':<40} {'val_bpb':>10} {'gain':>10} {'95% CI':>10}  verdict")
    for before, after in zip([None] + path_jobs, path_jobs):
        avg = mean(after)
        line = f"{after.label:<40} {avg if avg is not None else float('nan'):>10.4f}"
        if before is not None:
            pairs = [before.results[s] - after.results[s] for s in after.seeds
                     if before.results.get(s) is not None and after.results.get(s) is not None]
            if pairs:
                gain, half = interval(pairs)
                verdict = "n/a (one seed)" if half is None else \
                    "within noise" if abs(gain) <= half else ("gain" if gain > 0 else "loss")
                line += f" {gain:>+10.4f} {'±%.4f' % half if half is not None else '-':>10}  {verdict}"
        lines.append(line)
    if config.same_seeds:
        diffs = [abs(j.results[s] - j.recorded[s]) for j in path_jobs for s in j.seeds
                 if j.results.get(s) is not None and s in j.recorded]
        if diffs:
            lines.append(f"same seeds: {len(diffs)} evaluations replayed; largest difference from the recorded "
                         f"val_bpb {max(diffs):.2e}" + (" (reproduced exactly)" if max(diffs) == 0 else ""))
    if ablations:
        winner = path_jobs[-1]
        lines.append(f"\nablation of {winner.individual}: what removing each step costs (positive: the step helped)")
        for i, after, text, how in ablations:
            job = next((j for j in jobs if j.label == f"without step {i}"), None)
            if job is None:
                lines.append(f"  step {i} {after.operator:<16} cannot be removed: {how}")
                continue
            pairs = [job.results[s] - winner.results[s] for s in job.seeds
                     if job.results.get(s) is not None and winner.results.get(s) is not None]
            if not pairs:
                lines.append(f"  step {i} {after.operator:<16} no ok evaluation")
                continue
            cost, half = interval(pairs)
            verdict = "n/a (one seed)" if half is None else "within noise" if abs(cost) <= half else \
                ("earned its gain" if cost > 0 else "hurt")
            lines.append(f"  step {i} {after.operator:<16} {cost:+.4f} {'±%.4f' % half if half is not None else '':>9}"
                         f"  {verdict}  ({how}; {after.description[:60]})")
    return lines
