"""The summary of benchmarks/search.py's records: per method and number of evaluations, the median and spread of the
confirmed best, a paired bootstrap confidence interval of each method's difference to evo, and the winner's curse.

A record is one search: {"method", "start", "rep", "checkpoints": {"8": {"reported", "confirmed"[, "test"]
[, "true"]}, ...}}; "test" is the winner's bpb on the test split (real mode), which no search ever sees.
Pairs are the same (start, rep): the same search seed and the same confirm seeds for every method.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence


def quantile(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def bootstrap_ci(diffs: Sequence[float], *, draws: int = 2000, level: float = 0.95, seed: int = 0,
                 stat=statistics.fmean) -> tuple[float, float]:
    """A percentile bootstrap interval of stat over paired differences (resampling the pairs)."""
    rng = random.Random(seed)
    n = len(diffs)
    stats = sorted(stat([diffs[rng.randrange(n)] for _ in range(n)]) for _ in range(draws))
    return quantile(stats, (1 - level) / 2), quantile(stats, 1 - (1 - level) / 2)


def summarise(records: Sequence[dict], *, reference: str = "evo", key: str = "confirmed") -> dict:
    """{method: {checkpoint: {...}}} over the records (all starts pooled). key: "confirmed" (the mean over the
    fresh seeds) or "true" (the surrogate's noise-free value)."""
    by: dict[str, dict[str, dict[tuple, dict]]] = {}
    for r in records:
        for k, snap in r["checkpoints"].items():
            if snap is None or snap.get(key) is None:
                continue
            by.setdefault(r["method"], {}).setdefault(str(k), {})[(r["start"], r["rep"])] = snap
    out: dict[str, dict] = {}
    for method, per_k in by.items():
        out[method] = {}
        for k, snaps in sorted(per_k.items(), key=lambda kv: int(kv[0])):
            values = [s[key] for s in snaps.values()]
            curse = [s["reported"] - s["confirmed"] for s in snaps.values() if s.get("confirmed") is not None]
            tests = [s["test"] for s in snaps.values() if s.get("test") is not None]
            row = {"n": len(values), "median": statistics.median(values), "q25": quantile(values, 0.25),
                   "q75": quantile(values, 0.75), "mean": statistics.fmean(values),
                   "test_median": statistics.median(tests) if tests else None,
                   "winners_curse_median": statistics.median(curse) if curse else None,
                   "winners_curse_mean": statistics.fmean(curse) if curse else None}
            ref = by.get(reference, {}).get(k, {})
            pairs = [snaps[p][key] - ref[p][key] for p in snaps if p in ref]
            if method != reference and len(pairs) >= 2:
                lo, hi = bootstrap_ci(pairs)
                mlo, mhi = bootstrap_ci(pairs, stat=statistics.median)
                row.update(vs_evo_pairs=len(pairs), vs_evo_mean=statistics.fmean(pairs), vs_evo_ci95=[lo, hi],
                           vs_evo_median=statistics.median(pairs), vs_evo_median_ci95=[mlo, mhi],
                           evo_better_share=sum(d > 0 for d in pairs) / len(pairs))
            out[method][k] = row
    return out


def table(summary: dict, methods: Sequence[str] | None = None) -> str:
    """A markdown table of summarise()'s output: positive differences mean evo is better (lower val_bpb)."""
    lines = ["| method | evals | n | median | IQR | method - evo: mean [95% CI] | evo better in | winner's curse "
             "| test median |",
             "| --- | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: |"]
    for method in methods or list(summary):
        for k, row in summary.get(method, {}).items():
            diff = share = "-"
            if "vs_evo_mean" in row:
                lo, hi = row["vs_evo_ci95"]
                diff = f"{row['vs_evo_mean']:+.4f} [{lo:+.4f}, {hi:+.4f}]"
                share = f"{row['evo_better_share']:.0%}"
            curse = f"{row['winners_curse_median']:+.4f}" if row["winners_curse_median"] is not None else "-"
            test = f"{row['test_median']:.4f}" if row.get("test_median") is not None else "-"
            lines.append(f"| {method} | {k} | {row['n']} | {row['median']:.4f} | {row['q25']:.4f}-{row['q75']:.4f} | "
                         f"{diff} | {share} | {curse} | {test} |")
    return "\n".join(lines)
