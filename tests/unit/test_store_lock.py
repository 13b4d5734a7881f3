"""Who holds the store: the run lock file, a second writer refused in one line, stale locks replaced, and a killed
writer losing no evaluation it had committed. Real processes, real DuckDB files."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from evo.errors import StoreError
from evo.store import (
    acquire_lock,
    lock_is_live,
    lock_path,
    open_reader,
    open_writer,
    read_lock,
    release_lock,
)
from tests.support.asserts import one_line

ROOT = Path(__file__).resolve().parents[2]

# A run actor stand-in: takes the lock, opens the store and writes evaluations until killed, printing each id only
# after add_evaluation returned it.
WRITER = textwrap.dedent("""
    import sys, time
    from evo.sandbox.evaluation import EvalResult
    from evo.store import acquire_lock, open_writer
    db, pause = sys.argv[1], float(sys.argv[2])
    lock = acquire_lock(db, {"namespace": "evo-test"})
    store = open_writer(db)
    run = store.new_run({"population": 1})
    lock.update(run_id=run)
    seed = store.add_individual(run, source="A = 1\\n", operator="seed")
    print("ready", run, seed, flush=True)
    i = 0
    while True:
        i += 1
        eid = store.add_evaluation(run, seed, EvalResult(status="ok", val_bpb=3.0 - i * 1e-4, seed=i,
                                                         log="step\\n" * 200))
        print(eid, flush=True)
        time.sleep(pause)
""")


def start_writer(db: Path, pause: float = 0.0) -> tuple[subprocess.Popen, list[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(pause)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline().split()
    assert first[:1] == ["ready"], (first, proc.stderr.read() if proc.poll() is not None else "")
    return proc, first[1:]


def kill(proc: subprocess.Popen) -> str:
    """SIGKILLs a writer and returns everything it printed that was still unread."""
    proc.send_signal(signal.SIGKILL)
    rest = proc.stdout.read()
    proc.wait()
    proc.stderr.close()
    proc.stdout.close()
    return rest


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_writer_loses_no_evaluation_it_returned(tmp_path):
    db = tmp_path / "evo.duckdb"
    proc, (run, seed) = start_writer(db)
    printed = []
    while len(printed) < 40:
        printed.append(int(proc.stdout.readline()))
    printed += [int(line) for line in kill(proc).split()]
    assert proc.returncode == -signal.SIGKILL

    reader = open_reader(db)  # also replays the write-ahead log the killed writer left
    stored = {e.id for e in reader.evaluations(run, seed)}
    assert set(printed) <= stored
    assert len(stored) - len(printed) <= 1  # at most one committed while its id was being printed
    assert reader.individual(run, seed).status == "evaluated"
    reader.close()


def test_a_live_writer_refuses_every_other_opener_in_one_line(tmp_path):
    db = tmp_path / "evo.duckdb"
    proc, (run, _) = start_writer(db, pause=0.05)
    try:
        for opener in (open_reader, open_writer):
            with pytest.raises(StoreError) as e:
                opener(db)
            message = one_line(e)
            assert message.startswith(f"evo.duckdb is in use by a live run (pid {proc.pid} on host "
                                      f"{socket.gethostname()}, started ")
            assert f"run {run}" in message
        with pytest.raises(StoreError) as e:
            acquire_lock(db)
        assert one_line(e).startswith(f"evo.duckdb is in use by a live run (pid {proc.pid} ")
        info = read_lock(db)
        assert lock_is_live(info) and (info["run_id"], info["namespace"]) == (run, "evo-test")
    finally:
        kill(proc)

    # Killed, its lock is stale: readers and a new writer may go ahead, and the new lock replaces the old one.
    assert not lock_is_live(read_lock(db))
    open_reader(db).close()
    with acquire_lock(db, {"run_id": "next"}) as lock:
        assert read_lock(db)["pid"] == os.getpid() and read_lock(db)["run_id"] == "next"
        open_writer(db).close()
    assert not lock.held and read_lock(db) is None


def test_without_a_lock_file_the_duckdb_lock_still_refuses_in_one_line(tmp_path):
    db = tmp_path / "evo.duckdb"
    open_writer(db).close()
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "print('ok', flush=True); time.sleep(60)", str(db)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        with pytest.raises(StoreError) as e:
            open_reader(db)
        assert one_line(e) == f"evo.duckdb is in use by process {holder.pid}"
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_a_writer_will_not_open_a_store_whose_lock_another_live_process_holds(tmp_path):
    db = tmp_path / "evo.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from evo.store import acquire_lock; "
                               "lock = acquire_lock(sys.argv[1]); print('ok', flush=True); time.sleep(60)", str(db)],
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        with pytest.raises(StoreError) as e:
            open_writer(db)
        assert one_line(e).startswith(f"evo.duckdb is in use by a live run (pid {holder.pid} ")
        assert not db.exists()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_a_second_lock_in_the_same_process_is_refused(tmp_path):
    db = tmp_path / "evo.duckdb"
    lock = acquire_lock(db, {"run_id": "abc", "ray_address": "127.0.0.1:6379"})
    try:
        info = json.loads(lock_path(db).read_text())
        assert (info["pid"], info["hostname"], info["run_id"]) == (os.getpid(), socket.gethostname(), "abc")
        assert info["started_at"].endswith("Z")
        with pytest.raises(StoreError) as e:
            acquire_lock(db)
        assert one_line(e).startswith(f"evo.duckdb is in use by a live run (pid {os.getpid()} on host ")
        lock.update(actor="evo-population", namespace="evo")
        assert read_lock(db)["actor"] == "evo-population" and read_lock(db)["run_id"] == "abc"
    finally:
        release_lock(lock)
    release_lock(lock)  # twice is harmless
    assert read_lock(db) is None


def test_a_stale_lock_is_replaced_with_a_warning(tmp_path, caplog):
    db = tmp_path / "evo.duckdb"
    stale = {"pid": dead_pid(), "hostname": socket.gethostname(), "started_at": "2020-01-01T00:00:00Z"}
    lock_path(db).write_text(json.dumps(stale))
    assert not lock_is_live(stale)
    with caplog.at_level(logging.WARNING, logger="evo.store.lock"):
        lock = acquire_lock(db)
    assert "replacing the stale lock" in caplog.text
    assert read_lock(db)["pid"] == os.getpid()
    lock.release()


def test_liveness_checks_pid_reuse_and_other_hosts(tmp_path):
    here = socket.gethostname()
    assert lock_is_live({"pid": os.getpid(), "hostname": here})
    assert not lock_is_live({"pid": os.getpid(), "hostname": here, "pid_start": -1})  # a recycled pid
    assert not lock_is_live({"pid": dead_pid(), "hostname": here})
    assert not lock_is_live({"hostname": here})
    assert lock_is_live({"pid": dead_pid(), "hostname": here + "-elsewhere"})  # cannot be checked from here

    db = tmp_path / "evo.duckdb"
    lock_path(db).write_text(json.dumps({"pid": 1, "hostname": here + "-elsewhere", "started_at": "x"}))
    with pytest.raises(StoreError) as e:
        acquire_lock(db)
    assert one_line(e).endswith(f"; if that run is over, delete {lock_path(db)}")


def test_an_unreadable_lock_file_reads_as_none(tmp_path):
    db = tmp_path / "evo.duckdb"
    assert read_lock(db) is None
    lock_path(db).write_text("{not json")
    assert read_lock(db) is None
    with acquire_lock(db):  # nobody holds it: taken over
        assert read_lock(db)["pid"] == os.getpid()
