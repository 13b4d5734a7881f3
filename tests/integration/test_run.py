"""`evo run` end to end: a real local Ray, a real DuckDB file, real (tiny) training runs."""

import json
import os
import signal
import subprocess
import time

import pytest

from evo.sandbox import shield
from evo.store import open_reader
from genome import hyperparameters
from tests.support.genomes import FAILING, ROOT, tiny_source
from tests.support.runs import evo, wait_for_reader

TINY_RUN = ["--population", "4", "--budget-tokens", "4096", "--workers", "2", "--operators", "hyper,merge",
            "--no-preflight", "--noise-seeds", "2", "--confirm-seeds", "1"]


def task_dir(tmp_path, seed=None):
    (tmp_path / "train.py").write_text(seed or tiny_source())
    (tmp_path / "program.md").write_text((ROOT / "program.md").read_text())
    return tmp_path


def test_a_run_records_every_individual_edge_and_evaluation(evo_bin, tmp_path):
    cwd = task_dir(tmp_path)
    proc = evo(evo_bin, cwd, "run", "--evaluations", "8", *TINY_RUN, "--bounds", "LEARNING_RATE=0.002:0.004,DEPTH=1:2")
    assert proc.returncode == 0, proc.stderr
    assert "best: " in proc.stdout and "lineage: evo lineage" in proc.stdout
    with open_reader(cwd / "evo.duckdb") as db:
        run = db.latest_run()
        assert run.status == "finished" and run.noise_floor is not None
        individuals = db.individuals(run.run_id)
        seeds = [i for i in individuals if i.operator == "seed"]
        assert len(seeds) == 1 and seeds[0].parents == ()
        assert all(len(i.parents) >= 1 for i in individuals if i.operator != "seed")
        assert all(len(i.parents) == 2 for i in individuals if i.operator.endswith("crossover"))
        evaluations = db.evaluations(run.run_id)
        assert all(e.status in ("ok", "crash", "timeout", "oom", "rejected") for e in evaluations)
        assert sum(e.purpose == "search" for e in evaluations) == 8
        assert sum(e.purpose == "noise" for e in evaluations) == 2
        best_id = proc.stdout.split("best: ")[1].split()[0]
        best = [e for e in evaluations if e.individual_id == best_id and e.status == "ok"]
        assert any(e.purpose == "confirm" for e in best) or best_id == seeds[0].id
        # --bounds is stored with the run and every child that trained kept it
        assert run.config["bounds"] == {"LEARNING_RATE": [0.002, 0.004], "DEPTH": [1, 2]}
        trained = {e.individual_id for e in evaluations}
        for i in db.individuals(run.run_id, with_source=True):
            if i.id in trained:
                view = hyperparameters(i.source)
                assert 0.002 <= view["LEARNING_RATE"].value <= 0.004 and view["DEPTH"].value in (1, 2)
        assert len({e.seed for e in evaluations if e.purpose == "search"}) == 1  # shared search seed
        # The test split is measured for the seed's noise evaluations and every confirmation, never for a search
        # evaluation, and the run reports its best's test_bpb (the mean over those) beside its val_bpb.
        ok = [e for e in evaluations if e.status == "ok"]
        assert all((e.test_bpb is not None) == (e.purpose in ("noise", "confirm")) for e in ok)
        tests = [e.test_bpb for e in best if e.test_bpb is not None]
        assert f"test_bpb {sum(tests) / len(tests):.4f} (the test split, never selected on)" in proc.stdout
        # The population the store marks is the one the run saved in its state, full (4) once enough individuals
        # scored, every member scored; the best is one of them.
        population = db.population(run.run_id)
        assert sorted(population) == sorted(m for island in run.state["islands"]["members"] for m in island)
        placed = {e.individual_id for e in evaluations if e.status == "ok" and e.purpose in ("noise", "search")}
        assert len(population) == min(4, len(placed)) and len(placed) >= 2
        assert set(population) <= {f.individual_id for f in db.fitness(run.run_id)} and best_id in population
        _, rows = db.query("SELECT count(*) FROM evaluations WHERE log LIKE 'evo: training runs without the shield%'")
        assert rows[0][0] == (0 if shield.unavailable() is None else len(evaluations))  # the workers use it
    assert ("training runs without the shield" in proc.stdout) == (shield.unavailable() is not None)
    status = evo(evo_bin, cwd, "status")
    assert status.returncode == 0 and "finished" in status.stdout and "search evals     8/8 done" in status.stdout
    assert f", test {sum(tests) / len(tests):.4f})" in status.stdout


def test_killing_the_driver_loses_nothing_and_resume_finishes(evo_bin, tmp_path):
    cwd = task_dir(tmp_path)
    # with two islands, so that their members and the islands of proposed children come back too
    run = subprocess.Popen([evo_bin, "run", "--evaluations", "10", *TINY_RUN, "--islands", "2"], cwd=cwd,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env={**os.environ, "EVO_LOG_LEVEL": "ERROR"})
    reported = 0
    for line in run.stdout:
        if "search " in line and " done" in line:
            reported = int(line.split("search ")[1].split()[0])
            if reported >= 3:
                break
    assert reported >= 3
    run.send_signal(signal.SIGKILL)
    run.wait()
    with wait_for_reader(cwd / "evo.duckdb") as db:
        run_id = db.latest_run().run_id
        before = {e.id: (e.individual_id, e.val_bpb, e.status) for e in db.evaluations(run_id)}
    assert sum(1 for _, _, status in before.values()) >= reported + 2  # the noise evaluations, then the search ones

    proc = evo(evo_bin, cwd, "run", "--resume")
    assert proc.returncode == 0, proc.stderr
    assert f"run {run_id} resumed" in proc.stdout
    with open_reader(cwd / "evo.duckdb") as db:
        after = {e.id: (e.individual_id, e.val_bpb, e.status) for e in db.evaluations(run_id)}
        assert db.latest_run().status == "finished"
        search = [e for e in db.evaluations(run_id) if e.purpose == "search" and e.status != "interrupted"]
        assert len(search) >= 10
        run = db.latest_run()
        assert run.config["islands"] == 2 and len(run.state["islands"]["members"]) == 2
        assert set(db.population(run_id)) == {i for island in run.state["islands"]["members"] for i in island}
    assert all(after[k] == v for k, v in before.items())  # nothing finished was lost or changed


@pytest.mark.parametrize("args, message", [
    (["--population", "1"], "--population must be at least 2; got 1"),
    (["--population", "4", "--tournament-size", "9"],
     "--tournament-size must be between 2 and the population size (4)"),
    (["--operators", "hyper,magic"], "unknown operator 'magic'"),
    (["--selection", "roulette"], "--selection must be one of tournament, best, random"),
    (["--population", "4", "--islands", "3"], "--islands must be between 1 and half the population (2); got 3"),
    (["--resume", "--db", "missing.duckdb"], "--resume: no database at missing.duckdb"),
    (["--address", "127.0.0.1:9", "--operators", "hyper"], "--address 127.0.0.1:9: cannot reach a Ray cluster there"),
    (["--train", "nope.py", "--operators", "hyper"], "nope.py: no such file"),
    (["--bounds", "LEARNING_RATE"], "--bounds: 'LEARNING_RATE' is not NAME=LOW:HIGH"),
    (["--bounds", "LEARNING_RATE=0.1:0.01"], "--bounds LEARNING_RATE: needs LOW:HIGH with LOW below HIGH"),
    (["--bounds", "NOPE=1:2", "--operators", "hyper"], "--bounds NOPE: the seed has no such constant"),
    (["--bounds", "LEARNING_RATE=0.5:0.9", "--operators", "hyper"], "leaves out the seed's own LEARNING_RATE"),
])
def test_bad_run_input_gets_one_clear_line(evo_bin, tmp_path, args, message):
    proc = evo(evo_bin, task_dir(tmp_path), "run", *args, timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_resume_on_a_file_with_no_run(evo_bin, tmp_path):
    import duckdb

    duckdb.connect(str(tmp_path / "empty.duckdb")).close()
    proc = evo(evo_bin, task_dir(tmp_path), "run", "--resume", "--db", "empty.duckdb", timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "has no run to resume" in proc.stderr or "not an evo store" in proc.stderr


def test_a_seed_that_fails_is_reported_before_the_population_starts(evo_bin, tmp_path):
    proc = evo(evo_bin, task_dir(tmp_path, FAILING), "run", "--evaluations", "4", *TINY_RUN)
    assert proc.returncode == 1
    assert "the seed train.py failed its first evaluation (crash)" in proc.stderr
    assert "broken on purpose" in proc.stderr
    with open_reader(tmp_path / "evo.duckdb") as db:
        run = db.latest_run()
        assert run.status == "failed"
        assert not [e for e in db.evaluations(run.run_id) if e.purpose == "search"]


def test_a_database_held_by_a_live_run_is_refused(evo_bin, tmp_path):
    cwd = task_dir(tmp_path)
    live = subprocess.Popen([evo_bin, "run", "--evaluations", "50", *TINY_RUN], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        for line in live.stdout:
            if "started" in line:
                break
        proc = evo(evo_bin, cwd, "run", "--evaluations", "2", *TINY_RUN, timeout=120)
        assert proc.returncode == 1
        assert "evo.duckdb is in use by a live run" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        status = evo(evo_bin, cwd, "status", "--json", timeout=120)  # answered by the live run's actor
        assert status.returncode == 0 and '"status": "running"' in status.stdout
        counted = evo(evo_bin, cwd, "sql", "SELECT count(*) AS n FROM individuals", "--format", "json", timeout=120)
        assert counted.returncode == 0, counted.stderr
        live_count = json.loads(counted.stdout)[0]["n"]
        assert live_count >= 1
        # Every reading command goes through the live run's actor: lineage, show and plot too.
        seed = json.loads(evo(evo_bin, cwd, "sql", "SELECT id FROM individuals WHERE operator = 'seed'",
                              "--format", "json", timeout=120).stdout)[0]["id"]
        lineage = evo(evo_bin, cwd, "lineage", seed[:6], timeout=120)
        assert lineage.returncode == 0 and f"0 step(s) from the seed to {seed}" in lineage.stdout, lineage.stderr
        shown = evo(evo_bin, cwd, "show", seed, timeout=120)
        assert shown.returncode == 0 and shown.stdout == (cwd / "train.py").read_text()
        deadline = time.time() + 300
        while json.loads(evo(evo_bin, cwd, "sql", "SELECT count(*) AS n FROM evaluations", "--format", "json",
                             timeout=120).stdout)[0]["n"] == 0:
            assert time.time() < deadline, "no evaluation finished within 5 minutes"
            time.sleep(2)
        plotted = evo(evo_bin, cwd, "plot", "--out", str(tmp_path / "live.png"), timeout=180)
        assert plotted.returncode == 0, plotted.stderr
        assert (tmp_path / "live.png").stat().st_size > 0
    finally:
        live.send_signal(signal.SIGINT)
        try:
            out, _ = live.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            live.kill()
            raise
    assert "resume with: evo run --resume" in out
    with open_reader(cwd / "evo.duckdb") as db:
        run = db.latest_run()
        assert run.status == "interrupted"
        assert live_count <= len(db.individuals(run.run_id))


def _descends_from(pid, ancestor):
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            return False
    return False


def _ray_task_processes(title, ancestor):
    """Processes titled `title` (Ray names a worker busy in a task ray::Class.method) started under ancestor."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read().startswith(title.encode()) and _descends_from(int(entry), ancestor):
                        found.append(int(entry))
            except OSError:
                pass
    return found


def test_a_worker_killed_mid_run_costs_one_evaluation_not_the_run(evo_bin, tmp_path):
    from tests.support.genomes import napper_source

    cwd = task_dir(tmp_path, napper_source(8.0))
    run = subprocess.Popen([evo_bin, "run", "--evaluations", "4", "--population", "4", "--budget-tokens", "1000",
                            "--workers", "2", "--operators", "hyper", "--no-preflight", "--noise-seeds", "2",
                            "--confirm-seeds", "1"], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    for line in run.stdout:
        if "] search:" in line:
            break
    deadline = time.time() + 120
    while not (victims := _ray_task_processes("ray::Worker.evaluate", run.pid)) and time.time() < deadline:
        time.sleep(0.2)
    assert victims
    os.kill(victims[0], signal.SIGKILL)
    out, _ = run.communicate(timeout=600)
    assert run.returncode == 0, out
    with open_reader(cwd / "evo.duckdb") as db:
        run_row = db.latest_run()
        assert run_row.status == "finished"
        lost = [e for e in db.evaluations(run_row.run_id) if e.error and "worker died" in e.error]
        assert len(lost) == 1 and lost[0].status == "crash"
        assert sum(e.purpose == "search" for e in db.evaluations(run_row.run_id)) >= 4


def test_a_run_that_does_not_stop_when_asked_is_stopped_at_once_and_resumes(evo_bin, tmp_path):
    """The run actor frozen (SIGSTOP): the driver says so instead of crashing, and after Ctrl-C it waits its grace,
    writes where its threads were, stops at once with one line, and the run resumes from what was stored."""
    cwd = task_dir(tmp_path)
    env = {**os.environ, "EVO_STOP_GRACE_S": "5"}
    live = subprocess.Popen([evo_bin, "run", "--evaluations", "50", *TINY_RUN], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    frozen = []
    try:
        for line in live.stdout:
            if "] search:" in line:
                break
        deadline = time.time() + 60
        while not (frozen := _ray_task_processes("ray::RunActor", live.pid)) and time.time() < deadline:
            time.sleep(0.2)
        assert len(frozen) == 1
        os.kill(frozen[0], signal.SIGSTOP)
        time.sleep(35)                                  # past the 30 s a status call waits
        live.send_signal(signal.SIGINT)
        out, _ = live.communicate(timeout=60)
    finally:
        for pid in frozen:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        live.kill()
    assert live.returncode == 130, out
    assert "the run has not answered for 30 s; still waiting" in out
    assert "Traceback" not in out
    stopped = [line for line in out.splitlines() if "did not stop within 5 s" in line]
    assert len(stopped) == 1 and "resume with: evo run --resume" in stopped[0], out
    stacks = (cwd / "evo.duckdb.stop-stacks.txt").read_text()
    assert "_watch" in stacks and "the run actor did not answer within 5 s" in stacks   # it was frozen
    resumed = evo(evo_bin, cwd, "run", "--resume", "--evaluations", "6", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    with open_reader(cwd / "evo.duckdb") as db:
        run = db.latest_run()
        assert run.status == "finished"
        assert sum(e.purpose == "search" and e.status == "ok" for e in db.evaluations(run.run_id)) >= 6


def test_a_search_that_cannot_be_shielded_is_refused_unless_the_user_accepts_it(evo_bin, tmp_path):
    cwd = task_dir(tmp_path)
    env = {**os.environ, "EVO_SHIELD": "off"}
    refused = subprocess.run([evo_bin, "run", "--operators", "hyper"], cwd=cwd, capture_output=True, text=True,
                             timeout=120, env=env)
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1
    assert "cannot be shielded" in refused.stderr and "--allow-unshielded" in refused.stderr
    # with the flag the run goes on past that check, to the next thing it cannot do here
    accepted = subprocess.run([evo_bin, "run", "--operators", "hyper", "--allow-unshielded", "--address",
                               "127.0.0.1:9"], cwd=cwd, capture_output=True, text=True, timeout=120, env=env)
    assert "cannot reach a Ray cluster" in accepted.stderr and "shielded" not in accepted.stderr
