"""Search methods compared on the seed train.py: evo against the autoresearch loop, random search and optuna's TPE,
over one bounded box (benchmarks/search_box.py), the same budget per evaluation, the same number of evaluations.

    python benchmarks/search.py real --setting quick|full|tiny [--workers 2]
    python benchmarks/search.py surrogate [--starts tuning|final] [--reps 32] [--variants default,best,...]
    python benchmarks/search.py fit --evaluations 24
    python benchmarks/search.py summary [--records benchmarks/results/search_real.jsonl]

real        every method's every training run goes through evo's Ray workers and the sandboxed harness; each
            finished search (one method, start and repetition) is appended to --records as it ends, every finished
            evaluation to --evaluations-file, and a rerun skips what is there (resumes where it stopped)
surrogate   the training run is replaced by benchmarks/search_surrogate.py's noisy function of the constants, fitted to
            real evaluations; evo's search is the same SearchPolicy object `evo run` executes. Variants of evo's
            settings (--variants) are compared here, over thousands of evaluations in minutes
fit         real evaluations for the surrogate (the seed on several seeds: the noise; the starts; random points of
            the box), kept in benchmarks/results/search_fit.jsonl, then the surrogate's parameters refitted

Protocol: every training run a method causes counts against its budget (evo's noise and confirm runs too); every
method of a repetition trains on the same search seed; after 8, 16 and 32 runs each method's reported best is
re-evaluated on the same fresh seeds (3, never used in any search) and the summary gives, per method and
checkpoint, the median and spread of that confirmed best, a paired bootstrap 95% interval of its difference to evo
(positive: evo is better), and the winner's curse (reported minus confirmed).

Ray Tune's population based training is not among the methods: see benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.search_box import (  # noqa: E402
    BOX,
    FINAL_STARTS,
    STARTS,
    TUNING_STARTS,
    box_values,
    check_box,
)
from benchmarks.search_methods import (  # noqa: E402
    METHODS,
    SurrogateExecutor,
    evo_config,
    make_method,
    run_search,
    search_seed_of,
    with_seed,
)
from benchmarks.search_plot import plot_curves  # noqa: E402
from benchmarks.search_stats import summarise, table  # noqa: E402
from benchmarks.search_surrogate import Surrogate  # noqa: E402
from benchmarks.task_baseline import cpu_model  # noqa: E402
from evo.search.policy import SearchPolicy  # noqa: E402
from genome import content_hash  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PARAMS = RESULTS / "search_surrogate_params.json"
FIT_FILE = RESULTS / "search_fit.jsonl"
# every real training run of every setting (keyed by source, seed, budget and harness, so settings share it)
EVALUATIONS_FILE = RESULTS / "search_evaluations.jsonl"
CHECKPOINTS = (8, 16, 32)
BUDGET_TOKENS = 100_000      # per evaluation: the seed's spread there is about 0.003 bpb (see RESULTS.md)

DEFAULT_OPERATORS = "hyper,merge"      # `evo run`'s offline default
SAMPLE_2 = "hyper.sample=2,hyper.mutate=0.5,hyper.crossover=0.5,merge"
SAMPLE_4 = "hyper.sample=4,hyper.mutate=0.5,hyper.crossover=0.5,merge"

# The box as evo's --bounds: its hyper operators keep to it and hyper.sample draws over it, as random search and TPE do
BOX_BOUNDS = {name: (b.low, b.high) for name, b in BOX.items()}
# Variants of evo's settings compared on the surrogate: RunConfig fields (operators as --operators spells them).
VARIANTS = {
    "default": {},
    "tournament-2": {"tournament_size": 2},
    "tournament-5": {"tournament_size": 5},
    "best": {"selection": "best"},
    "random": {"selection": "random"},
    "pop-4": {"population": 4},
    "pop-8": {"population": 8},
    "hyper-only": {"operators": "hyper"},
    "mutate-only": {"operators": "hyper.mutate"},
    "lean-confirm": {"noise_seeds": 2, "confirm_seeds": 1, "elites": 1},
    "close-confirm": {"confirm": "close"},
    "steps": {"adaptive_steps": True},
    "steps+close": {"adaptive_steps": True, "confirm": "close"},
    "steps+close+t5": {"adaptive_steps": True, "confirm": "close", "tournament_size": 5},
    "steps+close+best": {"adaptive_steps": True, "confirm": "close", "selection": "best"},
    "steps+close+best+pop-4": {"adaptive_steps": True, "confirm": "close", "selection": "best", "population": 4},
    "steps+close+best+2-noise": {"adaptive_steps": True, "confirm": "close", "selection": "best", "noise_seeds": 2},
    # hyper.sample (fresh draws over a wide range) joined the hyper family; "no-sample" is the mix before it
    "no-sample": {"operators": "hyper.mutate=0.5,hyper.crossover=0.5,merge"},
    "sample-2": {"operators": SAMPLE_2},
    "sample+close": {"confirm": "close"},
    "sample+close+2-noise": {"confirm": "close", "noise_seeds": 2},
    "sample+steps+close+best": {"adaptive_steps": True, "confirm": "close", "selection": "best"},
    "sample+close+t5+2-noise": {"confirm": "close", "tournament_size": 5, "noise_seeds": 2},
    # "fast": hyper.sample at twice the weight, close confirmation, 2 noise seeds; then the selection settings
    "fast": {"operators": SAMPLE_2, "confirm": "close", "noise_seeds": 2},
    "fast+t5": {"operators": SAMPLE_2, "confirm": "close", "noise_seeds": 2, "tournament_size": 5},
    "fast+best": {"operators": SAMPLE_2, "confirm": "close", "noise_seeds": 2, "selection": "best"},
    "fast+random": {"operators": SAMPLE_2, "confirm": "close", "noise_seeds": 2, "selection": "random"},
    # operator weights that follow each operator's success rate (adaptive_operators)
    "adapt": {"adaptive_operators": True},
    "fast+best+adapt": {"operators": SAMPLE_2, "confirm": "close", "noise_seeds": 2, "selection": "best",
                        "adaptive_operators": True},
    "close+best+adapt": {"confirm": "close", "noise_seeds": 2, "selection": "best", "adaptive_operators": True},
    # no confirmation during the search, only of the best before the end (confirm="final")
    "fast+best+final": {"operators": SAMPLE_2, "confirm": "final", "noise_seeds": 2, "selection": "best"},
    "fast+t5+final": {"operators": SAMPLE_2, "confirm": "final", "noise_seeds": 2, "tournament_size": 5},
    "fast+best+final+pop-4": {"operators": SAMPLE_2, "confirm": "final", "noise_seeds": 2, "selection": "best",
                              "population": 4},
    "fast+best+final+pop-8": {"operators": SAMPLE_2, "confirm": "final", "noise_seeds": 2, "selection": "best",
                              "population": 8},
    "sample-4+best+final": {"operators": SAMPLE_4,
                            "confirm": "final", "noise_seeds": 2, "selection": "best"},
    "fast+best+final+adapt": {"operators": SAMPLE_2, "confirm": "final", "noise_seeds": 2, "selection": "best",
                              "adaptive_operators": True},
    "fast+best+final+box": {"operators": SAMPLE_2, "confirm": "final", "noise_seeds": 2, "selection": "best",
                            "bounds": BOX_BOUNDS},
    "fast+t5+final+box": {"operators": SAMPLE_2, "confirm": "final", "noise_seeds": 2, "tournament_size": 5,
                          "bounds": BOX_BOUNDS},
    "sample-4+best+final+box": {"operators": SAMPLE_4,
                                "confirm": "final", "noise_seeds": 2, "selection": "best", "bounds": BOX_BOUNDS},
    "sample-8+best+final+box": {"operators": "hyper.sample=8,hyper.mutate=0.5,hyper.crossover=0.5,merge",
                                "confirm": "final", "noise_seeds": 2, "selection": "best", "bounds": BOX_BOUNDS},
    "sample-4+t3+final+box": {"operators": SAMPLE_4,
                              "confirm": "final", "noise_seeds": 2, "bounds": BOX_BOUNDS},
    # islands: the population as a ring of sub-populations with migration (evo.search.islands)
    "sample-4+best+final+box+islands-2": {"operators": SAMPLE_4, "confirm": "final", "noise_seeds": 2,
                                          "selection": "best", "bounds": BOX_BOUNDS, "islands": 2},
    "sample-4+best+final+box+islands-4": {"operators": SAMPLE_4, "confirm": "final", "noise_seeds": 2,
                                          "selection": "best", "bounds": BOX_BOUNDS, "islands": 4},
    "sample-4+t3+final+box+islands-4": {"operators": SAMPLE_4, "confirm": "final", "noise_seeds": 2,
                                        "bounds": BOX_BOUNDS, "islands": 4},
    "fast+best+final+steps": {"operators": SAMPLE_2, "confirm": "final", "noise_seeds": 2, "selection": "best",
                              "adaptive_steps": True},
}

# evo's one setting for the real comparison, fixed from the surrogate's tuning starts (RESULTS.md); the first real
# runs used "fast+best+final", without the box (EVO_FIRST)
EVO = VARIANTS["sample-4+best+final+box"]
EVO_FIRST = VARIANTS["fast+best+final"]


@dataclass(frozen=True)
class Setting:
    starts: tuple[str, ...]
    reps: int
    evaluations: int
    checkpoints: tuple[int, ...]
    confirm_seeds: int
    budget_tokens: int
    methods: tuple[str, ...]
    seed_base: int
    cycle: bool = False     # repetition r from starts[r % len(starts)] alone, not from every start

    def runs(self) -> list[tuple[str, int]]:
        """The (start, repetition) pairs of the setting, repetition first."""
        if self.cycle:
            return [(self.starts[r % len(self.starts)], r) for r in range(self.reps)]
        return [(s, r) for r in range(self.reps) for s in self.starts]


SETTINGS = {
    # the final comparison: held-out starts and seeds (seed_base 1000), 8 repetitions, the held-out starts in turn
    # (seed, far-2, far-3, seed, ...): about 4 h on 2 cores; repetition 1 is the quick setting's second one
    "full": Setting(FINAL_STARTS, 8, 32, CHECKPOINTS, 3, BUDGET_TOKENS, METHODS, 1000, cycle=True),
    # the same on one start and 2 repetitions: about 70 min on 2 cores from far-2 (RESULTS.md), over the hour hoped for
    "quick": Setting(("far-2",), 2, 32, CHECKPOINTS, 3, BUDGET_TOKENS, METHODS, 1000),
    # the real path end to end in a few minutes: 3 runs per method (evo's 2 noise runs and a child), one confirm
    # seed, a tiny budget; about 6 trainings, the rest shared through the evaluations file
    "tiny": Setting(("seed",), 1, 3, (3,), 1, 8192, ("evo", "random"), 5000),
}


def confirm_seeds(config, seed_source: str, count: int) -> list[int]:
    """The benchmark's fresh seeds for a repetition: the same for every method, none of them a seed any method's
    search uses (evo's search, noise and confirm seeds included)."""
    policy = SearchPolicy(config, seed_source)
    used = {policy.search_seed, *policy.fresh_seeds}
    rng = random.Random(f"benchmark-confirm-{config.seed}")
    seeds: list[int] = []
    while len(seeds) < count:
        s = rng.randrange(1, 2**31)
        if s not in used and s not in seeds:
            seeds.append(s)
    return seeds


def one_search(method: str, variant: dict, start: str, rep: int, setting: Setting, executor, seed_source: str, *,
               workers: int, surrogate: Surrogate | None = None, evaluate_all=None) -> dict:
    """One method from one start for setting.evaluations runs, then its best at each checkpoint re-evaluated on
    the repetition's confirm seeds. Returns the record."""
    from benchmarks.search_methods import Job
    from benchmarks.search_real import evaluate_all as run_all

    evaluate_all = evaluate_all or run_all
    variant = dict(variant)
    config = with_seed(evo_config(variant.pop("operators", DEFAULT_OPERATORS), **variant), setting.seed_base + rep)
    t0 = time.time()
    m = make_method(method, seed_source=seed_source, start=start, config=config, workers=workers)
    out = run_search(m, executor, setting.evaluations, setting.checkpoints)
    seeds = confirm_seeds(config, seed_source, setting.confirm_seeds)
    sources = {content_hash(s[0]): s[0] for s in out["snapshots"].values() if s is not None}
    jobs = [Job(src, s, "benchmark") for src in sources.values() for s in seeds]
    results = evaluate_all(executor, jobs)
    confirmed: dict[str, list] = {}
    tested: dict[str, list] = {}
    for job, result in zip(jobs, results):
        ok = result["status"] == "ok"
        confirmed.setdefault(content_hash(job.source), []).append(result.get("val_bpb") if ok else None)
        tested.setdefault(content_hash(job.source), []).append(result.get("test_bpb") if ok else None)
    checkpoints = {}
    for k, snap in out["snapshots"].items():
        if snap is None:
            checkpoints[str(k)] = None
            continue
        h = content_hash(snap[0])
        values = [v for v in confirmed[h] if v is not None]
        tests = [v for v in tested[h] if v is not None]
        checkpoints[str(k)] = {
            "reported": snap[1], "confirmed": sum(values) / len(values) if values else None,
            "confirmed_values": confirmed[h], "test": sum(tests) / len(tests) if tests else None,
            "id": h[:12], "constants": box_values(snap[0]),
            **({"true": surrogate.mean(snap[0])} if surrogate else {})}
    return {"method": method, "start": start, "rep": rep, "seed": config.seed,
            "search_seed": search_seed_of(config, seed_source), "confirm_seeds": seeds,
            "evaluations": setting.evaluations, "purposes": out["purposes"], "failed": out["failed"],
            "checkpoints": checkpoints, "seconds": round(time.time() - t0, 2)}


def harness_digest() -> str:
    """The digest of the harness files in use (prepare.py, kernels.py), as each evaluation's conditions record it."""
    from evo.conditions import files_digest
    from evo.task_files import fixed_files, harness_path

    harness = harness_path()
    return files_digest({p.name: p.read_bytes() for p in (harness, *fixed_files(harness))})


def machine() -> dict:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()}


def today() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def seed_text(path: str) -> str:
    source = Path(path).read_text()
    try:
        check_box(source)
    except ValueError as e:
        sys.exit(f"search.py: {path}: {e}")
    return source


# -- surrogate -----------------------------------------------------------------------------------------------------

def surrogate_main(args) -> int:
    seed_source = seed_text(args.train)
    surrogate = Surrogate.load(Path(args.params))
    starts = TUNING_STARTS if args.starts == "tuning" else FINAL_STARTS if args.starts == "final" else \
        tuple(args.starts.split(","))
    variants = list(VARIANTS) if args.variants == "all" else [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS] + [s for s in starts if s not in STARTS]
    if unknown:
        sys.exit(f"search.py: unknown variant or start: {', '.join(unknown)}; variants: {', '.join(VARIANTS)}; "
                 f"starts: {', '.join(STARTS)}")
    methods = [m for m in args.methods.split(",") if m]
    if any(m not in METHODS for m in methods):
        sys.exit(f"search.py: --methods takes {', '.join(METHODS)}; got {args.methods}")
    checkpoints = tuple(sorted({k for k in CHECKPOINTS if k <= args.evaluations} | {args.evaluations}))
    setting = Setting(starts, args.reps, args.evaluations, checkpoints, 3, surrogate.budget_tokens or 0,
                      tuple(methods), args.seed_base)
    runs = [(f"evo[{v}]" if v != args.reference else "evo", "evo", VARIANTS[v]) for v in variants]
    runs += [(m, m, {}) for m in methods if m != "evo"]
    records, timing = [], {}
    for label, method, variant in runs:
        t0 = time.time()
        n = 0
        for start in starts:
            for rep in range(args.reps):
                executor = SurrogateExecutor(surrogate, args.workers)
                record = one_search(method, variant, start, rep, setting, executor, seed_source,
                                    workers=args.workers, surrogate=surrogate, evaluate_all=_surrogate_all)
                record["method"] = label
                records.append(record)
                n += setting.evaluations
        timing[label] = {"evaluations": n, "seconds": round(time.time() - t0, 1)}
        print(f"{label:<22} {n:>6} evaluations in {time.time() - t0:6.1f} s", file=sys.stderr)
    summary = summarise(records, key="confirmed")
    summary_true = summarise(records, key="true")
    labels = [label for label, _, _ in runs]
    report = {
        "command": "python benchmarks/search.py " + " ".join(args.argv),
        "date": today(), "machine": machine(),
        "surrogate": {"params": str(Path(args.params).relative_to(ROOT)) if Path(args.params).is_relative_to(ROOT)
                      else args.params, "noise_std": surrogate.noise_std, "base": surrogate.base,
                      "best_in_box": surrogate.best(), "fit": surrogate.fit},
        "setting": {"starts": starts, "reps": args.reps, "evaluations": args.evaluations,
                    "checkpoints": checkpoints, "confirm_seeds": 3, "workers": args.workers,
                    "seed_base": args.seed_base, "evo": {label: VARIANTS[v] for (label, _, _), v in
                                                         zip(runs, variants)}},
        "timing": timing,
        "summary_confirmed": summary,
        "summary_true": summary_true,
        "records": records if args.keep_records else [],
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        plot_curves({label: summary[label] for label in labels if label in summary}, Path(args.out).with_suffix(".png"),
                    f"surrogate, {', '.join(starts)}: {args.reps} repetitions, median and IQR of the confirmed best")
    print(f"confirmed best (mean over 3 fresh seeds), {len(starts)} start(s) x {args.reps} repetitions:")
    print(table(summary, labels))
    print("\nnoise-free value of the same bests (the surrogate's mean):")
    print(table(summary_true, labels))
    return 0


def _surrogate_all(executor, jobs):
    return [{"status": "ok", "val_bpb": executor.surrogate(j.source, j.seed)} for j in jobs]


# -- real ----------------------------------------------------------------------------------------------------------

def real_main(args) -> int:
    from benchmarks.search_real import EvaluationFile, real_executor

    seed_source = seed_text(args.train)
    setting = SETTINGS[args.setting]
    if args.methods:
        setting = Setting(**{**setting.__dict__, "methods": tuple(args.methods.split(","))})
    if args.budget_tokens:
        setting = Setting(**{**setting.__dict__, "budget_tokens": args.budget_tokens})
    records_path = Path(args.records or RESULTS / f"search_{args.setting}.jsonl")
    done = {key: r for key, r in _read_records(records_path).items() if _current(r)}
    todo = [(m, s, r) for s, r in setting.runs() for m in setting.methods if (m, s, r) not in done]
    print(f"search.py real {args.setting}: {len(done)} search(es) done, {len(todo)} to run "
          f"({setting.evaluations} evaluations each, {setting.budget_tokens:,} tokens per evaluation)",
          file=sys.stderr, flush=True)
    if todo:
        file = EvaluationFile(Path(args.evaluations_file or EVALUATIONS_FILE),
                              setting.budget_tokens, harness_digest())

        def progress(job, result, seconds):
            value = f"{result['val_bpb']:.4f}" if result["status"] == "ok" else result["status"]
            print(f"  {job.purpose:<9} {content_hash(job.source)[:8]} seed {job.seed}: {value} ({seconds:.0f} s)",
                  file=sys.stderr, flush=True)

        with real_executor(file, workers=args.workers, budget_tokens=setting.budget_tokens,
                           on_result=progress) as executor:
            workers = executor.pool.size
            for method, start, rep in todo:
                record = one_search(method, EVO if method == "evo" else {}, start, rep, setting, executor,
                                    seed_source, workers=workers)
                record.update(setting=args.setting, budget_tokens=setting.budget_tokens, date=today(),
                              machine=machine(), **({"evo_setting": EVO} if method == "evo" else {}))
                with records_path.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                best = record["checkpoints"][str(setting.checkpoints[-1])]
                print(f"{method} from {start}, repetition {rep}: confirmed best "
                      f"{best['confirmed'] if best else None} ({record['seconds']:.0f} s)", file=sys.stderr,
                      flush=True)
            print(f"trained {executor.trained} evaluation(s); the rest came from {file.path.name}",
                  file=sys.stderr)
    return _summary(records_path, Path(args.out) if args.out else records_path.with_suffix(".json"))


def _current(record: dict) -> bool:
    """Whether a record is of the searches the script runs now: evo's searches under an earlier setting (EVO_FIRST
    had none recorded) are kept in the file as they were, but are run again and left out of the summary."""
    return record["method"] != "evo" or \
        json.loads(json.dumps(record.get("evo_setting", EVO_FIRST))) == json.loads(json.dumps(EVO))


def _read_records(path: Path) -> dict:
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[(r["method"], r["start"], r["rep"])] = r
    return done


def _summary(records_path: Path, out: Path) -> int:
    everything = list(_read_records(records_path).values())
    records = [r for r in everything if _current(r)]
    if not records:
        sys.exit(f"search.py: {records_path} holds no finished search")
    if len(records) < len(everything):
        print(f"left out: {len(everything) - len(records)} evo search(es) under an earlier setting", file=sys.stderr)
    summary = summarise(records)
    report = {"records": str(records_path.name), "date": today(), "machine": records[-1].get("machine", machine()),
              "searches": len(records), "summary_confirmed": summary}
    out.write_text(json.dumps(report, indent=1) + "\n")
    picture = plot_curves({m: summary[m] for m in METHODS if m in summary}, out.with_suffix(".png"),
                          f"{records_path.name}: {len(records)} searches, median and IQR of the confirmed best")
    print(table(summary, [m for m in METHODS if m in summary]))
    print(f"plot: {picture}")
    return 0


def summary_main(args) -> int:
    path = Path(args.records)
    if not path.exists():
        sys.exit(f"search.py: {args.records}: no such file")
    return _summary(path, Path(args.out) if args.out else path.with_suffix(".json"))


# -- fit -----------------------------------------------------------------------------------------------------------

def fit_main(args) -> int:
    from benchmarks.search_box import BOX, at, start_source
    from benchmarks.search_methods import Job
    from benchmarks.search_real import EvaluationFile, evaluate_all, real_executor

    seed_source = seed_text(args.train)
    seeds = [int(s) for s in random.Random("fit-seeds").sample(range(1, 2**31), args.noise_seeds)]
    rng = random.Random("fit-points")
    jobs = [Job(seed_source, s, "noise") for s in seeds]
    jobs += [Job(start_source(seed_source, name), seeds[0], "start") for name in STARTS if name != "seed"]
    while len(jobs) < args.evaluations:
        jobs.append(Job(at(seed_source, {n: b.at(rng.random()) for n, b in BOX.items()}), seeds[0], "point"))
    jobs = jobs[:args.evaluations]
    file = EvaluationFile(Path(args.fit_file), args.budget_tokens, harness_digest())
    todo = [j for j in jobs if file.get(j.source, j.seed) is None]
    print(f"search.py fit: {len(jobs) - len(todo)} of {len(jobs)} evaluations already in {args.fit_file}",
          file=sys.stderr, flush=True)
    if todo:
        def progress(job, result, seconds):
            value = f"{result['val_bpb']:.4f}" if result["status"] == "ok" else result["status"]
            print(f"  {job.purpose:<6} {content_hash(job.source)[:8]} seed {job.seed}: {value} ({seconds:.0f} s)",
                  file=sys.stderr, flush=True)

        with real_executor(file, workers=args.workers, budget_tokens=args.budget_tokens,
                           on_result=progress) as executor:
            evaluate_all(executor, todo)
    rows = file.records()
    surrogate = Surrogate.load(Path(args.params))
    fitted = surrogate.fitted(rows, prior_weight=args.prior_weight)
    fitted.budget_tokens = args.budget_tokens
    fitted.fit.update(date=today(), machine=machine(), command="python benchmarks/search.py " + " ".join(args.argv),
                      fit_file=Path(args.fit_file).name)
    fitted.save(Path(args.params))
    noise = fitted.fit.get("noise_std_measured")
    print(f"seed noise at {args.budget_tokens:,} tokens: std {noise:.4f} over {args.noise_seeds} seeds"
          if noise is not None else "seed noise: not measured (fewer than two evaluations of one source)")
    print(f"surrogate: base {fitted.base:.4f}, noise {fitted.noise_std:.4f}, residual std "
          f"{fitted.fit['residual_std']:.4f} over {fitted.fit['evaluations']} evaluations -> {args.params}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--train", default=str(ROOT / "train.py"), help="the seed genome (default: train.py)")

    s = sub.add_parser("surrogate", parents=[common], help="compare methods and evo variants on the surrogate")
    s.add_argument("--params", default=str(PARAMS))
    s.add_argument("--starts", default="tuning", help="tuning, final, or start names joined by commas")
    s.add_argument("--reps", type=int, default=32)
    s.add_argument("--evaluations", type=int, default=32)
    s.add_argument("--variants", default="default", help=f"evo variants: all, or some of {', '.join(VARIANTS)}")
    s.add_argument("--reference", default="default", help="the variant the others are compared with")
    s.add_argument("--methods", default=",".join(METHODS))
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--seed-base", type=int, default=0)
    s.add_argument("--keep-records", action="store_true")
    s.add_argument("--out", default=str(RESULTS / "search_surrogate.json"))

    r = sub.add_parser("real", parents=[common], help="compare methods on real training runs")
    r.add_argument("--setting", choices=list(SETTINGS), default="quick")
    r.add_argument("--workers", type=int, default=None)
    r.add_argument("--methods", default=None)
    r.add_argument("--budget-tokens", type=int, default=None)
    r.add_argument("--records", default=None, help="finished searches, one JSON line each (resumed from)")
    r.add_argument("--evaluations-file", default=None,
                   help=f"finished evaluations, reused on a rerun (default {EVALUATIONS_FILE.relative_to(ROOT)})")
    r.add_argument("--out", default=None)

    f = sub.add_parser("fit", parents=[common], help="real evaluations for the surrogate, then refit it")
    f.add_argument("--evaluations", type=int, default=24)
    f.add_argument("--noise-seeds", type=int, default=3)
    f.add_argument("--budget-tokens", type=int, default=BUDGET_TOKENS)
    f.add_argument("--workers", type=int, default=None)
    f.add_argument("--fit-file", default=str(FIT_FILE))
    f.add_argument("--params", default=str(PARAMS))
    f.add_argument("--prior-weight", type=float, default=1.0)

    m = sub.add_parser("summary", help="the summary table of a real records file")
    m.add_argument("--records", default=str(RESULTS / "search_full.jsonl"))
    m.add_argument("--out", default=None)

    args = parser.parse_args(argv)
    args.argv = argv
    if args.mode in ("surrogate", "real", "fit") and not Path(args.train).is_file():
        sys.exit(f"search.py: --train {args.train}: no such file")
    if getattr(args, "reps", 1) < 1 or getattr(args, "evaluations", 1) < 1:
        sys.exit("search.py: --reps and --evaluations must be at least 1")
    return {"surrogate": surrogate_main, "real": real_main, "fit": fit_main, "summary": summary_main}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
