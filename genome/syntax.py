"""ast.parse for code that may run in threads (the driver proposes children from a thread pool).

On CPython 3.11, parses running in several threads at once can fail with "SystemError: AST constructor recursion
depth mismatch" (python/cpython#106905: the syntax-tree builder keeps its depth in interpreter-wide state); we
saw it with four LLM operators finishing together. Every parse in genome/ and operators/ goes through this lock.
"""

from __future__ import annotations

import ast
import threading

_LOCK = threading.Lock()


def parse(source: str, mode: str = "exec") -> ast.AST:
    """ast.parse(source, mode=mode), one thread at a time. Raises what ast.parse raises (SyntaxError,
    ValueError for null bytes)."""
    with _LOCK:
        return ast.parse(source, mode=mode)
