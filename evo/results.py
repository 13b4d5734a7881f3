"""What an evaluation's result may hold: each field's type and bound, checked wherever a result is read.

A result is made by processes that ran a child (evo.sandbox.evaluation: the batch server's count, the scorer's pipe,
what the child said of its model), carried over Ray (evo.workers), or read back from a store an older or buggy evo
wrote.
Whatever it holds, nothing that reads it may raise on it (the engine, the policy, the store, the CLI):

    scores    val_bpb, test_bpb: a number in [0, MAX_BPB], or None. A NaN or infinite one makes the evaluation
              `rejected`, its error starting NON_FINITE ("non-finite val_bpb: inf"), the way the metric itself
              refuses NaN or infinite losses (prepare.py); evo.integrity reads such a rejection as a divergence,
              not a cheat
    reported  device, peak_memory_mb: what the training process says of its model, the only fields the child sets.
              reported_fields() checks them where the sandbox takes them; out of type or bound, the evaluation is
              a breach of the harness protocol (prepare.submit() always sends a device name and a number)
    numbers   seconds, counts, sizes: int or float as FIELDS says, finite and within its bounds
    strings   short and printable

typed(record) gives the record with every field so: a field out of type or bound is dropped (None) with a note in
its log; a malformed status or score makes the evaluation a failed one (`crash`, "malformed result: ..."), a
non-finite score a rejected one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

NON_FINITE = "non-finite"        # how a rejection for a NaN or infinite score starts (prepare.py's metric too)
STATUSES = ("ok", "crash", "timeout", "oom", "rejected", "interrupted")
SCORES = ("val_bpb", "test_bpb")
MAX_BPB = 1e100                  # above anything the metric can give (float32 losses), below any overflow
MAX_SECONDS = 1e9
MAX_COUNT = 2**63 - 1
MAX_MEMORY_MB = 2.0**30          # a pebibyte
MAX_DEVICE = 64                  # characters of a device name ("cuda:0", "cpu", "mps")
MAX_NAME = 256                   # characters of a worker or node name
SHOWN = 80                       # characters of a refused value quoted in a note

# name: (type, low, high); a float field takes ints too.
FIELDS: dict[str, tuple[type, float, float]] = {
    "seed": (int, -MAX_COUNT - 1, MAX_COUNT),
    "budget_seconds": (float, 0.0, MAX_SECONDS),
    "budget_tokens": (int, 0, MAX_COUNT),
    "training_seconds": (float, 0.0, MAX_SECONDS),
    "eval_seconds": (float, 0.0, MAX_SECONDS),
    "total_seconds": (float, 0.0, MAX_SECONDS),
    "tokens": (int, 0, MAX_COUNT),
    "num_steps": (int, 0, MAX_COUNT),
    "num_params": (int, 0, MAX_COUNT),
    "peak_memory_mb": (float, 0.0, MAX_MEMORY_MB),
}
NAMES = {"device": MAX_DEVICE, "worker": MAX_NAME, "node": MAX_NAME, "limits": MAX_NAME}


def shown(value: Any) -> str:
    """A value as a note quotes it: its repr (control characters escaped), cut at SHOWN characters."""
    text = ascii(value)
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}... ({len(text):,} characters)"


def _number(value: Any, kind: type, low: float, high: float) -> str | None:
    """Why value is not a number of this kind within [low, high], or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        return f"not {'an integer' if kind is int else 'a number'}"
    if not math.isfinite(value):
        return "not finite"
    if not low <= value <= high:
        return f"outside [{low:g}, {high:g}]"
    return None


def _name(value: Any, limit: int) -> str | None:
    """Why value is not a short printable string, or None."""
    if not isinstance(value, str):
        return "not a string"
    if len(value) > limit:
        return f"longer than {limit} characters"
    if not value.isprintable():
        return "not printable"
    return None


def score_problem(value: Any) -> str | None:
    """Why value cannot be a score (val_bpb, test_bpb), or None: NON_FINITE for NaN and infinities."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isfinite(value):
        return NON_FINITE
    return _number(value, float, 0.0, MAX_BPB)


def reported_fields(info: Mapping[str, Any]) -> tuple[str | None, float | None, str | None]:
    """(device, peak_memory_mb, problem) from what the training process said of its model: the two fields as sent
    when both are in type and bound, else problem says which is not (a breach of the protocol) and it is None."""
    device, peak = info.get("device"), info.get("peak_memory_mb")
    problems = []
    if device is not None and (why := _name(device, MAX_DEVICE)):
        problems.append(f"it reported its device as {shown(device)} ({why})")
        device = None
    if peak is not None and (why := _number(peak, *FIELDS["peak_memory_mb"])):
        problems.append(f"it reported peak_memory_mb {shown(peak)} ({why})")
        peak = None
    return device, (None if peak is None else float(peak)), "; ".join(problems) or None


def typed(record: Mapping[str, Any]) -> dict:
    """The record with every field in type and bound (see the module docstring); other keys are kept as they are.
    Never raises for what the record holds."""
    out = dict(record)
    notes = []
    status = out.get("status")
    if status not in STATUSES:
        out.update(status="crash", error=f"malformed result: status {shown(status)}")
        status = "crash"
    for name, (kind, low, high) in FIELDS.items():
        value = out.get(name)
        if value is not None and (why := _number(value, kind, low, high)):
            notes.append(f"evo: {name} {shown(value)} dropped ({why})")
            out[name] = None
    for name, limit in NAMES.items():
        value = out.get(name)
        if value is not None and (why := _name(value, limit)):
            notes.append(f"evo: {name} {shown(value)} dropped ({why})")
            out[name] = None
    for name in ("error", "log"):
        if out.get(name) is not None and not isinstance(out[name], str):
            out[name] = shown(out[name])
    for name in SCORES:
        value = out.get(name)
        why = None if value is None else score_problem(value)
        if why is None:
            continue
        out[name] = None
        if status != "ok":
            notes.append(f"evo: {name} {shown(value)} of a failed evaluation dropped ({why})")
        elif why == NON_FINITE:
            out.update(status="rejected", val_bpb=None, test_bpb=None, error=f"{NON_FINITE} {name}: {value!r}")
            status = "rejected"
        else:
            out.update(status="crash", val_bpb=None, test_bpb=None,
                       error=f"malformed result: {name} {shown(value)} ({why})")
            status = "crash"
    if status == "ok" and out.get("val_bpb") is None:
        out.update(status="crash", error="malformed result: an ok evaluation without val_bpb")
    if notes:
        out["log"] = "\n".join(notes) + "\n" + (out.get("log") or "")
    return out
