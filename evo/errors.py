"""The errors evo raises. Library code raises these; only the CLI catches them, prints one line and exits non-zero.

    EvoError
    ├── ConfigError          a flag, file or setting is wrong; the message says what to change
    ├── TaskError            the task files (prepare.py, train.py, program.md) are missing or unusable
    └── StoreError           the DuckDB store is missing, locked by a live run, or does not hold what was asked
        └── StoreInUse       another process holds the store (a live run, or another connection to the file)

    OperatorError            the operators' own family (operators.errors), which the CLI catches beside EvoError
    ├── OperatorConfigError  bad --operators text or bad LLM settings
    └── OperatorUnavailable  an operator cannot run here (no API key, spend cap reached)

- The operators import nothing from evo, so theirs cannot derive from EvoError; nor does this module import them
  (the scorer imports it inside the sandbox, which holds evo's own package and nothing else of the project).
- first_line(error): an exception as one line, the one way evo quotes an error it caught.
- A failed child is not an error: it is a result with a status and a reason, stored like any other result.
"""


class EvoError(Exception):
    """Base of every error evo reports to the user as one line."""


class ConfigError(EvoError):
    """A flag, file or setting is wrong."""


class TaskError(EvoError):
    """The task files are missing or unusable."""


class StoreError(EvoError):
    """The store is missing, held by another run, or lacks what was asked for."""


class StoreInUse(StoreError):
    """Another process holds the store: a live run (its lock), or another connection to the DuckDB file."""


def first_line(error: BaseException, limit: int | None = None, *, typed: bool = False) -> str:
    """An exception as the one line a message quotes: the first line of its text (torch's, Ray's and DuckDB's run
    to many), or its type's name when the text is empty; typed puts the type's name first ("ValueError: ...");
    cut to limit characters when one is given."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else ""
    if typed or not line:
        line = f"{type(error).__name__}: {line}" if line else type(error).__name__
    return line[:limit]
