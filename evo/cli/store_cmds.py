"""The commands that read a store, live or finished: `evo status`, `evo sql`, `evo lineage`, `evo show`,
`evo export`, `evo logs`, `evo plot`. Each reads through evo.store.open_view, so a live run answers them too."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evo.cli.live import summary_lines
from evo.cli.tables import format_rows
from evo.errors import ConfigError, StoreError
from evo.text import mean_std, one_line, printable


def _store_flags(p: argparse.ArgumentParser, run: bool = False) -> None:
    """--db, and --run for a command that looks at one run, as every command that uses the store spells them."""
    p.add_argument("--db", default="evo.duckdb", help="the store (default evo.duckdb)")
    if run:
        p.add_argument("--run", help="the run (default: the latest)")


def _view(db: str):
    from evo.store import open_view

    if not Path(db).exists():
        raise StoreError(f"no database at {db}")
    return open_view(db)


def status_args(p: argparse.ArgumentParser) -> None:
    _store_flags(p)
    p.add_argument("--json", action="store_true", help="print the status as JSON")


def status(args, argv) -> int:
    with _view(args.db) as store:
        s = store.run_status()
    print(json.dumps(s.as_dict(), default=str) if args.json else "\n".join(summary_lines(s)))
    return 0


def sql_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("query", metavar="QUERY")
    _store_flags(p)
    p.add_argument("--format", default="table", help="table, csv or json (default table)")


def sql(args, argv) -> int:
    if args.format not in ("table", "csv", "json"):
        raise ConfigError(f"--format must be table, csv or json; got {args.format!r}")
    with _view(args.db) as store:
        columns, rows = store.query(args.query)
    print(format_rows(columns, rows, args.format))
    return 0


def lineage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", metavar="ID", help="an individual id (or a unique prefix of 4+ characters)")
    _store_flags(p, run=True)
    p.add_argument("--diff", action="store_true", help="show each step's diff")


def _bpb(step) -> str:
    if step.mean_bpb is None:
        return "-"
    return mean_std(step.mean_bpb, step.std_bpb, step.n)


def _why(step) -> str:
    """Why a step left the search (disqualified, rejected), said after it; nothing for one that did not."""
    return f"  [{step.status}: {step.reason}]" if step.status == "rejected" and step.reason else ""


def _line(text: str) -> None:
    """One line of `evo lineage`: what a child or an operator wrote in it (a description, a reason) is escaped."""
    print(one_line(text))


def lineage(args, argv) -> int:
    from genome import unified_diff

    with _view(args.db) as store:
        run_id = store.run(args.run).run_id
        path = store.lineage(run_id, store.resolve(run_id, args.id), with_source=args.diff)
        tainted = store.disqualified_ancestor(run_id, path[-1].id)
    _line(f"run {run_id}: {len(path) - 1} step(s) from the seed to {path[-1].id}")
    if tainted:
        _line(f"  descends from {tainted[0]}, {tainted[1]}")
    _line(f"  seed {path[0].id}  val_bpb {_bpb(path[0])}{_why(path[0])}")
    for before, after in zip(path, path[1:]):
        delta = ""
        if before.mean_bpb is not None and after.mean_bpb is not None:
            delta = f"  ({after.mean_bpb - before.mean_bpb:+.4f})"
        second = f" + {after.second_parent}" if after.second_parent else ""
        _line(f"  {after.operator:<16} {after.id}{second}  {_bpb(before)} -> {_bpb(after)}{delta}")
        _line(f"      {after.description or '(no description)'}{_why(after)}")
        if args.diff:
            diff = unified_diff(before.source or "", after.source or "", a_name=f"a/{before.id}/train.py",
                                b_name=f"b/{after.id}/train.py")
            print(printable("\n".join("      " + line for line in diff.splitlines())))
    return 0


def _id_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", metavar="ID")
    _store_flags(p, run=True)


def show_args(p: argparse.ArgumentParser) -> None:
    _id_args(p)
    p.add_argument("--diff", action="store_true", help="the diff against its first parent")


def _say_why(store, run_id: str, id: str) -> None:
    """On stderr (stdout is the source), one line when the individual or an ancestor of it was disqualified."""
    from evo.integrity import DISQUALIFIED

    me = store.individual(run_id, id, with_source=False)
    if me.status == "rejected" and (me.reason or "").startswith(DISQUALIFIED):
        print(one_line(f"evo show: {id} is {me.reason}"), file=sys.stderr)
    elif (tainted := store.disqualified_ancestor(run_id, id)) is not None:
        print(one_line(f"evo show: {id} descends from {tainted[0]}, {tainted[1]}"), file=sys.stderr)


def show(args, argv) -> int:
    from genome import unified_diff

    with _view(args.db) as store:
        run_id = store.run(args.run).run_id
        id = store.resolve(run_id, args.id)
        text = store.source_of(run_id, id)
        _say_why(store, run_id, id)
        if args.diff:
            parents = store.individual(run_id, id, with_source=False).parents
            if not parents:
                raise ConfigError(f"{id} is a seed: it has no parent to diff against")
            text = unified_diff(store.source_of(run_id, parents[0]), text, a_name=f"a/{parents[0]}/train.py",
                                b_name=f"b/{id}/train.py")
    text = printable(text)  # a source an operator wrote may hold what a terminal acts on; `evo export` keeps it
    sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
    return 0


def export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", metavar="ID")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    _store_flags(p, run=True)


def export(args, argv) -> int:
    out = Path(args.output)
    if out.is_dir():
        raise ConfigError(f"-o {args.output} is a directory; give a file name such as {out / 'train.py'}")
    with _view(args.db) as store:
        run_id = store.run(args.run).run_id
        id = store.resolve(run_id, args.id)
        text = store.source_of(run_id, id)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} ({id})")
    return 0


def logs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("evaluation_id", metavar="EVAL_ID")
    _store_flags(p)


def logs(args, argv) -> int:
    if not args.evaluation_id.isdigit():
        raise StoreError(f"an evaluation id is a number; got {args.evaluation_id!r}")
    with _view(args.db) as store:
        text = store.evaluation_log(int(args.evaluation_id))
        if not text:
            query = f"SELECT status, error FROM evaluations WHERE id = {int(args.evaluation_id)}"
            e = next(iter(store.query(query)[1]))
            text = f"(no output captured; status {e[0]}{': ' + e[1] if e[1] else ''})"
    sys.stdout.write(printable(text.rstrip("\n")) + "\n")
    return 0


def plot_args(p: argparse.ArgumentParser) -> None:
    _store_flags(p, run=True)
    p.add_argument("--out", default="progress.png", help="the progress picture; the lineage tree goes beside it")


def plot(args, argv) -> int:
    from evo.plot import plot_run

    with _view(args.db) as store:
        for path in plot_run(store, args.out, args.run):
            print(f"wrote {path}")
    return 0
