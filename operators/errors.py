"""The errors the operators raise. Each message is one line that says what to change; the CLI prints it and exits
non-zero (evo.errors draws the whole tree).

    OperatorError
    ├── OperatorConfigError  bad --operators text (an unknown name, a bad weight), or bad LLM settings
    └── OperatorUnavailable  an operator cannot run here (no API key, a key or model the API refuses, spend cap)

An operator that runs but makes no usable child is not an error: it returns an invalid Variation with the reason.
"""


class OperatorError(Exception):
    """Base of every error the operators report to the user as one line."""


class OperatorConfigError(OperatorError):
    """--operators or the LLM settings are wrong."""


class OperatorUnavailable(OperatorError):
    """An operator cannot run in this setting (for example an LLM operator without an API key)."""
