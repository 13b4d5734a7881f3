"""What the hyperparameters of a source may become: a domain per name and the constraints between them, inferred
from names, values, comments and the code that reads them, never from a list of this one train.py's names.

The rules, in the order they are tried (a name gets the first that fits):

- bool                                       -> flag: it may flip.
- str                                        -> choice among the values the code compares it with (`X == "a"`,
  `X in ("a", "b")`, `{"a": ..}[X]`, `match X: case "a"`), quoted words or "one of a, b" in its comment, and the
  torch dtype names when it holds one; fixed when nothing else is known.
- a float named *_FRACTION, *_FRAC, *_PROB, *DROPOUT*, or WARMUP/WARMDOWN/COOLDOWN *_RATIO, in [0, 1]
                                             -> fraction: stays in [0, 1].
- a float named *BETA* or *MOMENTUM*, in (0, 1) -> beta: stays in (0, 1), steps act on 1 - beta.
- a number named *CLIP* or *CAP*, or whose comment says 0 turns it off, >= 0 -> switch: stays >= 0 (0 is "off"
  and stays off: no step can say what "on" should be).
- another float                              -> log-scale: keeps its sign; 0.0 stays fixed.
- an int named like a size (WIDTH, *_DIM, N_EMBD, D_MODEL, *HEADS, BATCH*, *_SIZE, *TOKENS, *CHANNELS) that is a
  power of two                               -> pow2: doubles or halves, stays a power of two >= 1.
- another int                                -> step: small steps, stays >= 1 if it is >= 1 (>= 0 if it is 0);
  a width kept divisible by a head count steps in units of the head count (twice that for an even head size).
- a tuple                                    -> each element by the rules above, under the tuple's name.

Constraints between names, kept only when the source satisfies them now:
- a width (WIDTH, *_WIDTH, N_EMBD, D_MODEL, MODEL_DIM, EMBED_DIM, HIDDEN_SIZE, DIM) divisible by a head count
  (N_HEADS, NUM_HEADS, N_HEAD, HEADS), and width // heads even if it is even now (rotary embeddings need it);
- a head count divisible by a KV head count (N_KV_HEADS, NUM_KV_HEADS);
- warmup and warmdown/cooldown fractions summing to at most 1.
"""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from genome.hyper import Value, hyperparameters
from genome.syntax import parse

_FRACTION = re.compile(r"(_FRACTION|_FRAC|_PROB)$|DROPOUT|(WARMUP|WARMDOWN|COOLDOWN)\w*_RATIO$")
_BETA = re.compile(r"BETA|MOMENTUM")
_SWITCH = re.compile(r"CLIP|CAP")
_OFF_COMMENT = re.compile(r"\b0\b[^.;]*\b(off|disable|disables|disabled|none)\b", re.I)
_SIZE = re.compile(r"(^|_)(WIDTH|DIM|N_EMBD|D_MODEL|EMBD|HEADS?|N_HEAD|BATCH|SIZE|TOKENS|CHANNELS)(_|$)")
_WIDTH = re.compile(r"^(WIDTH|N_EMBD|D_MODEL|MODEL_DIM|EMBED_DIM|EMBEDDING_DIM|HIDDEN_SIZE|HIDDEN_DIM|DIM|\w*_WIDTH)$")
_HEADS = re.compile(r"^(N_HEADS?|NUM_HEADS?|HEADS|N_Q_HEADS)$")
_KV_HEADS = re.compile(r"^(N_KV_HEADS?|NUM_KV_HEADS?|KV_HEADS)$")
_WARMUP = re.compile(r"WARMUP")
_WARMDOWN = re.compile(r"WARMDOWN|COOLDOWN")
_DTYPES = ("bfloat16", "float16", "float32")

KINDS = ("flag", "choice", "fraction", "beta", "switch", "log", "pow2", "step", "tuple")


@dataclass(frozen=True)
class Domain:
    """How one value may change: its kind (one of KINDS), the options of a choice, the lower bound and the unit of
    an int step, and the element domains of a tuple (None for an element that stays fixed)."""

    kind: str
    choices: tuple[str, ...] = ()
    low: int | None = None
    elements: tuple["Domain | None", ...] = ()
    unit: int = 1

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"domain kind must be one of {', '.join(KINDS)}; got {self.kind!r}")
        if self.kind == "choice" and len(self.choices) < 2:
            raise ValueError(f"a choice needs at least two options; got {self.choices!r}")


@dataclass(frozen=True)
class Constraint:
    """A condition on one or more values, with the message that says how it is broken.

    kind: "range" (names[0], or its element `index`, within low/high, open ends when low_open/high_open),
    "pow2", "divides" (names[0] divides names[1]), "even_quotient" (names[1] // names[0] is even),
    "sum_at_most" (the names' values sum to at most high)."""

    kind: str
    names: tuple[str, ...]
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    index: int | None = None

    def check(self, values: Mapping[str, Value]) -> str | None:
        """None when values keep the constraint (or lack a name it is about), else what is wrong."""
        if not all(n in values for n in self.names):
            return None
        if self.kind == "range":
            name = self.names[0]
            v = values[name]
            label = name
            if self.index is not None:
                if not isinstance(v, tuple) or len(v) <= self.index:
                    return f"{name} is no longer a tuple with an element {self.index}"
                v, label = v[self.index], f"{name}[{self.index}]"
            low_ok = self.low is None or (v > self.low if self.low_open else v >= self.low)
            high_ok = self.high is None or (v < self.high if self.high_open else v <= self.high)
            if low_ok and high_ok:
                return None
            lo = "" if self.low is None else f"{'>' if self.low_open else '>='} {self.low}"
            hi = "" if self.high is None else f"{'<' if self.high_open else '<='} {self.high}"
            return f"{label} = {v!r} must be {' and '.join(x for x in (lo, hi) if x)}"
        if self.kind == "pow2":
            v = values[self.names[0]]
            return None if v >= 1 and v & (v - 1) == 0 else f"{self.names[0]} = {v} must be a power of two"
        if self.kind == "divides":
            d, n = (values[x] for x in self.names)
            return None if d > 0 and n % d == 0 else f"{self.names[1]} = {n} must be divisible by {self.names[0]} = {d}"
        if self.kind == "even_quotient":
            d, n = (values[x] for x in self.names)
            if d > 0 and (n // d) % 2 == 0:
                return None
            return f"{self.names[1]} // {self.names[0]} = {n // d if d else 'undefined'} must be even"
        if self.kind == "sum_at_most":
            total = sum(values[x] for x in self.names)
            if total <= self.high + 1e-12:  # sums of rounded fractions carry float error
                return None
            return f"{' + '.join(self.names)} = {total:g} must be <= {self.high:g}"
        raise ValueError(f"unknown constraint kind {self.kind!r}")


@dataclass(frozen=True)
class Rules:
    """The domains of the names that may change, and the constraints on the whole view."""

    domains: Mapping[str, Domain] = field(default_factory=dict)
    constraints: tuple[Constraint, ...] = ()

    def violations(self, values: Mapping[str, Value]) -> list[str]:
        """What values break, one message per broken constraint (empty when all hold)."""
        return [m for c in self.constraints if (m := c.check(values)) is not None]


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _number_domain(name: str, v, comment: str, constraints: list[Constraint], index: int | None) -> Domain | None:
    """The domain of one number, adding the range constraints it implies."""

    def bound(**kw):
        constraints.append(Constraint("range", (name,), index=index, **kw))

    if isinstance(v, float) and _FRACTION.search(name) and 0.0 <= v <= 1.0:
        bound(low=0.0, high=1.0)
        return Domain("fraction")
    if isinstance(v, float) and _BETA.search(name) and 0.0 < v < 1.0:
        bound(low=0.0, high=1.0, low_open=True, high_open=True)
        return Domain("beta")
    if (_SWITCH.search(name) or _OFF_COMMENT.search(comment)) and v >= 0:
        bound(low=0)
        return Domain("switch") if v > 0 else None
    if isinstance(v, float):
        if v == 0.0:
            return None
        bound(low=0.0, low_open=True) if v > 0 else bound(high=0.0, high_open=True)
        return Domain("log")
    if v >= 1 and v & (v - 1) == 0 and _SIZE.search(name):
        bound(low=1)
        if index is None:
            constraints.append(Constraint("pow2", (name,)))
        return Domain("pow2", low=1)
    low = 1 if v >= 1 else 0 if v == 0 else None
    if low is not None:
        bound(low=low)
    return Domain("step", low=low)


def _module_dict_keys(tree: ast.Module) -> dict[str, set[str]]:
    keys: dict[str, set[str]] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Dict):
            found = {k.value for k in stmt.value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
            for t in stmt.targets:
                if isinstance(t, ast.Name):
                    keys[t.id] = found
    return keys


def _strings(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return set()


def string_choices(source: str, name: str) -> set[str]:
    """The string values the code of source compares `name` with, or looks it up by."""
    try:
        tree = parse(source)
    except (SyntaxError, ValueError):
        return set()
    dicts = _module_dict_keys(tree)
    found: set[str] = set()

    def is_name(n):
        return isinstance(n, ast.Name) and n.id == name

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            for left, op, right in zip(sides, node.ops, sides[1:]):
                if is_name(left):
                    found |= _strings(right)
                elif is_name(right) and isinstance(op, (ast.Eq, ast.NotEq)):
                    found |= _strings(left)
        elif isinstance(node, ast.Subscript) and is_name(node.slice):
            if isinstance(node.value, ast.Dict):
                found |= {k.value for k in node.value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
            elif isinstance(node.value, ast.Name):
                found |= dicts.get(node.value.id, set())
        elif isinstance(node, ast.Match) and is_name(node.subject):
            for case in node.cases:
                for p in ast.walk(case.pattern):
                    if isinstance(p, ast.MatchValue):
                        found |= _strings(p.value)
    return found


def _comment_choices(comment: str) -> set[str]:
    quoted = set(re.findall(r"[\"']([^\"']+)[\"']", comment))
    listed: set[str] = set()
    m = re.search(r"one of:?\s*(.+)", comment, re.I)
    if m:
        listed = {w.strip(" .\"'") for w in re.split(r",|\||/|\bor\b", m.group(1))}
    return {w for w in quoted | listed if w and re.fullmatch(r"[\w.\-]+", w)}


@functools.lru_cache(maxsize=256)
def infer_rules(source: str) -> Rules:
    """The domains and constraints of source's hyperparameter view (see the module docstring for the rules).
    Cached per source; the result is read-only."""
    view = hyperparameters(source)
    constraints: list[Constraint] = []
    domains: dict[str, Domain] = {}
    for name, h in view.items():
        v = h.value
        domain: Domain | None = None
        if isinstance(v, bool):
            domain = Domain("flag")
        elif isinstance(v, str):
            options = string_choices(source, name) | _comment_choices(h.comment) | {v}
            if v in _DTYPES:
                options |= set(_DTYPES)
            domain = Domain("choice", tuple(sorted(options))) if len(options) >= 2 else None
        elif _number(v):
            domain = _number_domain(name, v, h.comment, constraints, None)
        elif isinstance(v, tuple):
            elements = tuple(_number_domain(name, e, h.comment, constraints, i) if _number(e) else
                             Domain("flag") if isinstance(e, bool) else None for i, e in enumerate(v))
            domain = Domain("tuple", elements=elements) if any(elements) else None
        if domain is not None:
            domains[name] = domain

    values = {n: h.value for n, h in view.items()}
    ints = {n for n, v in values.items() if isinstance(v, int) and not isinstance(v, bool) and v > 0}
    widths = [n for n in ints if _WIDTH.match(n)]
    heads = [n for n in ints if _HEADS.match(n)]
    kv_heads = [n for n in ints if _KV_HEADS.match(n)]
    for w in widths:
        for h in heads:
            pair = [Constraint("divides", (h, w)), Constraint("even_quotient", (h, w))]
            constraints += [c for c in pair if c.check(values) is None]
    for h in heads:
        for kv in kv_heads:
            c = Constraint("divides", (kv, h))
            if c.check(values) is None:
                constraints.append(c)
    fractions = [n for n, d in domains.items() if d.kind == "fraction"]
    ups = [n for n in fractions if _WARMUP.search(n)]
    downs = [n for n in fractions if _WARMDOWN.search(n)]
    for up in ups:
        for down in downs:
            c = Constraint("sum_at_most", (up, down), high=1.0)
            if c.check(values) is None:
                constraints.append(c)
    # A constraint the parent already breaks would make every child "invalid": keep only those it keeps.
    constraints = [c for c in constraints if c.check(values) is None]
    # A width that is not a power of two steps in units that keep it divisible: N_EMBD = 384 with N_HEAD = 6
    # (and an even head size) moves by 12s, not by 1s that the constraints would always refuse.
    for c in constraints:
        if c.kind == "divides" and domains.get(c.names[1], Domain("flag")).kind == "step":
            even = Constraint("even_quotient", c.names) in constraints
            unit = values[c.names[0]] * (2 if even else 1)
            old = domains[c.names[1]]
            domains[c.names[1]] = Domain("step", low=old.low, unit=max(old.unit, unit))
    return Rules(MappingProxyType(domains), tuple(constraints))
