"""The commands that read a store: `evo sql`, `evo lineage`, `evo show`, `evo export`, `evo logs`."""

from __future__ import annotations

import csv
import datetime
import decimal
import json
import sys
from pathlib import Path

from evo import lookup
from evo.errors import ConfigError


def _plain(value):
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return value


def format_rows(columns: list[str], rows: list[tuple], fmt: str) -> str:
    """Rows as an aligned table, CSV or a JSON list of objects."""
    if fmt == "json":
        return json.dumps([{c: _plain(v) for c, v in zip(columns, row)} for row in rows], default=str)
    if fmt == "csv":
        import io

        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_plain(v) for v in row] for row in rows])
        return out.getvalue().rstrip("\n")
    cells = [[("NULL" if v is None else f"{v:.6g}" if isinstance(v, float) else str(_plain(v))).replace("\n", "\\n")
              for v in row] for row in rows]
    widths = [min(60, max([len(c)] + [len(r[i]) for r in cells])) for i, c in enumerate(columns)]
    clip = lambda text, w: text if len(text) <= w else text[:w - 1] + "…"
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(clip(v, w).ljust(w) for v, w in zip(r, widths)) for r in cells]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(line.rstrip() for line in lines)


def cmd_sql(args, argv) -> int:
    if args.format not in ("table", "csv", "json"):
        raise ConfigError(f"--format must be table, csv or json; got {args.format!r}")
    with lookup.store_query(args.db) as q:
        columns, rows = q(args.query)
    print(format_rows(columns, rows, args.format))
    return 0


def _bpb(n: lookup.Node) -> str:
    if n.mean_bpb is None:
        return "-"
    spread = f" ± {n.std_bpb:.4f}" if n.std_bpb is not None and n.n > 1 else ""
    return f"{n.mean_bpb:.4f}{spread} (n={n.n})"


def cmd_lineage(args, argv) -> int:
    from genome import unified_diff

    with lookup.store_query(args.db) as q:
        run_id = lookup.latest_run(q, args.run)
        path = lookup.path_from_seed(q, run_id, lookup.resolve(q, run_id, args.id))
        sources = {n.id: lookup.source(q, run_id, n.id) for n in path} if args.diff else {}
    print(f"run {run_id}: {len(path) - 1} step(s) from the seed to {path[-1].id}")
    print(f"  seed {path[0].id}  val_bpb {_bpb(path[0])}")
    for before, after in zip(path, path[1:]):
        delta = ""
        if before.mean_bpb is not None and after.mean_bpb is not None:
            delta = f"  ({after.mean_bpb - before.mean_bpb:+.4f})"
        second = f" + {after.second_parent}" if after.second_parent else ""
        print(f"  {after.operator:<16} {after.id}{second}  {_bpb(before)} -> {_bpb(after)}{delta}")
        print(f"      {after.description or '(no description)'}")
        if args.diff:
            diff = unified_diff(sources[before.id], sources[after.id], a_name=f"a/{before.id}/train.py",
                                b_name=f"b/{after.id}/train.py")
            print("\n".join("      " + line for line in diff.splitlines()))
    return 0


def _genome(q, args) -> tuple[str, str, str]:
    """(run id, individual id, source) of the individual args.id names in args.run (default: the latest run)."""
    run_id = lookup.latest_run(q, args.run)
    id = lookup.resolve(q, run_id, args.id)
    return run_id, id, lookup.source(q, run_id, id)


def cmd_show(args, argv) -> int:
    from genome import unified_diff

    with lookup.store_query(args.db) as q:
        run_id, id, text = _genome(q, args)
        if args.diff:
            parent = lookup.node(q, run_id, id).parent
            if parent is None:
                raise ConfigError(f"{id} is a seed: it has no parent to diff against")
            text = unified_diff(lookup.source(q, run_id, parent), text, a_name=f"a/{parent}/train.py",
                                b_name=f"b/{id}/train.py")
    sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
    return 0


def cmd_export(args, argv) -> int:
    with lookup.store_query(args.db) as q:
        _, id, text = _genome(q, args)
    out = Path(args.output)
    if out.is_dir():
        raise ConfigError(f"-o {args.output} is a directory; give a file name such as {out / 'train.py'}")
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} ({id})")
    return 0


def cmd_logs(args, argv) -> int:
    with lookup.store_query(args.db) as q:
        sys.stdout.write(lookup.evaluation_log(q, args.evaluation_id).rstrip("\n") + "\n")
    return 0
