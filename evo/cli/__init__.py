"""The `evo` command: the one place that parses arguments and prints. The library below it raises EvoError with
one line; only main() catches it, prints it and exits non-zero.

    task_cmds.py    prepare, init, eval
    run_cmd.py      run (its flags come from RunConfig), the live view and stopping it
    store_cmds.py   status, sql, lineage, show, export, logs, plot: reads of a live or finished store
    replay_cmd.py   replay
    flags.py        flags built from the settings' dataclasses; live.py, tables.py: what the commands print
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from evo import __version__
from evo.cli import replay_cmd, run_cmd, store_cmds, task_cmds
from evo.errors import EvoError
from evo.text import printable
from operators.errors import OperatorError

EXIT_USAGE = 2


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace, list[str]], int]


COMMANDS = (
    Command("prepare", "prepare data and tokenizer (same as python prepare.py)", task_cmds.prepare_args,
            task_cmds.prepare),
    Command("eval", "train and score one train.py through the harness", task_cmds.eval_args, task_cmds.evaluate),
    Command("run", "evolve a population of train.py variants", run_cmd.run_args, run_cmd.run),
    Command("status", "the summary of a running or finished run", store_cmds.status_args, store_cmds.status),
    Command("sql", "read-only SQL over the store (also during a live run)", store_cmds.sql_args, store_cmds.sql),
    Command("lineage", "the path from the seed to an individual, step by step", store_cmds.lineage_args,
            store_cmds.lineage),
    Command("show", "an individual's train.py (or its diff against its parent)", store_cmds.show_args,
            store_cmds.show),
    Command("export", "write an individual's train.py to a file", store_cmds.export_args, store_cmds.export),
    Command("replay", "re-evaluate the path from the seed to ID (and ablate each step)", replay_cmd.replay_args,
            replay_cmd.replay),
    Command("plot", "progress and lineage pictures of a run (PNG)", store_cmds.plot_args, store_cmds.plot),
    Command("logs", "the captured output of an evaluation", store_cmds.logs_args, store_cmds.logs),
    Command("init", "write prepare.py, train.py and program.md into a new directory", task_cmds.init_args,
            task_cmds.init),
)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="evo", description="Evolutionary population search over train.py.")
    top.add_argument("--version", action="version", version=f"evo {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.arguments(sub.add_parser(command.name, help=command.help))
    return top


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("EVO_LOG_LEVEL", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    top = parser()
    argv = sys.argv[1:] if argv is None else argv
    args = top.parse_args(argv)
    if not args.command:
        top.print_help()
        return EXIT_USAGE
    handler = next(c.handler for c in COMMANDS if c.name == args.command)
    try:
        return handler(args, argv)
    except (EvoError, OperatorError) as e:
        message = str(e).removeprefix(f"evo {args.command}: ")
        print(f"evo {args.command}: error: {printable(message)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"evo {args.command}: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    sys.exit(main())
