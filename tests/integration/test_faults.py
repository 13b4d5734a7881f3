"""Faults during `evo run`, with real Ray, real DuckDB files and real processes: signals, a killed driver, a lost
node, a failing Messages API, a full disk, a read-only store and a damaged task bundle. Each ends with a clear
message, and no finished evaluation is lost."""

import json
import os
import shutil
import signal
import time
from datetime import datetime, timezone

import pytest

from evo.store import lock_path, open_reader, open_writer
from tests.support.genomes import ROOT, napper_source
from tests.support.messages_server import MessagesServer, cut, error, message
from tests.support.runs import (
    NAP_RUN,
    LiveRun,
    environment,
    evo,
    fill,
    one_line,
    read_only_view,
    small_filesystem,
    task_dir,
    wait_for_reader,
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_stops_the_run_as_ctrl_c_does(evo_bin, tmp_path, signum):
    cwd = task_dir(tmp_path, napper_source(6.0))
    run = LiveRun(evo_bin, cwd, "--evaluations", "20", "--workers", "2", *NAP_RUN)
    try:
        run.wait_for(lambda line: "] search:" in line, "the search started")
        run.proc.send_signal(signum)
        code, out, err = run.finish(timeout=180)
    finally:
        run.kill()
    name = signal.Signals(signum).name
    assert code == 130, out + err
    assert f"{name}: stopping; in-flight evaluations are recorded as interrupted" in err
    assert out.strip().splitlines()[-1] == f"resume with: evo run --resume --db {cwd / 'evo.duckdb'}"
    assert "Traceback" not in err
    assert not lock_path(cwd / "evo.duckdb").exists()       # the store was closed and let go
    with open_reader(cwd / "evo.duckdb") as db:
        stored = db.latest_run()
        assert stored.status == "interrupted"
        statuses = [e.status for e in db.evaluations(stored.run_id)]
        assert statuses.count("interrupted") >= 1 and statuses.count("ok") >= 2


def test_a_second_stop_signal_stops_at_once(evo_bin, tmp_path):
    cwd = task_dir(tmp_path, napper_source(6.0))
    run = LiveRun(evo_bin, cwd, "--evaluations", "20", "--workers", "2", *NAP_RUN)
    try:
        run.wait_for(lambda line: "] search:" in line, "the search started")
        run.proc.send_signal(signal.SIGTERM)
        first = ""
        while "stopping" not in first:                         # the run is stopping: now the second one
            first = run.proc.stderr.readline()
            assert first, "the run ended before it said it was stopping"
        run.proc.send_signal(signal.SIGTERM)
        code, out, err = run.finish(timeout=120)
    finally:
        run.kill()
    assert code == 130 and "Traceback" not in err, (code, err)
    assert "SIGTERM again: stopping at once; every finished evaluation is stored" in err
    assert "resume with: evo run --resume" in err
    with wait_for_reader(cwd / "evo.duckdb") as db:
        run_id = db.latest_run().run_id
        assert sum(e.status == "ok" for e in db.evaluations(run_id)) >= 2   # the noise evaluations at least


def test_a_killed_run_resumes_at_once_with_its_workers_threads_and_conditions(evo_bin, tmp_path):
    # Two workers of one thread each on this machine; resumed without --workers, the default would be one worker
    # of two threads, and the scores after the resume would not be paired with those before.
    cwd = task_dir(tmp_path, napper_source(1.5))
    run = LiveRun(evo_bin, cwd, "--evaluations", "4", "--workers", "2", *NAP_RUN)
    try:
        started = run.wait_for(lambda line: " started: " in line, "the run started")
        reported = int(run.searched(1).split("search ")[1].split()[0])
        os.kill(run.proc.pid, signal.SIGKILL)
        killed_at = datetime.now(timezone.utc).replace(tzinfo=None)
        run.proc.wait()
    finally:
        run.kill()
    assert "2 worker(s) (1 thread(s) each)" in started
    # At once: the old driver's run actor may still hold the store; the resume waits for it instead of failing.
    resumed = evo(evo_bin, cwd, "run", "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed: 2 worker(s) (1 thread(s) each)" in resumed.stdout
    assert "Traceback" not in resumed.stderr
    with open_reader(cwd / "evo.duckdb") as db:
        run_row = db.latest_run()
        assert run_row.status == "finished"
        ok = [e for e in db.evaluations(run_row.run_id) if e.status == "ok"]
    before = [e for e in ok if e.finished_at < killed_at]
    assert len(before) >= 2 + reported            # the noise evaluations and every search one reported
    assert len(ok) - len(before) >= 4 - reported  # the rest ran after the resume
    assert {e.conditions["threads"] for e in ok} == {1}
    compared = ("threads", "device", "cpu", "torch", "harness", "dataset")
    assert len({json.dumps({k: e.conditions[k] for k in compared}) for e in ok}) == 1  # before and after alike


def test_a_resume_under_changed_conditions_is_refused_unless_accepted_and_the_change_is_recorded(evo_bin, tmp_path):
    cwd = task_dir(tmp_path, napper_source(0.5))
    first = evo(evo_bin, cwd, "run", "--evaluations", "2", "--workers", "2", *NAP_RUN)
    assert first.returncode == 0, first.stdout + first.stderr
    # The task folder gets its own harness, one comment apart from the one the run was scored with: val_bpb could
    # mean something else now, so children scored from here on would not pair with those scored before.
    for name in ("prepare.py", "kernels.py"):
        (cwd / name).write_text((ROOT / name).read_text() + "\n# changed after the run started\n")
    refused = evo(evo_bin, cwd, "run", "--resume", "--evaluations", "4")
    assert refused.returncode != 0
    line = one_line(refused.stderr)
    assert "--resume cannot reproduce the run's conditions (harness " in line and "--accept-changes" in line, line
    with open_reader(cwd / "evo.duckdb") as db:
        stored = db.latest_run()
        assert stored.status == "finished" and not stored.state.get("changes")     # refused: nothing written
        before = [e for e in db.evaluations(stored.run_id) if e.status == "ok"]

    accepted = evo(evo_bin, cwd, "run", "--resume", "--evaluations", "4", "--accept-changes")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "resuming with changed conditions (harness " in accepted.stdout + accepted.stderr
    with open_reader(cwd / "evo.duckdb") as db:
        stored = db.latest_run()
        assert stored.status == "finished"
        [change] = stored.state["changes"]
        assert change["changed"][0].startswith("harness ") and " -> " in change["changed"][0]
        after = [e for e in db.evaluations(stored.run_id) if e.status == "ok" and e not in before]
        searched = sum(e.purpose == "search" for e in db.evaluations(stored.run_id))
    old, new = before[0].conditions["harness"], after[0].conditions["harness"]
    assert change["changed"][0] == f"harness {old} -> {new}" and old != new
    assert {e.conditions["harness"] for e in before} == {old} and {e.conditions["harness"] for e in after} == {new}
    assert searched == 4                                # the run went on to its extended stop condition


LLM_EDIT = ('Hypothesis: saying more at the end helps.\n\n<<<<<<< SEARCH\nprint("END", time.time(), flush=True)\n'
            '=======\nprint("END", time.time(), "awake", flush=True)\n>>>>>>> REPLACE\n')
LLM_FAILURES = ("rate_limited", "overloaded", "server_error", "timeout", "connection_error")


def test_a_failing_messages_api_costs_llm_calls_not_the_run(evo_bin, tmp_path):
    cwd = task_dir(tmp_path, napper_source(1.0))
    # Twenty failed attempts in a row (429, 529, 500, an answer slower than --llm-timeout, a connection closed
    # mid-answer), then good answers. At most four calls are in flight and each makes five attempts, so at least
    # one call fails all of its attempts (else four calls would have made 20 with at most 4 each), and later ones
    # succeed.
    failing = [error(429), error(529), error(500), message(LLM_EDIT, delay=3.0), cut(message(LLM_EDIT))] * 4
    with MessagesServer() as server:
        server.script(*failing)
        server.default = message(LLM_EDIT)
        env = environment(ANTHROPIC_API_KEY="test-key", ANTHROPIC_BASE_URL=server.url)
        proc = evo(evo_bin, cwd, "run", "--evaluations", "4", "--workers", "2", *NAP_RUN,
                   "--operators", "hyper,llm.mutate", "--llm-timeout", "1", env=env)
        assert server.unused == 0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    with open_reader(cwd / "evo.duckdb") as db:
        run = db.latest_run()
        assert run.status == "finished"
        _, calls = db.query("SELECT status, error FROM llm_calls")
        _, children = db.query("SELECT status, reason FROM individuals WHERE operator = 'llm.mutate'")
        assert sum(e.purpose == "search" and e.status == "ok" for e in db.evaluations(run.run_id)) == 4
    failed = [(status, error) for status, error in calls if status != "ok"]
    assert failed and all(status in LLM_FAILURES and error for status, error in failed), failed
    assert any(status == "ok" for status, _ in calls)               # the API came back, and so did the operator
    lost = [reason for status, reason in children if status == "invalid" and "the API call failed" in reason]
    assert lost and all(any(f"({s})" in reason for s in LLM_FAILURES) for reason in lost), lost


def test_a_store_on_a_read_only_mount_is_refused_in_one_line(evo_bin, tmp_path):
    cwd = task_dir(tmp_path / "task")
    held = tmp_path / "held"
    held.mkdir()
    with open_writer(held / "evo.duckdb") as store:   # a store with a run in it, to resume
        store.new_run({"population": 4})
    with read_only_view(held, tmp_path / "ro") as ro:
        for args in (["--db", str(ro / "new.duckdb"), "--evaluations", "2"], ["--db", str(ro / "evo.duckdb"),
                                                                              "--resume"]):
            started = time.monotonic()
            proc = evo(evo_bin, cwd, "run", *args, *NAP_RUN, timeout=120)
            assert proc.returncode == 1
            line = one_line(proc.stderr)
            assert f"cannot write {ro} (it is on a read-only file system)" in line, line
            assert time.monotonic() - started < 30          # refused before Ray starts, not after
        status = evo(evo_bin, cwd, "status", "--db", str(ro / "evo.duckdb"), timeout=120)  # reading still works
        assert status.returncode == 0, status.stderr
        assert not (ro / "new.duckdb").exists() and not lock_path(ro / "evo.duckdb").exists()


def test_a_full_disk_under_the_store_stops_the_run_in_one_line_and_keeps_what_it_committed(evo_bin, tmp_path):
    cwd = task_dir(tmp_path / "task", napper_source(2.0))
    with small_filesystem(tmp_path / "small", "24m") as small:
        (small / "tmp").mkdir()
        db = small / "evo.duckdb"
        # The store and the evaluations' temporary folders on the small filesystem; Ray's own files elsewhere.
        env = environment(TMPDIR=str(small / "tmp"), RAY_TMPDIR="/tmp")
        run = LiveRun(evo_bin, cwd, "--db", str(db), "--evaluations", "40", "--workers", "2", *NAP_RUN, env=env)
        try:
            reported = int(run.searched(2).split("search ")[1].split()[0])
            filler = fill(small)
            code, out, err = run.finish(timeout=300)
        finally:
            run.kill()
        assert code == 1, out + err
        line = one_line(err)
        assert line.startswith("evo run: error: ") and "No space left on device" in line, line
        filler.unlink()                                      # space again: everything committed is there
        with open_reader(db) as store:
            stored = store.latest_run()
            ok = [e for e in store.evaluations(stored.run_id) if e.status == "ok"]
        assert len(ok) >= 2 + reported
        assert not lock_path(db).exists()


def _bundle_in(cache):
    """The task bundle a run here would use, written into cache as its workers write it."""
    from evo.evaluate_file import ensure_dataset
    from evo.task_files import fixed_files, harness_path
    from evo.workers import bundle_task, materialize

    harness = harness_path()
    dataset, _ = ensure_dataset(harness)
    bundle = bundle_task([harness, *fixed_files(harness)], dataset)
    prepare_py, _, data, _ = materialize(bundle, cache)
    return bundle, prepare_py, data / "val" / "val.bin"


def _damage(prepare_py, val_bin):
    """Same-size damage to the validation tokens (the harness's size check cannot see it) and an edited harness."""
    tokens = bytearray(val_bin.read_bytes())
    tokens[len(tokens) // 2: len(tokens) // 2 + 512] = bytes(512)
    val_bin.write_bytes(bytes(tokens))
    prepare_py.write_text(prepare_py.read_text() + "\n# edited\n")


def test_a_damaged_task_bundle_in_the_cache_is_written_again_and_never_scores(evo_bin, tmp_path, evo_cache):
    from evo.workers import REPAIRED, _intact

    cache = tmp_path / "cache"
    shutil.copytree(evo_cache, cache, ignore=shutil.ignore_patterns("bundles"))
    env = environment(EVO_CACHE_DIR=str(cache))
    os.environ["EVO_CACHE_DIR"], saved = str(cache), os.environ["EVO_CACHE_DIR"]
    try:
        bundle, prepare_py, val_bin = _bundle_in(cache)
    finally:
        os.environ["EVO_CACHE_DIR"] = saved
    _damage(prepare_py, val_bin)                               # before the run: the workers find it
    cwd = task_dir(tmp_path / "task", napper_source(1.0))
    run = LiveRun(evo_bin, cwd, "--evaluations", "4", "--workers", "2", *NAP_RUN, env=env)
    try:
        run.searched(1)
        _damage(prepare_py, val_bin)                           # during the run: the next evaluation finds it
        code, out, err = run.finish(timeout=300)
    finally:
        run.kill()
    assert code == 0, out + err
    assert "worker-0 on " in err and REPAIRED in err
    assert not lock_path(cwd / "evo.duckdb").exists()        # a finished run lets go of its store
    status = evo(evo_bin, cwd, "status", env=environment(EVO_CACHE_DIR=str(cache), EVO_LOG_LEVEL="WARNING"))
    assert status.returncode == 0 and status.stderr == "", status.stderr
    assert _intact(bundle, prepare_py.parents[1])
    with open_reader(cwd / "evo.duckdb") as db:
        run_id = db.latest_run().run_id
        evaluations = db.evaluations(run_id)
        _, rows = db.query("SELECT count(*) FROM evaluations WHERE log LIKE '%were written again from the run%'")
    assert rows[0][0] >= 1
    # Every genome here submits the same constant model: one score, if no evaluation was scored on damaged files.
    scores = {round(e.val_bpb, 9) for e in evaluations if e.status == "ok"}
    assert len(scores) == 1, scores
    assert all("changed during this evaluation" in e.error for e in evaluations if e.status != "ok")


@pytest.fixture
def two_nodes():
    """A Ray cluster of two one-core nodes on this machine (the head and one more)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def test_a_node_lost_mid_run_costs_its_evaluation_and_the_run_goes_on(evo_bin, tmp_path, two_nodes):
    cwd = task_dir(tmp_path, napper_source(2.0))
    # Three workers asked of two one-core nodes: one cannot be placed, and the run says so and goes on with two.
    run = LiveRun(evo_bin, cwd, "--address", two_nodes.address, "--evaluations", "3", "--workers", "3", *NAP_RUN)
    try:
        run.wait_for(lambda line: "] search:" in line, "the search started")
        lost = next(iter(two_nodes.worker_nodes))
        two_nodes.remove_node(lost)
        code, out, err = run.finish(timeout=400)
    finally:
        run.kill()
    assert code == 0, out + err
    assert ("evo run: 1 of 3 workers cannot be placed: each asks for 1 CPU and the nodes hold 2 (the largest has "
            "1 CPU); going on with 2") in err
    with open_reader(cwd / "evo.duckdb") as db:
        stored = db.latest_run()
        evaluations = db.evaluations(stored.run_id)
    assert stored.status == "finished"
    died = [e for e in evaluations if e.error and "worker died during the evaluation" in e.error]
    assert len(died) == 1 and died[0].status == "crash" and died[0].worker.startswith("worker-")
    assert sum(e.purpose == "search" for e in evaluations) >= 3
    assert {e.worker.split("@")[1] for e in evaluations if e.status == "ok" and "@" in e.worker} >= \
        {lost.node_id[:8]}                                   # the lost node had evaluated before it went
