"""Shared fixtures: a private data cache with the embedded default prepared once per session."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def evo_cache(tmp_path_factory):
    """Points EVO_CACHE_DIR (inherited by every subprocess) at a fresh cache with the default data prepared."""
    cache = tmp_path_factory.mktemp("evo-cache")
    previous = os.environ.get("EVO_CACHE_DIR")
    os.environ["EVO_CACHE_DIR"] = str(cache)
    import prepare

    assert prepare.main([]) == 0
    yield cache
    if previous is None:
        os.environ.pop("EVO_CACHE_DIR", None)
    else:
        os.environ["EVO_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def dataset(evo_cache):
    import prepare

    return prepare.active_dataset()


@pytest.fixture
def evo_bin():
    """The evo console script of the interpreter running the tests."""
    return str(Path(sys.executable).with_name("evo"))
