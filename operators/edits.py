"""Reading an LLM's answer: a hypothesis line, then SEARCH/REPLACE edit blocks against the parent (Aider's format),
or else the whole new file in a code fence; and applying the edit blocks exactly.

    Hypothesis: a shorter warmup lets the peak learning rate act longer
    <<<<<<< SEARCH
    WARMUP_FRACTION = 0.02
    =======
    WARMUP_FRACTION = 0.01
    >>>>>>> REPLACE

Prose around the blocks, and code fences around them, are ignored. A block's SEARCH lines must occur exactly once
in the source, as whole lines, character for character; blocks apply in order, each to the result of the last.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

_SEARCH = re.compile(r"^\s*<{5,9}\s*SEARCH\b")
_DIVIDER = re.compile(r"^\s*={5,9}\s*$")
_REPLACE = re.compile(r"^\s*>{5,9}\s*REPLACE\b")
_HYPOTHESIS = re.compile(r"^[\s*#_>-]*hypothesis[\s*_]*:[\s*_]*(.+?)[\s*_]*$", re.I | re.M)
_FENCE = re.compile(r"^```[\w+.-]*[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
FULL_FILE_SHARE = 0.5  # a code block with at least this share of the parent's lines is taken as the whole file


@dataclass(frozen=True)
class Edit:
    """Replace the lines `search` (joined by "\\n") with the lines `replace`."""

    search: str
    replace: str


@dataclass(frozen=True)
class Answer:
    """What an answer holds: its hypothesis (may be ""), its edit blocks, or else a whole file; problem says why
    neither was found ("" when one was); malformed is True when the problem is a broken edit block (one that a
    second try might get right, unlike an answer with no code at all)."""

    hypothesis: str = ""
    edits: tuple[Edit, ...] = ()
    full_source: str | None = None
    problem: str = ""
    malformed: bool = False


def _edit_blocks(lines: list[str]) -> tuple[list[Edit], str]:
    edits: list[Edit] = []
    state, search, replace = "prose", [], []
    for line in lines:
        if state == "prose":
            if _SEARCH.match(line):
                state, search, replace = "search", [], []
        elif state == "search":
            if _DIVIDER.match(line):
                state = "replace"
            elif _SEARCH.match(line) or _REPLACE.match(line):
                return edits, f"edit block {len(edits) + 1} is malformed: a marker came before its ======= divider"
            else:
                search.append(line)
        elif _REPLACE.match(line):
            edits.append(Edit("\n".join(search), "\n".join(replace)))
            state = "prose"
        elif _SEARCH.match(line):
            return edits, f"edit block {len(edits) + 1} is malformed: it has no >>>>>>> REPLACE line"
        else:
            replace.append(line)
    if state != "prose":
        return edits, f"edit block {len(edits) + 1} is not closed (the answer may have been cut off)"
    return edits, ""


def parse_answer(text: str, parent_source: str) -> Answer:
    """The hypothesis and edits (or whole file) in an answer's text."""
    text = text.replace("\r\n", "\n")
    if not text.strip():
        return Answer(problem="the answer is empty")
    m = _HYPOTHESIS.search(text)
    hypothesis = m.group(1).strip() if m else ""
    edits, problem = _edit_blocks(text.split("\n"))
    if problem:
        return Answer(hypothesis, tuple(edits), problem=problem, malformed=True)
    if edits:
        return Answer(hypothesis, tuple(edits))
    blocks = [b for b in _FENCE.findall(text) if b.strip()]
    if not blocks:
        return Answer(hypothesis, problem="the answer has neither edit blocks nor a code block with the new file")
    block = max(blocks, key=len)
    parent_lines = parent_source.count("\n") + 1
    block_lines = block.count("\n") + 1
    if block_lines < FULL_FILE_SHARE * parent_lines:
        return Answer(hypothesis, problem=f"the answer has no edit blocks, and its code block ({block_lines} lines) "
                                          f"is not a whole file (the parent has {parent_lines})")
    return Answer(hypothesis, full_source=block)


def closest_lines(source: str, search: str) -> tuple[int, int, str]:
    """The run of source lines most like search: (first line, last line, 1-based), and their text."""
    lines = source.split("\n")
    k = max(1, len(search.split("\n")))
    best, best_at = -1.0, 0
    for i in range(max(1, len(lines) - k + 1)):
        ratio = difflib.SequenceMatcher(None, "\n".join(lines[i:i + k]), search, autojunk=False).ratio()
        if ratio > best:
            best, best_at = ratio, i
    return best_at + 1, min(best_at + k, len(lines)), "\n".join(lines[best_at:best_at + k])


def apply_edits(source: str, edits: tuple[Edit, ...] | list[Edit]) -> tuple[str | None, list[str]]:
    """(new source, []) when every edit applies exactly once, in order; else (None, one message per failed edit)."""
    lines = source.split("\n")
    failures: list[str] = []
    for n, edit in enumerate(edits, 1):
        if not edit.search.strip():
            failures.append(f"edit {n}: its SEARCH part is empty; it must quote the lines to replace")
            continue
        search = edit.search.split("\n")
        k = len(search)
        places = [i for i in range(len(lines) - k + 1) if lines[i:i + k] == search]
        if len(places) == 1:
            i = places[0]
            lines[i:i + k] = edit.replace.split("\n") if edit.replace else []
        elif not places:
            failures.append(f"edit {n}: its SEARCH lines do not occur in the parent exactly "
                            f"(starting {search[0].strip()[:60]!r})")
        else:
            failures.append(f"edit {n}: its SEARCH lines occur {len(places)} times in the parent; "
                            f"quote more lines to make them unique")
    if failures:
        return None, failures
    return "\n".join(lines), []
