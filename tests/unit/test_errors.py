"""evo.errors.first_line: the one way evo turns an exception it caught into the line a message quotes."""

import duckdb
import pytest

from evo.errors import StoreError, first_line
from evo.store import open_reader


def test_the_first_line_of_a_long_message_stripped():
    assert first_line(RuntimeError("\n  torch.export failed\n  at line 3\n  at line 4")) == "torch.export failed"


def test_an_empty_message_gives_the_type_name():
    assert first_line(KeyboardInterrupt()) == "KeyboardInterrupt"
    assert first_line(ValueError("   ")) == "ValueError"
    assert first_line(ValueError(""), typed=True) == "ValueError"


def test_typed_puts_the_type_first_and_limit_cuts():
    assert first_line(KeyError("x\ny"), typed=True) == "KeyError: 'x\\ny'"
    assert first_line(ValueError("bad value\nmore"), typed=True) == "ValueError: bad value"
    assert first_line(ValueError("a" * 500), 200) == "a" * 200
    assert first_line(ValueError("abc"), 200, typed=True) == "ValueError: abc"


def test_a_store_error_quotes_duckdbs_first_line_only(tmp_path):
    """A file that is not a DuckDB database: DuckDB's message runs to several lines; the store's error is one."""
    bad = tmp_path / "not-a-store.duckdb"
    bad.write_bytes(b"this is not a database\n" * 1000)
    with pytest.raises(duckdb.Error) as raw:
        duckdb.connect(str(bad), read_only=True)
    with pytest.raises(StoreError) as caught:
        open_reader(str(bad))
    assert "\n" not in str(caught.value)
    assert first_line(raw.value) in str(caught.value)
