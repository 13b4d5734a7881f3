"""Three-way merge of two descendants against their common ancestor, line by line (diff3's idea).

Each parent's changes are the regions where its lines differ from the ancestor's. A region changed by one parent
only takes that parent's lines; a region both changed the same way takes them once; a region both changed
differently is a conflict, and a merge with any conflict produces no source. Unlike git, changes that touch
without overlapping (one parent edits line 28, the other line 29) merge cleanly, and a block of lines rewritten
line for line counts as one change per line: hyperparameters sit on consecutive lines, and two parents tuning
neighbours is the common case, not a conflict.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from genome.diff import split_lines


@dataclass(frozen=True)
class Conflict:
    """Ancestor lines [start, end) (0-based; start == end for two insertions at one place) changed differently
    by both parents, with each side's text for them."""

    start: int
    end: int
    ancestor: str
    a: str
    b: str

    def describe(self) -> str:
        """One line: where the parents disagree."""
        if self.start == self.end:
            return f"both parents insert different lines after line {self.start} of the ancestor"
        where = f"line {self.start + 1}" if self.end == self.start + 1 else f"lines {self.start + 1}-{self.end}"
        first = self.ancestor.split("\n", 1)[0].strip()
        return f"both parents change {where} of the ancestor ({first[:60]!r}) differently"


@dataclass(frozen=True)
class MergeResult:
    """The merged source, or None with the conflicts that prevented it."""

    source: str | None
    conflicts: tuple[Conflict, ...] = ()

    @property
    def ok(self) -> bool:
        return self.source is not None

    @property
    def reason(self) -> str:
        """Why there is no source ("" when there is one)."""
        if self.ok:
            return ""
        more = f" (and {len(self.conflicts) - 1} more conflict(s))" if len(self.conflicts) > 1 else ""
        return self.conflicts[0].describe() + more


def _opcodes(base: list[str], other: list[str]):
    """difflib's opcodes, with each replacement of n lines by n lines split into n one-line replacements: a
    parent that retuned DEPTH and WIDTH on neighbouring lines then merges with one that retuned only DEPTH."""
    out = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, base, other, autojunk=False).get_opcodes():
        if tag == "replace" and i2 - i1 == j2 - j1:
            out += [("replace", i1 + k, i1 + k + 1, j1 + k, j1 + k + 1) for k in range(i2 - i1)]
        else:
            out.append((tag, i1, i2, j1, j2))
    return out


def _overlaps(span_start: int, span_end: int, start: int, end: int) -> bool:
    """Whether a change to ancestor lines [start, end) overlaps a cluster spanning [span_start, span_end), given
    that changes arrive sorted by (start, end)."""
    if span_start == span_end:  # the cluster is an insertion: only another insertion at the same place collides
        return start == end == span_start
    return start < span_end


def _side_text(lines: list[str], opcodes, changes: set, start: int, end: int) -> str:
    """One parent's lines for ancestor lines [start, end): its changes in the cluster, and its unchanged lines."""
    out: list[str] = []
    for op in opcodes:
        tag, i1, i2, j1, j2 = op
        if tag == "equal":
            lo, hi = max(i1, start), min(i2, end)
            if lo < hi:
                out += lines[j1 + lo - i1:j1 + hi - i1]
        elif op in changes:
            out += lines[j1:j2]
    return "".join(out)


def merge3(ancestor: str, a: str, b: str) -> MergeResult:
    """The merge of a and b, two descendants of ancestor (see the module docstring for the rules)."""
    base, a_lines, b_lines = split_lines(ancestor), split_lines(a), split_lines(b)
    ops = {"a": _opcodes(base, a_lines), "b": _opcodes(base, b_lines)}
    events = sorted(((op[1], op[2], side, op) for side in ("a", "b") for op in ops[side] if op[0] != "equal"),
                    key=lambda e: (e[0], e[1], e[2]))
    out: list[str] = []
    conflicts: list[Conflict] = []
    pos = 0
    k = 0
    while k < len(events):
        start, end, _, _ = events[k]
        cluster = [events[k]]
        k += 1
        while k < len(events) and _overlaps(start, end, events[k][0], events[k][1]):
            end = max(end, events[k][1])
            cluster.append(events[k])
            k += 1
        out += base[pos:start]
        pos = end
        sides = {side for _, _, side, _ in cluster}
        texts = {}
        for side, lines in (("a", a_lines), ("b", b_lines)):
            if side in sides:
                changes = {op for _, _, s, op in cluster if s == side}
                texts[side] = _side_text(lines, ops[side], changes, start, end)
        if len(set(texts.values())) == 1:
            out.append(next(iter(texts.values())))
        else:
            conflicts.append(Conflict(start, end, "".join(base[start:end]), texts["a"], texts["b"]))
    out += base[pos:]
    if conflicts:
        return MergeResult(None, tuple(conflicts))
    return MergeResult("".join(out))
