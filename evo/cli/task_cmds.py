"""The task commands: `evo prepare`, `evo init`, `evo eval`."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from evo.cli.flags import add_flags, values
from evo.config import EvalConfig
from evo.text import one_line, printable


def prepare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("args", nargs=argparse.REMAINDER, help="passed to prepare.py (--text-dir DIR, --source, --force)")


def prepare(args, argv) -> int:
    from evo.task_files import harness_path

    extra = [a for a in args.args if a != "--"]
    return subprocess.call([sys.executable, str(harness_path()), *extra])


def init_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--force", action="store_true", help="overwrite existing task files")


def init(args, argv) -> int:
    from evo.task_files import init_task

    for path in init_task(args.dir, force=args.force):
        print(f"wrote {path}")
    print(f"next: cd {args.dir} && evo prepare && evo eval train.py")
    return 0


def eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE")
    add_flags(p, EvalConfig)
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--quiet", action="store_true", help="do not echo the training output")


def evaluate(args, argv) -> int:
    from evo.evaluate_file import evaluate_file
    from evo.sandbox.environment import passed_values

    config = EvalConfig(**values(args, EvalConfig))
    passed = passed_values(config.env, os.environ)
    echo = None if (args.json or args.quiet) else \
        (lambda line: print(f"  | {printable(line)}", file=sys.stderr, flush=True))
    result = evaluate_file(args.file, config, on_line=echo,
                           notify=None if args.json else lambda m: print(printable(m), file=sys.stderr), env=passed)
    if args.json:
        print(json.dumps(result, allow_nan=False))
    else:
        print("\n".join(result_lines(result)))
    return 0 if result["status"] == "ok" else 1


def result_lines(r: dict) -> list[str]:
    """autoresearch's summary block for an ok result; the status and its reason otherwise."""
    if r["status"] != "ok":
        return [f"status:           {one_line(r['status'])}", f"error:            {one_line(r['error'])}"]

    def number(name: str, spec: str, scale: float = 1.0) -> str:
        if r.get(name) is None:
            return "-"  # a field the result lacks
        return f"{r[name] / scale if scale != 1.0 else r[name]:{spec}}"  # a count stays an int ('d')

    return [
        "status:           ok",
        f"val_bpb:          {r['val_bpb']:.6f}",
        *([f"test_bpb:         {r['test_bpb']:.6f}"] if r.get("test_bpb") is not None else []),
        f"training_seconds: {number('training_seconds', '.1f')}",
        f"total_seconds:    {number('total_seconds', '.1f')}",
        f"total_tokens_M:   {number('tokens', '.3f', 1e6)}",
        f"peak_memory_mb:   {number('peak_memory_mb', '.1f')}",
        f"num_steps:        {number('num_steps', 'd')}",
        f"num_params_M:     {number('num_params', '.2f', 1e6)}",
        f"seed:             {r['seed']}",
    ]
