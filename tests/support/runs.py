"""Running `evo run` from tests: a task folder, the command, a run to watch line by line, and small filesystems."""

from __future__ import annotations

import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from evo.errors import StoreError
from evo.store import open_reader
from tests.support.genomes import ROOT, napper_source

# Evaluations that only sleep: each test's run is quick, and a fault lands while they are in flight.
NAP_RUN = ["--population", "4", "--budget-tokens", "1000", "--operators", "hyper", "--no-preflight",
           "--noise-seeds", "2", "--confirm-seeds", "1"]


def task_dir(path: Path, seed: str | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "train.py").write_text(seed or napper_source(2.0))
    (path / "program.md").write_text((ROOT / "program.md").read_text())
    return path


def environment(**extra: str) -> dict:
    return {**os.environ, "EVO_LOG_LEVEL": "ERROR", **extra}


def evo(evo_bin: str, cwd: Path, *args: str, timeout: float = 600, env: dict | None = None):
    return subprocess.run([evo_bin, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env or environment())


class LiveRun:
    """`evo run` in the background, its stdout read line by line (stderr apart, so its lines can be counted)."""

    def __init__(self, evo_bin: str, cwd: Path, *args: str, env: dict | None = None):
        self.proc = subprocess.Popen([evo_bin, "run", *args], cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env or environment())
        self.lines: list[str] = []

    def wait_for(self, predicate, what: str) -> str:
        """Reads stdout until a line satisfies predicate; fails with what was seen if the run ends first."""
        for line in self.proc.stdout:
            self.lines.append(line)
            if predicate(line):
                return line
        raise AssertionError(f"the run ended before {what}: {''.join(self.lines)}{self.proc.stderr.read()}")

    def searched(self, n: int) -> str:
        """Waits until the live view reports n search evaluations done."""
        def done(line: str) -> bool:
            return "search " in line and " done" in line and int(line.split("search ")[1].split()[0]) >= n
        return self.wait_for(done, f"{n} search evaluations were done")

    def finish(self, timeout: float = 600) -> tuple[int, str, str]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"the run did not end within {timeout} s: {''.join(self.lines)}{out}{err}")
        return self.proc.returncode, "".join(self.lines) + out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def wait_for_reader(db: Path, seconds: float = 60):
    deadline = time.time() + seconds
    while True:
        try:
            return open_reader(db)
        except StoreError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def one_line(text: str) -> str:
    """The one line an error was reported in (fails if there are more, or a traceback)."""
    lines = text.strip().splitlines()
    assert "Traceback" not in text and len(lines) == 1, text
    return lines[0]


def _mount(*args: str) -> None:
    proc = subprocess.run(["mount", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount here (mount {' '.join(args)}: {proc.stderr.strip()}); needs root in a "
                    f"namespace that may mount")


@contextmanager
def small_filesystem(path: Path, size: str):
    """A tmpfs of `size` mounted at path, unmounted afterwards (skips the test where mounting is not allowed)."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextmanager
def read_only_view(source: Path, path: Path):
    """source, bind-mounted read-only at path (a read-only mount: root ignores file modes)."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("--bind", str(source), str(path))
    try:
        _mount("-o", "remount,ro,bind", str(path))
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder: Path) -> Path:
    """Writes a file in folder until its filesystem is full; returns the file (delete it to free the space)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler
