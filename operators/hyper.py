"""Offline hyperparameter operators: mutation (one to a few values perturbed within their inferred domains), sampling
(a few values drawn afresh over a wide range around the parent's) and uniform crossover of two parents' values.
Each rewrites only the literals of the assignments it changes.

bounds (the run's --bounds: {name: (low, high)}) are kept by every operator: a value outside its bound is never
proposed, and hyper.sample draws a bounded value afresh over its whole bound (on its scale) instead of around
the parent's."""

from __future__ import annotations

import math
import random
from typing import Mapping

from genome import Genome, format_value, hyperparameters, infer_rules, rewrite
from genome.constraints import Domain, Rules
from operators.variation import Variation

MUTATE = "hyper.mutate"
SAMPLE = "hyper.sample"
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
           tries: int = 30, bounds: Mapping | None = None) -> Variation:
    """Perturbs one to max_changes hyperparameters of parent (one most often), each within its inferred domain
    (genome.constraints), keeping every inferred constraint. Floats move by log-normal factors (sigma), sizes
    that are powers of two double or halve, other ints step by 1 or 2, strings switch among known values."""
    if sigma <= 0 or max_changes < 1 or tries < 1:
        raise ValueError(f"{MUTATE} needs sigma > 0, max_changes >= 1 and tries >= 1")
    def count():
        return min(max_changes, 1 + (rng.random() < 0.4) + (rng.random() < 0.25))  # one change most often
    return _change_some(parent, rng, MUTATE, count,
                        lambda name, domain, value: perturb(domain, value, rng, sigma=sigma, digits=digits), tries,
                        "no change to the parent's hyperparameters keeps their constraints", "", bounds)


def _change_some(parent: Genome, rng: random.Random, operator: str, count, new_value, tries: int, none_kept: str,
                 prefix: str, bounds: Mapping | None = None) -> Variation:
    """Changes count() of parent's hyperparameters, chosen at random, each to a new_value(name, domain, value) that
    keeps every inferred constraint and its bound (up to tries draws each): hyper.mutate's and hyper.sample's common
    walk."""
    bounds = bounds or {}
    view = hyperparameters(parent.source)
    rules = infer_rules(parent.source)
    names = list(rules.domains)
    if not names:
        return Variation.invalid(operator, "the parent has no hyperparameters this operator can change")
    wanted = min(len(names), count())
    current = {n: h.value for n, h in view.items()}
    changes: dict = {}
    rng.shuffle(names)
    for name in names:
        if len(changes) == wanted:
            break
        for _ in range(tries):
            new = new_value(name, rules.domains[name], current[name])
            if new != current[name] and type(new) is type(current[name]) and in_bound(new, bounds.get(name)) \
                    and not rules.violations({**current, **changes, name: new}):
                changes[name] = new
                break
    if not changes:
        return Variation.invalid(operator, none_kept)
    source = rewrite(parent.source, changes)
    order = [n for n in view if n in changes]
    return Variation.child(operator, source, prefix + "; ".join(describe_change(n, view[n].text, changes[n],
                                                                                current[n]) for n in order))


def draw(domain: Domain, value, rng: random.Random, *, span: float = 10.0, digits: int = 3):
    """value drawn afresh over a wide range around it (the result may equal value; callers retry): rates and
    scales log-uniformly between value / span and value * span, betas the same on the scale of 1 - beta,
    fractions uniformly within 0.5 of value (inside [0, 1]), powers of two from a quarter to four times value,
    other ints log-uniformly from half to twice value (in their unit, at least their low), strings and flags
    uniformly. A switch that is off (0) stays off."""
    kind = domain.kind
    if kind == "flag":
        return rng.random() < 0.5
    if kind == "choice":
        return rng.choice(domain.choices)
    if kind in ("log", "switch"):
        if value == 0:
            return value
        new = value * span ** rng.uniform(-1.0, 1.0)
        return max(1, round(new)) if isinstance(value, int) else _round_sig(new, digits)
    if kind == "fraction":
        return round(rng.uniform(max(0.0, value - 0.5), min(1.0, value + 0.5)), digits)
    if kind == "beta":
        gap = min(0.9, _round_sig((1.0 - value) * span ** rng.uniform(-1.0, 1.0), digits - 1))
        decimals = max(digits, 1 - math.floor(math.log10(gap)) + digits - 1)
        return round(1.0 - gap, decimals)
    if kind == "pow2":
        return max(1, int(value * 2.0 ** rng.randint(-2, 2)))
    if kind == "step":
        low = domain.low if domain.low is not None else domain.unit
        return max(low, domain.unit * round(value * 2.0 ** rng.uniform(-1.0, 1.0) / domain.unit))
    if kind == "tuple":
        slots = [i for i, d in enumerate(domain.elements) if d is not None]
        i = rng.choice(slots)
        new = draw(domain.elements[i], value[i], rng, span=span, digits=digits)
        return value[:i] + (new,) + value[i + 1:]
    raise ValueError(f"no draw for domain kind {kind!r}")


def in_bound(value, bound) -> bool:
    """Whether value keeps bound ((low, high), or None for no bound)."""
    return bound is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                             and bound[0] <= value <= bound[1])


def draw_within(domain: Domain, value, low: float, high: float, rng: random.Random, *, digits: int = 3):
    """A value drawn afresh over the whole bound [low, high], on the domain's scale: powers of two uniformly among
    those inside, betas log-uniformly on the scale of 1 - beta, rates and scales log-uniformly, other ints and
    floats uniformly; rounded as draw() rounds, and never outside the bound."""
    kind = domain.kind
    whole = isinstance(value, int) and not isinstance(value, bool)
    if kind == "pow2":
        lo, hi = math.ceil(math.log2(max(low, 1))), math.floor(math.log2(high))
        return 2 ** rng.randint(lo, hi) if lo <= hi else value
    if kind == "beta" and high < 1.0:
        gap = _round_sig(math.exp(rng.uniform(math.log(1.0 - high), math.log(1.0 - low))), digits - 1)
        decimals = max(digits, 1 - math.floor(math.log10(gap)) + digits - 1)
        new = round(1.0 - gap, decimals)
    elif kind in ("log", "switch") and low > 0:
        new = math.exp(rng.uniform(math.log(low), math.log(high)))
        new = round(new) if whole else _round_sig(new, digits)
    elif whole:
        unit = domain.unit if kind == "step" else 1
        lo, hi = math.ceil(low / unit), math.floor(high / unit)
        return unit * rng.randint(lo, hi) if lo <= hi else value
    else:
        new = round(rng.uniform(low, high), digits)
    if whole:
        return min(max(new, math.ceil(low)), math.floor(high))
    return min(max(new, float(low)), float(high))


def sample(parent: Genome, rng: random.Random, *, min_changes: int = 3, max_changes: int = 12, span: float = 10.0,
           digits: int = 3, tries: int = 30, bounds: Mapping | None = None) -> Variation:
    """Draws min_changes to max_changes of parent's hyperparameters afresh (see draw(): rates x/÷ span, betas on
    1 - beta, fractions within 0.5, sizes a few doublings), keeping every inferred constraint: the global step
    that hyper.mutate's small ones are not, for a parent far from good."""
    if not 1 <= min_changes <= max_changes or span <= 1 or tries < 1:
        raise ValueError(f"{SAMPLE} needs 1 <= min_changes <= max_changes, span > 1 and tries >= 1")
    bounds = bounds or {}

    def fresh(name, domain, value):
        if name in bounds:
            return draw_within(domain, value, *bounds[name], rng, digits=digits)
        return draw(domain, value, rng, span=span, digits=digits)

    return _change_some(parent, rng, SAMPLE, lambda: rng.randint(min_changes, max_changes), fresh, tries,
                        "no fresh draw of the parent's hyperparameters keeps their constraints", "drawn afresh: ",
                        bounds)


def _combined(a: Rules, b: Rules, values_a: dict, values_b: dict) -> Rules:
    """The constraints of either parent that both parents keep (a's "WIDTH is a power of two" does not bind a
    child that takes b's WIDTH = 384)."""
    both = [c for c in dict.fromkeys(a.constraints + b.constraints)
            if c.check(values_a) is None and c.check(values_b) is None]
    return Rules({**b.domains, **a.domains}, tuple(both))


def crossover(a: Genome, b: Genome, rng: random.Random, *, rate: float = 0.5, tries: int = 20,
              bounds: Mapping | None = None) -> Variation:
    """Uniform crossover: a's source, with each hyperparameter on which the parents differ taken from b with
    probability rate, keeping the constraints inferred from either parent that both keep. Other code is a's."""
    if not 0 < rate < 1 or tries < 1:
        raise ValueError(f"{CROSSOVER} needs 0 < rate < 1 and tries >= 1")
    view_a, view_b = hyperparameters(a.source), hyperparameters(b.source)
    bounds = bounds or {}
    differing = [n for n, h in view_a.items()
                 if n in view_b and type(view_b[n].value) is type(h.value) and view_b[n].value != h.value
                 and in_bound(view_b[n].value, bounds.get(n))]
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
