"""The hyperparameter view of a source: its top-level UPPERCASE assignments of literal numbers, strings, booleans
and tuples of these, found with `ast`, and a rewrite that replaces exactly the literal of a named assignment.

Left out of the view, on purpose:
- assignments whose value is not a literal (`CONTEXT = SEQ_LEN`, `LR = 3e-3 * 2`): changing them means editing code;
- names bound more than once at module level, or declared `global` in a function: rewriting one of several
  bindings would not change what the program runs with;
- assignments inside functions, classes, `if` blocks and the like: only the module body's direct statements count.
"""

from __future__ import annotations

import ast
import functools
import math
import re
from dataclasses import dataclass
from typing import Mapping, Union

from genome.syntax import parse

Value = Union[bool, int, float, str, tuple]

_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


@dataclass(frozen=True)
class Hyperparameter:
    """One entry of the view: the name, the literal's value, where the literal sits in the source (character
    offsets, end exclusive; 1-based line), its text, and the comment on its line (without the '#')."""

    name: str
    value: Value
    line: int
    start: int
    end: int
    text: str
    comment: str = ""


def _is_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (bool, int, float, str)) and not (
            isinstance(node.value, float) and not math.isfinite(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = node.operand
        return isinstance(operand, ast.Constant) and type(operand.value) in (int, float)
    if isinstance(node, ast.Tuple):
        return all(_is_literal(e) for e in node.elts)
    return False


def _module_bindings(tree: ast.Module, has_global: bool = True) -> tuple[dict[str, int], set[str]]:
    """How many times each name is bound in module scope, and the names some function declares global.
    (Inner scopes bind locally, except through `global`; their names, decorators and defaults bind or run in
    module scope, which is close enough here.)"""
    count: dict[str, int] = {}
    declared_global: set[str] = set()
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Name):
            if not isinstance(node.ctx, ast.Load):
                count[node.id] = count.get(node.id, 0) + 1
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            if not isinstance(node, ast.Lambda):
                count[node.name] = count.get(node.name, 0) + 1
            if has_global:
                declared_global.update(n for inner in ast.walk(node) if isinstance(inner, ast.Global)
                                       for n in inner.names)
        elif isinstance(node, ast.alias):
            if node.name != "*":
                name = (node.asname or node.name).split(".")[0]
                count[name] = count.get(name, 0) + 1
        else:
            stack.extend(ast.iter_child_nodes(node))
    return count, declared_global


def _line_starts(lines: list[str]) -> list[int]:
    starts, pos = [], 0
    for line in lines:
        starts.append(pos)
        pos += len(line)
    return starts


def _offset(lines: list[str], starts: list[int], lineno: int, col: int) -> int:
    # ast columns count UTF-8 bytes; the view works in characters.
    line = lines[lineno - 1]
    return starts[lineno - 1] + len(line.encode("utf-8")[:col].decode("utf-8", errors="ignore"))


def hyperparameters(source: str) -> dict[str, Hyperparameter]:
    """The view of source, in the order the assignments appear. A source that does not parse has an empty view."""
    return {h.name: h for h in _view(source)}


@functools.lru_cache(maxsize=512)
def _view(source: str) -> tuple[Hyperparameter, ...]:
    # Cached: operators read a parent's view many times (each mutation, its rules, its rewrite).
    try:
        tree = parse(source)
    except (SyntaxError, ValueError):
        return ()
    count, declared_global = _module_bindings(tree, has_global="global" in source)
    lines = re.findall(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z", source)  # Python's own line ends
    starts = _line_starts(lines)
    view: dict[str, Hyperparameter] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target, value = stmt.targets[0], stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            target, value = stmt.target, stmt.value
        else:
            continue
        if not (isinstance(target, ast.Name) and _NAME.match(target.id) and _is_literal(value)):
            continue
        name = target.id
        if count.get(name, 0) != 1 or name in declared_global:
            continue
        start = _offset(lines, starts, value.lineno, value.col_offset)
        end = _offset(lines, starts, value.end_lineno, value.end_col_offset)
        text = source[start:end]
        literal = ast.literal_eval(value)
        last = value.end_lineno - 1
        rest = source[end:starts[last] + len(lines[last])].rstrip("\r\n")
        comment = rest.split("#", 1)[1].strip() if "#" in rest else ""
        view[name] = Hyperparameter(name, literal, value.lineno, start, end, text, comment)
    return tuple(view.values())


def values(source: str) -> dict[str, Value]:
    """The view as a plain {name: value} mapping."""
    return {name: h.value for name, h in hyperparameters(source).items()}


def _float_text(value: float, scientific: bool) -> str:
    if not math.isfinite(value):
        raise ValueError(f"{value} cannot be written as a literal")
    if not scientific:
        return repr(value)  # the shortest text that reads back as the same float
    for digits in range(1, 18):
        text = f"{value:.{digits - 1}e}"
        if float(text) == value:
            break
    mantissa, exponent = text.split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def format_value(value: Value, like: str | None = None) -> str:
    """The literal text of value, in the style of `like` (the text it replaces) where that makes sense: scientific
    notation for floats written that way, the same quote character for strings, underscores in long integers."""
    like = (like or "").strip()
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return f"{value:_}" if "_" in like else str(value)
    if isinstance(value, float):
        return _float_text(value, scientific="e" in like.lower() and not like.lower().startswith("0x"))
    if isinstance(value, str):
        text = repr(value)
        if like.startswith('"') and text.startswith("'") and '"' not in value:
            text = '"' + text[1:-1] + '"'  # repr chose ' because value has no quote at all: nothing to unescape
        return text
    if isinstance(value, tuple):
        element_likes: list[str | None] = [None] * len(value)
        try:
            node = parse(like, mode="eval").body if like else None
            if isinstance(node, ast.Tuple) and len(node.elts) == len(value):
                element_likes = [ast.get_source_segment(like, e) for e in node.elts]
        except SyntaxError:
            pass
        parts = [format_value(v, element_likes[i]) for i, v in enumerate(value)]
        return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
    raise TypeError(f"a hyperparameter value must be a bool, int, float, str or tuple; got {type(value).__name__}")


def rewrite(source: str, changes: Mapping[str, Value]) -> str:
    """source with the literal of each named hyperparameter replaced by its new value; nothing outside those
    assignments changes (on their lines, only the spaces before a trailing comment may shrink or grow, to keep the
    comment in its column). Raises ValueError for a name not in the view."""
    view = hyperparameters(source)
    unknown = [name for name in changes if name not in view]
    if unknown:
        raise ValueError(f"not hyperparameters of this source: {', '.join(unknown)} "
                         f"(the view has: {', '.join(view) or 'nothing'})")
    out = source
    for name in sorted(changes, key=lambda n: view[n].start, reverse=True):
        h = view[name]
        text = format_value(changes[name], h.text)
        end = h.end
        # Keep a trailing comment in its column (the seed's comments are aligned), never closer than the old gap
        # allowed; only the spaces between this literal and its own comment move.
        gap = re.match(r"( +)#", out[end:])
        if gap:
            old_gap = len(gap.group(1))
            new_gap = max(min(old_gap, 2), old_gap - (len(text) - len(h.text)))
            out = out[:end] + " " * new_gap + out[end + old_gap:]
        out = out[:h.start] + text + out[end:]
    return out
