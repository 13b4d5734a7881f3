"""The `evo` command: parses arguments, calls the library, and owns the terminal.

Only this module catches EvoError: it prints one line and exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from evo import __version__
from evo.errors import ConfigError, EvoError, TaskError
from operators.errors import OperatorError

EXIT_USAGE = 2


def _store_flags(p: argparse.ArgumentParser, run: bool = False) -> None:
    """--db, and --run for a command that looks at one run, as every command that uses the store spells them."""
    p.add_argument("--db", default="evo.duckdb", help="the store (default evo.duckdb)")
    if run:
        p.add_argument("--run", help="the run (default: the latest)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evo", description="Evolutionary population search over train.py.")
    parser.add_argument("--version", action="version", version=f"evo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("prepare", help="prepare data and tokenizer (same as python prepare.py)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="passed to prepare.py (--text-dir DIR, --source, --force)")

    p = sub.add_parser("eval", help="train and score one train.py through the harness")
    p.add_argument("file", metavar="FILE")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--budget-seconds", type=float, metavar="S", help="training budget in seconds")
    budget.add_argument("--budget-tokens", type=int, metavar="N", help="training budget in tokens")
    p.add_argument("--seed", type=int, default=None, help="evaluation seed (default: the harness's)")
    p.add_argument("--time-limit", type=float, metavar="S", help="wall-clock limit of training (default: from budget)")
    p.add_argument("--threads", type=int, metavar="N", help="torch threads (default: torch's own choice)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--quiet", action="store_true", help="do not echo the training output")

    p = sub.add_parser("run", help="evolve a population of train.py variants")
    p.add_argument("--population", type=int, default=16, help="population size (default 16)")
    stop = p.add_argument_group("stop conditions (extendable with --resume)")
    stop.add_argument("--evaluations", type=int, metavar="N", help="search evaluations to run (default 32)")
    stop.add_argument("--hours", type=float, metavar="H", help="hours of searching")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--budget-seconds", type=float, metavar="S", help="training budget per evaluation, seconds")
    budget.add_argument("--budget-tokens", type=int, metavar="N", help="training budget per evaluation, tokens")
    p.add_argument("--operators", default="hyper,merge,llm",
                   help="operator mix, e.g. hyper,merge,llm or hyper=3,llm=1 (default hyper,merge,llm)")
    p.add_argument("--selection", default="tournament", help="tournament, best or random (default tournament)")
    p.add_argument("--tournament-size", type=int, default=3, help="contestants per tournament (default 3)")
    p.add_argument("--elites", type=int, default=2, help="best members always kept and confirmed (default 2)")
    p.add_argument("--workers", type=int, help="evaluations at once (default: one per GPU, else cores / 2)")
    p.add_argument("--address", help="join this Ray cluster (HOST:PORT) instead of starting a local one")
    _store_flags(p)
    p.add_argument("--resume", action="store_true", help="continue the latest run in --db")
    p.add_argument("--seed", type=int, default=0, help="the run's random seed (default 0)")
    p.add_argument("--train", default="train.py", help="the seed genome (default train.py)")
    p.add_argument("--program", default="program.md", help="the research direction (default program.md)")
    p.add_argument("--model", help="Claude model for the LLM operators")
    p.add_argument("--max-llm-cost", type=float, metavar="USD", help="stop making LLM calls past this spend")
    p.add_argument("--noise-seeds", type=int, default=3, help="seeds the seed genome is measured on (default 3)")
    p.add_argument("--confirm-seeds", type=int, default=2, help="fresh seeds each elite is confirmed on (default 2)")
    p.add_argument("--no-preflight", dest="preflight", action="store_false", help="skip the one-step pre-flight")
    p.add_argument("--time-limit", type=float, metavar="S", help="wall-clock limit per training (default: budget)")
    p.add_argument("--memory-mb", type=float, default=0, help="resident memory limit per evaluation (default none)")
    p.add_argument("--quiet", action="store_true", help="no live view; only the final lines")
    p.add_argument("--allow-unshielded", action="store_true",
                   help="search even where training cannot be shielded (children could then forge their scores)")

    p = sub.add_parser("status", help="the summary of a running or finished run")
    _store_flags(p)
    p.add_argument("--json", action="store_true", help="print the status as JSON")

    p = sub.add_parser("sql", help="read-only SQL over the store (also during a live run)")
    p.add_argument("query", metavar="QUERY")
    _store_flags(p)
    p.add_argument("--format", default="table", help="table, csv or json (default table)")

    p = sub.add_parser("lineage", help="the path from the seed to an individual, step by step")
    p.add_argument("id", metavar="ID", help="an individual id (or a unique prefix of 4+ characters)")
    _store_flags(p, run=True)
    p.add_argument("--diff", action="store_true", help="show each step's diff")

    p = sub.add_parser("show", help="an individual's train.py (or its diff against its parent)")
    p.add_argument("id", metavar="ID")
    _store_flags(p, run=True)
    p.add_argument("--diff", action="store_true", help="the diff against its first parent")

    p = sub.add_parser("export", help="write an individual's train.py to a file")
    p.add_argument("id", metavar="ID")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    _store_flags(p, run=True)

    p = sub.add_parser("replay", help="re-evaluate the path from the seed to ID (and ablate each step)")
    p.add_argument("id", metavar="ID")
    _store_flags(p, run=True)
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, metavar="K", help="fresh seeds, shared by every step (default 3)")
    seeds.add_argument("--same-seeds", action="store_true", help="each individual's recorded seeds")
    p.add_argument("--ablate", action="store_true", help="remove each step from ID alone and re-evaluate")
    p.add_argument("--workers", type=int, help="evaluations at once (default: the run's)")
    p.add_argument("--address", help="a Ray cluster to run on (HOST:PORT)")

    p = sub.add_parser("plot", help="progress and lineage pictures of a run (PNG)")
    _store_flags(p, run=True)
    p.add_argument("--out", default="progress.png", help="the progress picture; the lineage tree goes beside it")

    p = sub.add_parser("logs", help="the captured output of an evaluation")
    p.add_argument("evaluation_id", metavar="EVAL_ID")
    _store_flags(p)

    p = sub.add_parser("init", help="write prepare.py, train.py and program.md into a new directory")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--force", action="store_true", help="overwrite existing task files")
    return parser


def _cmd_prepare(args, argv) -> int:
    from evo.task import harness_path

    extra = [a for a in args.args if a != "--"]
    return subprocess.call([sys.executable, str(harness_path()), *extra])


def _cmd_init(args, argv) -> int:
    from evo.task import init_task

    written = init_task(args.dir, force=args.force)
    for path in written:
        print(f"wrote {path}")
    print(f"next: cd {args.dir} && evo prepare && evo eval train.py")
    return 0


def _cmd_eval(args, argv) -> int:
    from evo.evaluate_file import evaluate_file

    if args.seed is not None and args.seed < 0:
        raise ConfigError(f"--seed must be 0 or more; got {args.seed}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be 1 or more; got {args.threads}")
    if args.time_limit is not None and not args.time_limit > 0:
        raise ConfigError(f"--time-limit must be positive; got {args.time_limit:g}")
    echo = None if (args.json or args.quiet) else (lambda line: print(f"  | {line}", file=sys.stderr, flush=True))
    result = evaluate_file(args.file, budget_seconds=args.budget_seconds, budget_tokens=args.budget_tokens,
                           seed=args.seed, time_limit=args.time_limit, threads=args.threads,
                           on_line=echo, notify=None if args.json else lambda m: print(m, file=sys.stderr))
    if args.json:
        print(json.dumps(result))
    else:
        _print_result(result)
    return 0 if result["status"] == "ok" else 1


def _print_result(r: dict) -> None:
    if r["status"] == "ok":
        print(f"status:           ok")
        print(f"val_bpb:          {r['val_bpb']:.6f}")
        print(f"training_seconds: {r['training_seconds']:.1f}")
        print(f"total_seconds:    {r['total_seconds']:.1f}")
        print(f"total_tokens_M:   {r['tokens'] / 1e6:.3f}")
        print(f"peak_memory_mb:   {r['peak_memory_mb']:.1f}")
        print(f"num_steps:        {r['num_steps']}")
        print(f"num_params_M:     {r['num_params'] / 1e6:.2f}")
        print(f"seed:             {r['seed']}")
    else:
        print(f"status:           {r['status']}")
        print(f"error:            {r['error']}")


RUN_FLAGS = ("population", "evaluations", "hours", "budget_seconds", "budget_tokens", "operators", "selection",
             "tournament_size", "elites", "workers", "address", "db", "resume", "seed", "train", "program", "model",
             "max_llm_cost", "noise_seeds", "confirm_seeds", "preflight", "time_limit", "memory_mb", "quiet",
             "allow_unshielded")


def _given(argv: list[str]) -> set[str]:
    """The run settings the user typed (as opposed to defaults): --resume refuses only those that conflict."""
    names = set()
    for arg in argv:
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0].replace("-", "_")
            names.add("preflight" if name == "no_preflight" else name)
    return names


def _cmd_run(args, argv) -> int:
    from evo.config import RunConfig
    from evo.launch import run
    from operators.registry import REGISTRY

    given = _given(argv)
    values = {name: getattr(args, name) for name in RUN_FLAGS}
    values["operators"] = REGISTRY.parse_weights(args.operators)
    if not args.resume and values["evaluations"] is None and values["hours"] is None:
        values["evaluations"] = 32
    return run(RunConfig(**values), given)


def _cmd_status(args, argv) -> int:
    from evo.status import print_status

    return print_status(args.db, as_json=args.json)


def _cmd_replay(args, argv) -> int:
    from evo.replay import run_replay

    return run_replay(args)


def _cmd_plot(args, argv) -> int:
    from pathlib import Path

    from evo.errors import StoreError
    from evo.plot import plot_run
    from evo.status import live_actor
    from evo.store import open_reader

    if live_actor(args.db) is not None:
        raise StoreError(f"{args.db} is held by a live run; plot it when the run has finished")
    if not Path(args.db).exists():
        raise StoreError(f"no database at {args.db}")
    with open_reader(args.db) as reader:
        for path in plot_run(reader, args.out, args.run):
            print(f"wrote {path}")
    return 0


def _inspect(name):
    def handler(args, argv):
        from evo import inspect_cmds

        return getattr(inspect_cmds, f"cmd_{name}")(args, argv)
    return handler


COMMANDS = {"prepare": _cmd_prepare, "eval": _cmd_eval, "init": _cmd_init, "run": _cmd_run, "status": _cmd_status,
            "replay": _cmd_replay, "plot": _cmd_plot,
            **{name: _inspect(name) for name in ("sql", "lineage", "show", "export", "logs")}}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("EVO_LOG_LEVEL", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    parser = _parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args, argv)
    except (EvoError, OperatorError) as e:
        message = str(e).removeprefix(f"evo {args.command}: ")
        print(f"evo {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"evo {args.command}: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
