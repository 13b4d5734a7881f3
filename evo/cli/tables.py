"""Rows as text: an aligned table, CSV, or a JSON list of objects (`evo sql --format`)."""

from __future__ import annotations

import csv
import datetime
import decimal
import io
import json

from evo.text import one_line


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
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_plain(v) for v in row] for row in rows])
        return out.getvalue().rstrip("\n")
    cells = [[one_line("NULL" if v is None else f"{v:.6g}" if isinstance(v, float) else str(_plain(v)))
              for v in row] for row in rows]
    widths = [min(60, max([len(c)] + [len(r[i]) for r in cells])) for i, c in enumerate(columns)]
    def clip(text, w):
        return text if len(text) <= w else text[:w - 1] + "…"
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(clip(v, w).ljust(w) for v, w in zip(r, widths)) for r in cells]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(line.rstrip() for line in lines)
