"""The errors evo raises. Library code raises these; only the CLI catches them, prints one line and exits non-zero.

    EvoError
    ├── ConfigError          a flag, file or setting is wrong; the message says what to change
    ├── TaskError            the task files (prepare.py, train.py, program.md) are missing or unusable
    └── StoreError           the DuckDB store is missing, locked by a live run, or does not hold what was asked

    OperatorError            the operators' own family (operators.errors), which the CLI catches beside EvoError
    ├── OperatorConfigError  bad --operators text or bad LLM settings
    └── OperatorUnavailable  an operator cannot run here (no API key, spend cap reached)

The operators import nothing from evo, so theirs cannot derive from EvoError. Nor does this module import them:
the scorer imports it inside the sandbox, which holds evo's own package and nothing else of the project.

A failed child is not an error: it is a result with a status and a reason, stored like any other result.
"""


class EvoError(Exception):
    """Base of every error evo reports to the user as one line."""


class ConfigError(EvoError):
    """A flag, file or setting is wrong."""


class TaskError(EvoError):
    """The task files are missing or unusable."""


class StoreError(EvoError):
    """The store is missing, held by another run, or lacks what was asked for."""
