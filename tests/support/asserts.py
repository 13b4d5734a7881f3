"""Checks several test modules make."""

import pytest


def one_line(error: pytest.ExceptionInfo) -> str:
    """The raised error's message, checked to be one non-empty line."""
    text = str(error.value)
    assert "\n" not in text and text, text
    return text
