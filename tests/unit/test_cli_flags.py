"""The flags a user gave, as the CLI sees them: an abbreviated flag (argparse accepts any unique prefix) counts as
given like the full one, so `evo run --resume --pop 8` is refused like `--population 8` when the stored run has
another population."""

import subprocess

import pytest

from evo.cli.flags import given
from evo.config import RunConfig
from evo.store import open_writer


@pytest.fixture
def stored_run(tmp_path):
    """A store holding one run (population 16) that got past its start: enough for --resume to read its settings."""
    db = tmp_path / "runs.duckdb"
    store = open_writer(db)
    try:
        store.new_run(RunConfig(population=16).stored(), state={"phase": "search"})
    finally:
        store.close()
    return db


@pytest.mark.parametrize("flag", ["--population", "--pop", "--popul", "--population=8", "--pop=8"])
def test_a_conflicting_flag_on_resume_is_refused_abbreviated_or_not(stored_run, evo_bin, flag):
    args = [flag] if "=" in flag else [flag, "8"]
    proc = subprocess.run([evo_bin, "run", "--resume", *args, "--db", str(stored_run)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.strip() == ("evo run: error: --population 8 conflicts with the stored run's 16; drop the flag "
                                   "to resume, or start a new run with another --db")


def test_given_names_the_settings_typed_whatever_their_spelling():
    argv = ["run", "--res", "--pop", "8", "--no-preflight", "--db=x.duckdb", "--budget-tok", "100", "--env", "A",
            "--env", "B"]
    assert given(argv, RunConfig) == {"resume", "population", "preflight", "db", "budget_tokens", "env"}
    assert given(["run", "--population", "8", "--db=--pop"], RunConfig) == {"population", "db"}  # a value, not a flag
    assert given(["run"], RunConfig) == set()


def test_a_stored_run_without_its_seed_is_refused_in_one_line(stored_run, evo_bin):
    proc = subprocess.run([evo_bin, "run", "--resume", "--db", str(stored_run)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("evo run: error: --resume: run ") and proc.stderr.endswith(
        "holds no seed to resume from\n"), proc.stderr
