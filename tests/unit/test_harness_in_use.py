"""The validator reads the harness API of the harness in use: a task folder made by `evo init` whose prepare.py's
`__all__` names one more helper, and whose train.py imports it, is accepted at the start of `evo run` and for each
child the policy checks."""

import subprocess
from pathlib import Path

from evo.task_files import init_task
from genome import read_harness_api, validate

EXTRA = "task_helper"
OLD_ALL = ('__all__ = ["VOCAB_SIZE", "SEQ_LEN", "Budget", "budget", "seed", "vocab_size", "train_batches", '
           '"progress", "submit"]')
OLD_IMPORT = "from prepare import SEQ_LEN, progress, seed, submit, train_batches, vocab_size"


def task_with_one_more_name(folder: Path) -> Path:
    """A task folder by `evo init` whose prepare.py exports EXTRA and whose train.py imports and calls it."""
    init_task(str(folder))
    prepare, train = folder / "prepare.py", folder / "train.py"
    text = prepare.read_text()
    assert OLD_ALL in text
    prepare.write_text(text.replace(OLD_ALL, OLD_ALL[:-1] + f', "{EXTRA}"]') +
                       f"\n\ndef {EXTRA}():\n    return 0\n")
    source = train.read_text()
    assert OLD_IMPORT in source
    train.write_text(source.replace(OLD_IMPORT, OLD_IMPORT + f", {EXTRA}") + f"\n{EXTRA}()\n")
    return folder


def test_the_folders_harness_declares_the_name_the_packaged_one_does_not(tmp_path):
    task = task_with_one_more_name(tmp_path / "task")
    api = read_harness_api(task / "prepare.py")
    assert EXTRA in api
    source = (task / "train.py").read_text()
    assert validate(source, api).ok
    assert not validate(source).ok  # the packaged harness's API: the name is not in it


def test_evo_run_validates_the_seed_against_the_folders_harness(tmp_path, evo_bin):
    """`evo run` in the folder gets past the validator; --bounds naming no constant stops it at the next check, before
    any data is prepared or Ray is started."""
    task = task_with_one_more_name(tmp_path / "task")
    proc = subprocess.run([evo_bin, "run", "--bounds", "NO_SUCH_CONSTANT=1:2",
                           "--db", str(tmp_path / "runs.duckdb")], cwd=task, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "refused by the validator" not in proc.stderr
    assert "--bounds NO_SUCH_CONSTANT" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr

