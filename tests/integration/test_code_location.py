"""Every process of a run imports the evo that started it, even from the root of another checkout: Ray puts the
driver's working directory first on its workers' sys.path, where an `evo` folder there would shadow the one the
`evo` command (and the sandbox's `python -I -m evo.sandbox....` subprocesses) use."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import evo
from evo.task_files import init_task

DRIVER = textwrap.dedent("""
    import json
    import ray
    import evo
    from evo.cluster import start_ray

    @ray.remote
    def where():
        import evo
        return evo.__file__

    start_ray(None)
    try:
        print(json.dumps({"driver": evo.__file__, "worker": ray.get(where.remote(), timeout=120)}))
    finally:
        ray.shutdown()
""")


def other_checkout(root: Path) -> Path:
    """A folder holding an `evo` package that is not this one (as the root of another checkout does)."""
    (root / "evo").mkdir(parents=True)
    (root / "evo" / "__init__.py").write_text("OTHER = True\n")
    return root


def test_ray_workers_import_the_drivers_evo_not_the_working_directorys(tmp_path):
    import json

    checkout = other_checkout(tmp_path / "checkout")
    script = tmp_path / "driver" / "driver.py"
    script.parent.mkdir()
    script.write_text(DRIVER)
    proc = subprocess.run([sys.executable, str(script)], cwd=checkout, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["driver"] == evo.__file__
    assert seen["worker"] == seen["driver"]


@pytest.mark.slow
def test_evo_run_from_another_checkouts_root_evaluates_its_seed(tmp_path, evo_bin):
    """The whole run (the run actor, the workers and their sandboxed subprocesses) from a folder whose `evo` is
    another one: the seed is evaluated ok."""
    checkout = other_checkout(tmp_path / "checkout")
    init_task(str(checkout))  # a checkout's root holds the task files too
    (checkout / "evo" / "__init__.py").write_text("raise ImportError('the evo of another checkout was imported')\n")
    db = tmp_path / "runs.duckdb"
    proc = subprocess.run([evo_bin, "run", "--population", "2", "--tournament-size", "2", "--elites", "1",
                           "--evaluations", "1", "--budget-tokens", "4096", "--workers", "1", "--operators", "hyper",
                           "--no-preflight", "--noise-seeds", "2", "--confirm-seeds", "1", "--db", str(db), "--quiet"],
                          cwd=checkout, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    from evo.store import open_reader

    with open_reader(str(db)) as reader:
        run = reader.latest_run()
        statuses = [e.status for e in reader.evaluations(run.run_id)]
    assert statuses and "ok" in statuses, statuses
