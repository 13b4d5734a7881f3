"""The search box of benchmarks/search.py: explicit bounds for every constant of the seed train.py's hyperparameter
view, and the starts the searches begin from. Fixed before any comparison was run.

How the bounds were chosen:
- rates, scales and the init: about 10x either way of the seed's value on a log scale (LEARNING_RATE 3e-4..3e-2
  around 3e-3, EMBED_LR_SCALE 0.1..10 around 1), wider for constants that matter little (ROPE_BASE 1e2..1e6);
- Adam's betas on the scale of 1 - beta, from "short memory" (0.5, 0.8) to "long" (0.98, 0.999);
- the schedule's fractions on a linear scale, with WARMUP_FRACTION + WARMDOWN_FRACTION at most 1 everywhere;
- the sizes so that the largest model costs at most about 7x the seed per token (DEPTH up to 4, WIDTH up to 256,
  MLP_RATIO up to 6), and every WIDTH / N_HEADS is divisible and even (head sizes 16..256);
- BATCH_SIZE up to 32: at 64 (16,384 tokens a step) the first real evaluations timed out on 2 shared cores, a step
  taking longer than the 5 s the harness allows for handing the weights over once the budget is spent;
- every point of the box keeps every constraint the genome infers from the seed (checked by check_box), so each
  method's every point is a child `evo run` could have made.

The starts: the seed, and three of our own far from good (a learning rate at or near the box's floor, a large batch
that leaves few steps in the budget, an init, optimiser or schedule at an edge). far-1 is the start used while the
search was being changed; far-2 and far-3 are kept for the final comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from genome import hyperparameters, infer_rules, rewrite


def round_sig(value: float, digits: int = 3) -> float:
    return float(f"{value:.{digits}g}")


@dataclass(frozen=True)
class Bound:
    """One constant's range. scale: "int" (every integer), "pow2" (powers of two), "log", "linear" (floats), or
    "beta" (a float in (0, 1) moved on the scale of 1 - value). unit() maps a value to [0, 1] on that scale."""

    name: str
    scale: str
    low: float
    high: float

    def __post_init__(self):
        if self.scale not in ("int", "pow2", "log", "linear", "beta") or not self.low < self.high:
            raise ValueError(f"bad bound for {self.name}: {self.scale} [{self.low}, {self.high}]")

    def _t(self, value: float) -> float:
        if self.scale in ("log", "pow2"):
            return math.log(value)
        if self.scale == "beta":
            return -math.log(1.0 - value)
        return float(value)

    def unit(self, value) -> float:
        """value's place in the box on this bound's scale: 0 at low, 1 at high (outside for values outside)."""
        lo, hi = self._t(self.low), self._t(self.high)
        return (self._t(value) - lo) / (hi - lo)

    def at(self, u: float):
        """The value at place u in [0, 1], rounded as an operator writes it (3 significant digits, whole numbers,
        powers of two)."""
        u = min(1.0, max(0.0, u))
        lo, hi = self._t(self.low), self._t(self.high)
        t = lo + u * (hi - lo)
        if self.scale == "int":
            return int(min(self.high, max(self.low, round(t))))
        if self.scale == "pow2":
            return int(min(self.high, max(self.low, 2 ** round(math.log2(math.exp(t))))))
        if self.scale == "log":
            return self.clip(round_sig(math.exp(t)))
        if self.scale == "beta":
            return self.clip(1.0 - round_sig(math.exp(-t), 2))
        return self.clip(round(t, 4))

    def clip(self, value):
        """value moved to the nearest point of the box (same type)."""
        if isinstance(value, int) and not isinstance(value, bool):
            return int(min(self.high, max(self.low, value)))
        return float(min(self.high, max(self.low, value)))

    def contains(self, value) -> bool:
        return self.low <= value <= self.high

    def choices(self) -> list[int] | None:
        """The values of an integer bound, in order (None for a float bound)."""
        if self.scale == "int":
            return list(range(int(self.low), int(self.high) + 1))
        if self.scale == "pow2":
            return [2 ** k for k in range(int(math.log2(self.low)), int(math.log2(self.high)) + 1)]
        return None


BOX: dict[str, Bound] = {b.name: b for b in (
    Bound("DEPTH", "int", 1, 4),
    Bound("WIDTH", "pow2", 64, 256),
    Bound("N_HEADS", "pow2", 1, 4),
    Bound("MLP_RATIO", "int", 1, 6),
    Bound("BATCH_SIZE", "pow2", 4, 32),
    Bound("LEARNING_RATE", "log", 3e-4, 3e-2),
    Bound("EMBED_LR_SCALE", "log", 0.1, 10.0),
    Bound("WEIGHT_DECAY", "log", 1e-4, 0.3),
    Bound("ADAM_BETA1", "beta", 0.5, 0.98),
    Bound("ADAM_BETA2", "beta", 0.8, 0.999),
    Bound("WARMUP_FRACTION", "linear", 0.0, 0.2),
    Bound("WARMDOWN_FRACTION", "linear", 0.1, 0.8),
    Bound("FINAL_LR_FRACTION", "linear", 0.0, 0.5),
    Bound("GRAD_CLIP", "log", 0.1, 10.0),
    Bound("LOGIT_SOFTCAP", "log", 3.0, 100.0),
    Bound("ROPE_BASE", "log", 100.0, 1e6),
    Bound("INIT_STD", "log", 0.002, 0.2),
)}

STARTS: dict[str, dict] = {
    "seed": {},
    "far-1": {"LEARNING_RATE": 3e-4, "BATCH_SIZE": 32, "INIT_STD": 0.2, "WARMDOWN_FRACTION": 0.1},
    "far-2": {"LEARNING_RATE": 3e-2, "EMBED_LR_SCALE": 0.1, "ADAM_BETA2": 0.999, "WEIGHT_DECAY": 0.3, "DEPTH": 4,
              "WIDTH": 64, "N_HEADS": 1},
    "far-3": {"LEARNING_RATE": 5e-4, "BATCH_SIZE": 32, "ADAM_BETA1": 0.5, "ADAM_BETA2": 0.999, "WARMUP_FRACTION": 0.2,
              "LOGIT_SOFTCAP": 3.0, "MLP_RATIO": 1, "EMBED_LR_SCALE": 0.2},
}
TUNING_STARTS = ("seed", "far-1")
FINAL_STARTS = ("seed", "far-2", "far-3")


def box_values(source: str) -> dict:
    """The box's constants as source holds them."""
    view = hyperparameters(source)
    return {name: view[name].value for name in BOX if name in view}


def inside(values: Mapping) -> bool:
    return all(BOX[n].contains(v) for n, v in values.items() if n in BOX)


def clipped(values: Mapping) -> dict:
    """values with each boxed constant moved into the box."""
    return {n: (BOX[n].clip(v) if n in BOX else v) for n, v in values.items()}


def unit_point(source: str) -> dict[str, float]:
    """The source's place in the box, per constant, in [0, 1]."""
    return {n: BOX[n].unit(v) for n, v in box_values(source).items()}


def at(seed_source: str, values: Mapping) -> str:
    """The seed's source with the given constants set (the rest stay the seed's)."""
    current = box_values(seed_source)
    changes = {n: v for n, v in values.items() if current.get(n) != v or type(current.get(n)) is not type(v)}
    return rewrite(seed_source, changes) if changes else seed_source


def start_source(seed_source: str, start: str) -> str:
    return at(seed_source, STARTS[start])


def check_box(seed_source: str) -> None:
    """Raises ValueError unless the box names exactly the seed's numeric constants, holds the seed and the starts,
    and keeps the seed's inferred constraints at its corners (the constraints are about head sizes and the
    schedule's fractions, which are monotone, so the corners decide)."""
    view = box_values(seed_source)
    rules = infer_rules(seed_source)
    missing = [n for n in rules.domains if n not in BOX]
    if missing or len(view) != len(BOX):
        raise ValueError(f"the box and the seed's hyperparameters differ: missing {missing}, "
                         f"boxed but absent {[n for n in BOX if n not in view]}")
    if not inside(view):
        raise ValueError("the seed is outside the box")
    for name, start in STARTS.items():
        if not inside(start):
            raise ValueError(f"start {name} is outside the box")
    corners = []
    for w in BOX["WIDTH"].choices():
        for h in BOX["N_HEADS"].choices():
            corners.append({**view, "WIDTH": w, "N_HEADS": h, "WARMUP_FRACTION": BOX["WARMUP_FRACTION"].high,
                            "WARMDOWN_FRACTION": BOX["WARMDOWN_FRACTION"].high})
    for values in corners:
        if problems := rules.violations(values):
            raise ValueError(f"the box breaks the seed's constraints: {problems[0]}")
