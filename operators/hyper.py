"""Offline hyperparameter operators: mutation (one to a few values perturbed within their inferred domains) and
uniform crossover of two parents' values. Both rewrite only the literals of the assignments they change."""

from __future__ import annotations

import math
import random

from genome import Genome, format_value, hyperparameters, infer_rules, rewrite
from genome.constraints import Domain, Rules
from operators.variation import Variation

MUTATE = "hyper.mutate"
CROSSOVER = "hyper.crossover"


def _round_sig(value: float, digits: int) -> float:
    """value rounded to `digits` significant digits: children read "4.1e-3", not "0.004097310392"."""
    return float(f"{value:.{digits}g}")


MIN_LOG_STEP = 0.05  # a factor of at least 1.05 (or at most 1/1.05): smaller steps are lost in the noise


def _log_step(value, rng: random.Random, sigma: float, digits: int):
    z = rng.gauss(0.0, sigma)
    factor = math.exp(math.copysign(max(abs(z), MIN_LOG_STEP), z))
    if isinstance(value, int):
        return max(0, round(value * factor))
    return _round_sig(value * factor, digits)


def perturb(domain: Domain, value, rng: random.Random, *, sigma: float = 0.3, digits: int = 3):
    """One random step of value within its domain (the result may equal value; callers retry)."""
    kind = domain.kind
    if kind == "flag":
        return not value
    if kind == "choice":
        return rng.choice([c for c in domain.choices if c != value])
    if kind in ("log", "switch"):
        return _log_step(value, rng, sigma, digits)
    if kind == "fraction":
        if value == 0:
            return _round_sig(abs(rng.gauss(0.0, 0.05)), digits)
        return min(1.0, _log_step(value, rng, sigma, digits))
    if kind == "beta":
        # Steps act on 1 - beta: 0.95 -> 0.9 is as big a change as 0.995 -> 0.99.
        z = rng.gauss(0.0, sigma)
        gap = _round_sig((1.0 - value) * math.exp(math.copysign(max(abs(z), MIN_LOG_STEP), z)), digits - 1)
        decimals = max(digits, 1 - math.floor(math.log10(gap)) + digits - 1) if gap > 0 else digits
        return round(1.0 - gap, decimals)
    if kind == "pow2":
        return value // 2 if value >= 2 and rng.random() < 0.5 else value * 2
    if kind == "step":
        return value + domain.unit * rng.choice((-2, -1, -1, 1, 1, 2))
    if kind == "tuple":
        slots = [i for i, d in enumerate(domain.elements) if d is not None]
        i = rng.choice(slots)
        new = perturb(domain.elements[i], value[i], rng, sigma=sigma, digits=digits)
        return value[:i] + (new,) + value[i + 1:]
    raise ValueError(f"no perturbation for domain kind {kind!r}")


def _step_label(old, new) -> str:
    if isinstance(old, bool) or isinstance(old, str) or isinstance(old, tuple):
        return ""
    if isinstance(old, int) and isinstance(new, int):
        if old and new == old * 2:
            return " (x2)"
        if new * 2 == old:
            return " (/2)"
        return f" ({new - old:+d})"
    if old and new:
        return f" (x{new / old:.2f})"
    return ""


def describe_change(name: str, old_text: str, new_value, old_value) -> str:
    """"LEARNING_RATE 3e-3 -> 4.1e-3 (x1.37)"."""
    return f"{name} {old_text} -> {format_value(new_value, old_text)}{_step_label(old_value, new_value)}"


def mutate(parent: Genome, rng: random.Random, *, sigma: float = 0.3, max_changes: int = 3, digits: int = 3,
           tries: int = 30) -> Variation:
    """Perturbs one to max_changes hyperparameters of parent (one most often), each within its inferred domain
    (genome.constraints), keeping every inferred constraint. Floats move by log-normal factors (sigma), sizes
    that are powers of two double or halve, other ints step by 1 or 2, strings switch among known values."""
    if sigma <= 0 or max_changes < 1 or tries < 1:
        raise ValueError(f"{MUTATE} needs sigma > 0, max_changes >= 1 and tries >= 1")
    view = hyperparameters(parent.source)
    rules = infer_rules(parent.source)
    names = list(rules.domains)
    if not names:
        return Variation.invalid(MUTATE, "the parent has no hyperparameters this operator can change")
    wanted = min(len(names), max_changes, 1 + (rng.random() < 0.4) + (rng.random() < 0.25))
    current = {n: h.value for n, h in view.items()}
    changes: dict = {}
    rng.shuffle(names)
    for name in names:
        if len(changes) == wanted:
            break
        for _ in range(tries):
            new = perturb(rules.domains[name], current[name], rng, sigma=sigma, digits=digits)
            if new != current[name] and type(new) is type(current[name]) \
                    and not rules.violations({**current, **changes, name: new}):
                changes[name] = new
                break
    if not changes:
        return Variation.invalid(MUTATE, "no change to the parent's hyperparameters keeps their constraints")
    source = rewrite(parent.source, changes)
    order = [n for n in view if n in changes]
    description = "; ".join(describe_change(n, view[n].text, changes[n], current[n]) for n in order)
    return Variation.child(MUTATE, source, description)


def _combined(a: Rules, b: Rules, values_a: dict, values_b: dict) -> Rules:
    """The constraints of either parent that both parents keep (a's "WIDTH is a power of two" does not bind a
    child that takes b's WIDTH = 384)."""
    both = [c for c in dict.fromkeys(a.constraints + b.constraints)
            if c.check(values_a) is None and c.check(values_b) is None]
    return Rules({**b.domains, **a.domains}, tuple(both))


def crossover(a: Genome, b: Genome, rng: random.Random, *, rate: float = 0.5, tries: int = 20) -> Variation:
    """Uniform crossover: a's source, with each hyperparameter on which the parents differ taken from b with
    probability rate, keeping the constraints inferred from either parent that both keep. Other code is a's."""
    if not 0 < rate < 1 or tries < 1:
        raise ValueError(f"{CROSSOVER} needs 0 < rate < 1 and tries >= 1")
    view_a, view_b = hyperparameters(a.source), hyperparameters(b.source)
    differing = [n for n, h in view_a.items()
                 if n in view_b and type(view_b[n].value) is type(h.value) and view_b[n].value != h.value]
    if not differing:
        return Variation.invalid(CROSSOVER, "the parents do not differ in any hyperparameter")
    current = {n: h.value for n, h in view_a.items()}
    rules = _combined(infer_rules(a.source), infer_rules(b.source), current,
                      {n: h.value for n, h in view_b.items()})
    for _ in range(tries):
        taken = [n for n in differing if rng.random() < rate]
        if not taken:
            continue
        changes = {n: view_b[n].value for n in taken}
        if rules.violations({**current, **changes}):
            continue
        source = rewrite(a.source, changes)
        if source in (a.source, b.source):
            continue
        moved = ", ".join(f"{n} {view_a[n].text} -> {format_value(changes[n], view_a[n].text)}" for n in taken)
        kept = len(differing) - len(taken)
        return Variation.child(CROSSOVER, source, f"uniform crossover of {a.short_id} and {b.short_id}: "
                                                  f"from b {moved}; {kept} kept from a")
    return Variation.invalid(CROSSOVER, f"no mix of the parents' {len(differing)} differing hyperparameter(s) keeps "
                                        f"the constraints and differs from both parents")
