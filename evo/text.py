"""Text a child wrote, made safe to show on a terminal.

Whatever a child controls (its log, its error line, what it reports, a description an LLM wrote for it) may hold
bytes a terminal acts on: ESC starts sequences that set the window title, write the clipboard, clear the screen or
move the cursor over evo's own lines; CR and backspace draw over a line; C1 controls (U+0080-U+009F) act like ESC
on some terminals; bidirectional overrides reorder what is read. printable() shows each of them as an escape
(`\\x1b`, `\\r`, `\\u202e`), so the text reads as what it is and does nothing. It is applied where text is shown,
not where it is stored: a store written by an older evo holds raw text too.
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
