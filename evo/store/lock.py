"""The run lock: a JSON file `<db>.lock` beside the store, held by the one process that writes it during a live run.

- why: DuckDB lets one process open a file at a time, even read-only, so while a run is live every other command
  reaches the data through the run actor (evo.run_actor)
- what it says: who holds the file (pid, hostname, started_at) plus fields the engine adds (run_id, the Ray GCS
  address, namespace and actor name through which the run actor answers read-only queries)
- how it holds: an exclusive flock(2) on the open file, so the kernel drops the lock the moment the holder dies,
  even by SIGKILL, and two processes racing for a stale lock cannot both win
- liveness: `lock_is_live(info)` checks the pid (and its start time, against pid reuse) on this host; a lock from
  another host cannot be checked from here and counts as live

    lock = acquire_lock("evo.duckdb", {"run_id": run_id})   # StoreInUse (a StoreError) if a live run holds it
    lock.update(ray_address=..., actor=...)                 # add fields as they become known
    release_lock(lock)                                      # or `with acquire_lock(...)`
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

from evo.errors import StoreError, StoreInUse

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"


def lock_path(db_path: str | os.PathLike) -> Path:
    """The lock file of a store: `<db>.lock`."""
    return Path(str(db_path) + LOCK_SUFFIX)


def _process_start(pid: int) -> int | None:
    """The start time of a process in clock ticks since boot (Linux /proc), or None where unknown. Together with the
    pid it names a process uniquely: a recycled pid has a different start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count fields after its closing ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[19]) if len(fields) > 19 else None


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].startswith("Z")


def lock_is_live(info: Mapping) -> bool:
    """Whether the process a lock names is still running. On another host this cannot be checked: True."""
    if info.get("hostname") != socket.gethostname():
        return True
    try:
        pid = int(info["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    if _is_zombie(pid):
        return False
    started = info.get("pid_start")
    return started is None or _process_start(pid) in (None, started)


def describe_lock(info: Mapping) -> str:
    """'pid 1234 on host x, started 2026-01-01T10:00:00Z' (with the run id when known)."""
    text = f"pid {info.get('pid', '?')} on host {info.get('hostname', '?')}, started {info.get('started_at', '?')}"
    if info.get("run_id"):
        text += f", run {info['run_id']}"
    return text


def read_lock(db_path: str | os.PathLike) -> dict | None:
    """The lock file's fields, or None when there is none. A file caught mid-rewrite is read again; one that stays
    unreadable is reported as None (with a warning): DuckDB's own file lock still guards the store."""
    path = lock_path(db_path)
    for _ in range(5):
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as e:
            log.warning("cannot read %s: %s", path, e)
            return None
        try:
            info = json.loads(text)
            if isinstance(info, dict):
                return info
        except json.JSONDecodeError:
            pass
        time.sleep(0.01)
    log.warning("%s is not a JSON object; ignoring it", path)
    return None


class RunLock:
    """A held run lock. Keeps the lock file open (and flocked) until release()."""

    def __init__(self, path: Path, fd: int, info: dict):
        self.path, self._fd, self.info = path, fd, info

    @property
    def held(self) -> bool:
        return self._fd is not None

    def update(self, **fields) -> None:
        """Adds or changes fields in the lock file (e.g. the Ray address once the run actor is up)."""
        if self._fd is None:
            raise StoreError(f"the lock {self.path} was already released")
        self.info.update(fields)
        _write(self._fd, self.info)

    def release(self) -> None:
        """Removes the lock file and drops the lock. Releasing twice is harmless."""
        if self._fd is None:
            return
        try:
            if _same_file(self._fd, self.path):
                self.path.unlink()
        except OSError as e:
            log.warning("cannot remove %s: %s", self.path, e)
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"RunLock({str(self.path)!r}, held={self.held})"


def _write(fd: int, info: Mapping) -> None:
    # Overwrite in place, then cut the tail: the file is never empty, and a reader that catches a mix of old and
    # new bytes sees invalid JSON and reads again (read_lock).
    data = (json.dumps(info, indent=2, sort_keys=True, default=str) + "\n").encode()
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))
    os.fsync(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False


def acquire_lock(db_path: str | os.PathLike, info: Mapping | None = None) -> RunLock:
    """Takes the run lock of a store, writing pid, hostname, started_at and `info`'s fields into `<db>.lock`.

    A lock whose process is gone (a run that was killed) is replaced, with a warning. Raises StoreError, one line,
    when a live run holds it, or when the holder is on another host (which cannot be checked from here)."""
    path = lock_path(db_path)
    name = Path(db_path).name
    own = {"pid": os.getpid(), "pid_start": _process_start(os.getpid()), "hostname": socket.gethostname(),
           "started_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "db": str(Path(db_path).resolve())}
    for _ in range(10):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StoreError(f"cannot write the lock file {path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_lock(db_path) or {}
            raise StoreInUse(f"{name} is in use by a live run ({describe_lock(holder)})") from None
        if not _same_file(fd, path):
            os.close(fd)  # the holder released (unlinked) it between our open and flock: take the new file
            continue
        previous = read_lock(db_path)
        if previous and lock_is_live(previous) and previous.get("pid") != os.getpid():
            os.close(fd)
            where = "" if previous.get("hostname") == own["hostname"] else \
                f"; if that run is over, delete {path}"
            raise StoreInUse(f"{name} is in use by a live run ({describe_lock(previous)}){where}")
        if previous:
            log.warning("replacing the stale lock of %s (%s): its process is gone", name, describe_lock(previous))
        held = {**own, **(info or {})}
        held.update({k: own[k] for k in ("pid", "pid_start", "hostname")})
        _write(fd, held)
        return RunLock(path, fd, held)
    raise StoreError(f"cannot take the lock {path}: it keeps changing hands")


def release_lock(lock: RunLock) -> None:
    """Drops a lock taken by acquire_lock and removes its file."""
    lock.release()
