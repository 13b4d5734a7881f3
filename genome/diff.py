"""Unified diffs between two sources, and applying one to its source.

Lines are split on "\\n" only (str.splitlines would also split on form feeds and the like, and the diff would no
longer apply). A last line without a newline is marked the way git and GNU patch do: "\\ No newline at end of file".
"""

from __future__ import annotations

import difflib
import re

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_NO_NEWLINE = "\\ No newline at end of file"


class PatchError(ValueError):
    """A diff does not apply to the source it was given."""


def split_lines(text: str) -> list[str]:
    """The lines of text, each keeping its "\\n" (the last may have none); "" gives []."""
    return re.findall(r"[^\n]*\n|[^\n]+\Z", text)


def _range(start: int, length: int) -> str:
    # The unified format's convention: an empty range names the line before it.
    if length == 1:
        return str(start + 1)
    if length == 0:
        return f"{start},0"
    return f"{start + 1},{length}"


def _emit(out: list[str], prefix: str, line: str) -> None:
    if line.endswith("\n"):
        out.append(prefix + line)
    else:
        out.append(prefix + line + "\n")
        out.append(_NO_NEWLINE + "\n")


def unified_diff(a: str, b: str, *, a_name: str = "a/train.py", b_name: str = "b/train.py", context: int = 3) -> str:
    """The unified diff turning a into b ("" when they are equal)."""
    a_lines, b_lines = split_lines(a), split_lines(b)
    matcher = difflib.SequenceMatcher(None, a_lines, b_lines, autojunk=False)
    out: list[str] = []
    for group in matcher.get_grouped_opcodes(context):
        if not out:
            out += [f"--- {a_name}\n", f"+++ {b_name}\n"]
        first, last = group[0], group[-1]
        out.append(f"@@ -{_range(first[1], last[2] - first[1])} +{_range(first[3], last[4] - first[3])} @@\n")
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                for line in a_lines[i1:i2]:
                    _emit(out, " ", line)
                continue
            for line in a_lines[i1:i2]:
                _emit(out, "-", line)
            for line in b_lines[j1:j2]:
                _emit(out, "+", line)
    return "".join(out)


def _parse_hunks(diff: str) -> list[tuple[int, list[str], list[str]]]:
    """(old start line, old lines, new lines) for each hunk, lines keeping their newlines."""
    hunks = []
    lines = diff.split("\n")
    i = 0
    while i < len(lines):
        match = _HUNK.match(lines[i])
        i += 1
        if not match:
            continue
        old_start = int(match.group(1))
        old_len = int(match.group(2)) if match.group(2) is not None else 1
        new_len = int(match.group(4)) if match.group(4) is not None else 1
        old: list[str] = []
        new: list[str] = []
        last: list[list[str]] = []
        while i < len(lines) and (len(old) < old_len or len(new) < new_len or lines[i] == _NO_NEWLINE):
            line = lines[i]
            i += 1
            if line == _NO_NEWLINE:
                for side in last:  # the line just read has no newline on the side(s) it belongs to
                    side[-1] = side[-1][:-1]
                continue
            tag, body = line[:1], line[1:] + "\n"
            if tag == " ":
                old.append(body)
                new.append(body)
                last = [old, new]
            elif tag == "-":
                old.append(body)
                last = [old]
            elif tag == "+":
                new.append(body)
                last = [new]
            else:
                raise PatchError(f"malformed hunk line {line!r}")
        if len(old) != old_len or len(new) != new_len:
            raise PatchError("the diff ends inside a hunk")
        # An empty old range names the line before the insertion point.
        hunks.append((old_start if old_len == 0 else old_start - 1, old, new))
    return hunks


def apply_diff(source: str, diff: str) -> str:
    """source with diff applied. Each hunk must match exactly, at its stated place or, failing that, at exactly one
    other place; otherwise PatchError says which hunk did not apply."""
    if not diff:
        return source
    lines = split_lines(source)
    shift = 0
    for n, (start, old, new) in enumerate(_parse_hunks(diff), 1):
        at = start + shift
        if lines[at:at + len(old)] != old:
            places = [k for k in range(len(lines) - len(old) + 1) if lines[k:k + len(old)] == old]
            if len(places) != 1:
                found = "nowhere" if not places else f"at {len(places)} places"
                raise PatchError(f"hunk {n} (line {start + 1} of the original) matches {found} in the source")
            at = places[0]
        lines[at:at + len(old)] = new
        shift = at - start + len(new) - len(old)
    return "".join(lines)


def diff_stats(diff: str) -> tuple[int, int]:
    """(lines added, lines removed) in a unified diff."""
    added = removed = 0
    in_hunks = False
    for line in diff.split("\n"):
        if line.startswith("@@"):
            in_hunks = True  # "--- " and "+++ " before the first hunk are file names, not lines
        elif in_hunks and line.startswith("+"):
            added += 1
        elif in_hunks and line.startswith("-"):
            removed += 1
    return added, removed
