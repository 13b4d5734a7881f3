"""Text made safe and uniform to show on a terminal.

- printable(), one_line(): whatever a child controls (its log, its error line, what it reports, a description an
  LLM wrote for it) may hold bytes a terminal acts on: ESC sequences that set the window title, write the
  clipboard, clear the screen or move the cursor over evo's own lines; CR and backspace; C1 controls
  (U+0080-U+009F); bidirectional overrides. Each shows as an escape (`\\x1b`, `\\r`, `\\u202e`) and does nothing.
- They apply where text is shown, not where it is stored: a store written by an older evo holds raw text too.
- mean_std(): how a val_bpb measured n times is written, "3.1234 ± 0.0012 (n=3)", wherever evo shows one.
"""

from __future__ import annotations

import re
import unicodedata

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Candidates: C0 controls, DEL and everything outside printable ASCII; the callback keeps what is not a control.
_CANDIDATE = re.compile(r"[\x00-\x1f\x7f-\U0010ffff]")
_UNSAFE_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}  # controls, format (bidi, zero-width), surrogates, separators


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: object, *, newlines: bool = True, tabs: bool = True) -> str:
    """text (str() of anything, None as "") with every control and format character escaped; newlines and tabs
    are kept unless newlines=False or tabs=False (a one-line field: a second line could pass for evo's own)."""
    if text is None:
        return ""
    text = str(text)
    keep = ("\n" if newlines else "") + ("\t" if tabs else "")

    def replace(match: re.Match) -> str:
        char = match.group()
        if char in keep or (ord(char) >= 0xA0 and unicodedata.category(char) not in _UNSAFE_CATEGORIES):
            return char
        return _escape(char)

    return _CANDIDATE.sub(replace, text)


def one_line(text: object) -> str:
    """printable() for a field shown on one line: newlines are escaped too."""
    return printable(text, newlines=False)


def mean_std(mean: float, std: float | None, n: int, *more: str) -> str:
    """A score measured n times: "3.1234 ± 0.0012 (n=3)", the spread only where there is one (std known, n > 1);
    more goes inside the parentheses after n ("(n=3, 1 confirm)")."""
    spread = f" ± {std:.4f}" if std is not None and n > 1 else ""
    return f"{mean:.4f}{spread} ({', '.join((f'n={n}', *more))})"
