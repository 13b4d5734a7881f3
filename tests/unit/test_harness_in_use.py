"""The validator reads the harness API of the harness in use: a task folder made by `evo init` whose prepare.py's
`__all__` names one more helper, and whose train.py imports it, is accepted at the start of `evo run` and for each
child the policy checks."""

import subprocess
from pathlib import Path

from evo.config import RunConfig
from evo.search.policy import SearchPolicy
from evo.task_files import init_task
from genome import content_hash, read_harness_api, validate
from operators.variation import Variation

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


def _child_verdict(seed: str, **options):
    """The verdict on a child of the seed (the seed plus a comment) in a policy past its noise phase."""
    config = RunConfig(population=4, tournament_size=2, evaluations=6, operators={"hyper.mutate": 1.0},
                       noise_seeds=2, confirm_seeds=1, elites=2, preflight=False, seed=0)
    policy = SearchPolicy(config, seed, **options)
    for value in (3.0, 3.01):
        policy.report(policy.next_task(), {"status": "ok", "val_bpb": value})
    assert policy.close_noise_phase()
    [proposal] = policy.proposals(limit=1)
    child = seed + "# a child's edit\n"
    return policy.child(proposal, Variation(operator="llm.mutate", status="ok", source=child,
                                            description="an edit")), content_hash(child)


def test_the_policy_validates_children_against_the_harness_it_is_given(tmp_path):
    task = task_with_one_more_name(tmp_path / "task")
    seed = (task / "train.py").read_text()
    verdict, child_id = _child_verdict(seed, harness_api=read_harness_api(task / "prepare.py"))
    assert (verdict.status, verdict.id) == ("proposed", child_id), verdict.reason
    packaged, _ = _child_verdict(seed)  # without it: the packaged harness's API, which lacks the name
    assert packaged.status == "rejected" and f"imports {EXTRA} from prepare" in packaged.reason
