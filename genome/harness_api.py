"""The harness API: the names a train.py may import from prepare.py, as prepare.py's own `__all__` declares them.

- prepare.py is the one definition: read_harness_api() reads its `__all__` from the syntax tree, never importing
  the file (it loads torch and installs an excepthook) and never importing evo.
- The validator and the LLM prompts quote those names. A run passes the API of the harness it uses (a task
  folder's own prepare.py); HARNESS_NAMES and HARNESS_API are the packaged harness's, the default.
- Where the packaged task files live is decided here, once (packaged_task_dirs()); evo.task_files reads it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from genome.syntax import parse


class HarnessAPIError(ValueError):
    """A harness file whose `__all__` cannot be read as a literal list of names."""


def packaged_task_dirs() -> tuple[Path, ...]:
    """Where the task files installed with this copy of genome can be, in the order to look: evo/packaged_task/ in
    an installed wheel (where pyproject.toml puts them), else the root of the source checkout, beside genome/."""
    root = Path(__file__).resolve().parent.parent
    return root / "evo" / "packaged_task", root


def packaged_harness() -> Path:
    """The prepare.py installed with this copy of genome: in the first of packaged_task_dirs() that holds one."""
    places = packaged_task_dirs()
    for folder in places:
        if (folder / "prepare.py").is_file():
            return folder / "prepare.py"
    raise HarnessAPIError(f"prepare.py is missing from this installation (looked in {' and '.join(map(str, places))})")


def read_harness_api(path: str | Path) -> tuple[str, ...]:
    """The names in the module-level `__all__ = [...]` of the harness file at path, in their order. Raises
    HarnessAPIError when the file cannot be read or parsed, or has no such assignment of string literals."""
    path = Path(path)
    try:
        tree = parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise HarnessAPIError(f"{path}: cannot be read ({e})") from None
    except (SyntaxError, ValueError) as e:
        raise HarnessAPIError(f"{path}: does not parse ({e})") from None
    found = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            found = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "__all__":
            found = node
    if found is None or found.value is None:
        raise HarnessAPIError(f"{path}: no `__all__ = [...]` naming the harness API")
    try:
        names = ast.literal_eval(found.value)
    except (ValueError, TypeError, SyntaxError):
        names = None
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) and n.isidentifier()
                                                                    for n in names):
        raise HarnessAPIError(f"{path}: line {found.lineno}: `__all__` must be a literal list of names")
    return tuple(names)


# The names in declared order (for quoting) and as a set (for checking), from the harness shipped with genome.
HARNESS_NAMES: tuple[str, ...] = read_harness_api(packaged_harness())
HARNESS_API: frozenset[str] = frozenset(HARNESS_NAMES)
