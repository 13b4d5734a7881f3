"""One evaluation of one train.py, in processes of its own.

    train phase:  python train.py     in a fresh temporary folder holding the child's train.py and a read-only
                                      copy of the harness; sees only the training split; ends in submit(), which
                                      exports the model's graph. Behind evo.shield where the kernel allows it,
                                      so the validation splits and the raw corpus are not even on its disk
    eval phase:   python -I prepare.py --evaluate SPEC
                                      a fresh, isolated process in another folder: loads the exported graph (no
                                      code from train.py) and scores it on the validation split

Every failure becomes a status with its reason (ok, crash, timeout, oom, rejected); nothing here raises for a bad
child. The numbers come from files the harness wrote, never from parsing the child's output.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from evo import shield
from evo.errors import ConfigError
from evo.proctree import MARKER_VAR, kill_tree, new_marker, sweep_orphans
from evo.supervise import MEMORY_EXIT

LOG_CAP_BYTES = 1 << 20          # captured output kept per phase; the rest is counted and dropped
EVAL_PHASE_LIMIT = 600.0         # seconds the scoring process may take
_SECRET = re.compile(r"(API_KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL)|^ANTHROPIC_", re.IGNORECASE)


@dataclass(frozen=True)
class Budget:
    """A training budget: seconds (measured by the harness) or tokens (deterministic)."""

    seconds: float | None = None
    tokens: int | None = None

    def __post_init__(self):
        if (self.seconds is None) == (self.tokens is None):
            raise ConfigError("give a budget in seconds or in tokens (exactly one)")
        if self.seconds is not None and not self.seconds > 0:
            raise ConfigError(f"--budget-seconds must be positive; got {self.seconds:g}")
        if self.tokens is not None and not self.tokens > 0:
            raise ConfigError(f"--budget-tokens must be positive; got {self.tokens}")

    def default_time_limit(self) -> float:
        """Wall-clock limit of the train phase: the budget plus room for start-up and export. A token budget
        assumes at least 2,000 tokens/s, since per-token compute would otherwise be free."""
        if self.seconds is not None:
            return 1.5 * self.seconds + 60.0
        return 60.0 + self.tokens / 2000.0

    def describe(self) -> str:
        return f"{self.seconds:g} s" if self.seconds is not None else f"{self.tokens:,} tokens"


@dataclass(frozen=True)
class EvalRequest:
    """What a worker needs to evaluate one child: everything travels with it (no shared filesystem assumed,
    but for the prepared dataset on the machine that runs it)."""

    source: str
    budget: Budget
    seed: int
    harness: Path                 # the prepare.py to copy in
    dataset: Path                 # a prepared dataset folder (with train/ and val/)
    time_limit: float | None = None
    threads: int | None = None    # torch threads in both phases; None leaves torch's default
    memory_mb: float = 0          # resident memory limit of each phase, all its processes together; 0: none
    fixed_files: tuple[Path, ...] = ()  # read-only files train.py may import besides the harness (kernels.py)
    score: bool = True            # False: stop after the train phase (the pre-flight)
    env: Mapping[str, str] = field(default_factory=dict)  # extra variables (CUDA_VISIBLE_DEVICES, ...)


@dataclass
class EvalResult:
    status: str                   # ok, crash, timeout, oom, rejected, interrupted
    val_bpb: float | None = None
    training_seconds: float | None = None
    total_seconds: float | None = None
    tokens: int | None = None
    num_steps: int | None = None
    num_params: int | None = None
    peak_memory_mb: float | None = None
    device: str | None = None
    seed: int | None = None
    budget_seconds: float | None = None
    budget_tokens: int | None = None
    eval_seconds: float | None = None
    error: str | None = None
    shielded: bool | None = None  # whether training ran behind evo.shield (None: it never started)
    log: str = ""

    def to_dict(self, with_log: bool = False) -> dict:
        d = asdict(self)
        if not with_log:
            d.pop("log")
        return d


def is_secret(name: str) -> bool:
    """Whether an environment variable looks like a credential (API keys, tokens, passwords, ANTHROPIC_*)."""
    return bool(_SECRET.search(name))


def clean_environment(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The environment a child gets: the parent's, less anything that looks like a secret or evo's own settings."""
    env = {k: v for k, v in base.items() if not is_secret(k) and not k.startswith("EVO_")}
    env.update(extra)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


class _Capture(threading.Thread):
    """Copies a pipe into memory up to a cap, optionally passing each line on as it comes."""

    def __init__(self, pipe, on_line: Callable[[str], None] | None):
        super().__init__(daemon=True)
        self.pipe, self.on_line = pipe, on_line
        self.chunks: list[bytes] = []
        self.kept = 0
        self.dropped = 0

    def run(self):
        for line in iter(self.pipe.readline, b""):
            if self.kept + len(line) <= LOG_CAP_BYTES:
                self.chunks.append(line)
                self.kept += len(line)
            else:
                self.dropped += len(line)
            if self.on_line:
                self.on_line(line.decode("utf-8", "replace").rstrip("\n"))
        self.pipe.close()

    def text(self) -> str:
        out = b"".join(self.chunks).decode("utf-8", "replace")
        if self.dropped:
            out += f"\n[... {self.dropped:,} more bytes of output dropped]\n"
        return out


def _run_phase(cmd: list[str], cwd: Path, env: dict, limit: float, memory_mb: float,
               on_line: Callable[[str], None] | None) -> tuple[int | None, str, float]:
    """Runs one phase under the supervisor (evo.supervise) to its end or its limit.
    Returns (exit status, or None on timeout; output; seconds)."""
    marker = new_marker()
    env = {**env, MARKER_VAR: marker}
    cmd = [sys.executable, "-I", "-m", "evo.supervise", marker, str(memory_mb), "--", *cmd]
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    capture = _Capture(proc.stdout, on_line)
    capture.start()
    try:
        code = proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        code = None
    except BaseException:  # KeyboardInterrupt or the worker being torn down: the child goes with us
        kill_tree(proc.pid, marker)
        proc.wait()
        raise
    finally:
        if proc.poll() is None or code is None:
            kill_tree(proc.pid, marker)
            proc.wait()
        else:
            kill_tree(proc.pid, marker)  # the phase is over: anything it left behind goes too
    capture.join(timeout=5)
    return code, capture.text(), time.time() - t0


def _shielded(cmd: list[str], dataset: Path) -> tuple[list[str], str | None]:
    """cmd behind evo.shield, hiding what the training process must not read; or cmd itself and why not."""
    why = shield.unavailable()
    if why is not None:
        return cmd, why
    hide = [arg for path in shield.hidden_paths(dataset) for arg in ("--hide", str(path))]
    return [sys.executable, "-I", "-m", "evo.shield", *hide, "--", *cmd], None


def _failure_reason(output: str, code: int) -> tuple[str, str]:
    """(status, reason) for a phase that exited non-zero, from its exit status and the end of its output."""
    tail = [line for line in output.strip().splitlines() if line.strip()]
    last = tail[-1].strip() if tail else ""
    if code == MEMORY_EXIT:
        return "oom", last or "memory limit exceeded"
    if "OutOfMemoryError" in output or "CUDA out of memory" in output or "MemoryError" in last:
        return "oom", last or "out of memory"
    if code == 128 + signal.SIGKILL:
        return "oom", "killed by SIGKILL (most likely the kernel's out-of-memory killer)"
    if code > 128:
        return "crash", f"killed by signal {code - 128}"
    return "crash", last or f"exited with status {code}"


PREFLIGHT_LIMIT = 300.0  # seconds for start-up, building the model, one step and the export


def preflight(request: EvalRequest) -> EvalResult:
    """A cheap first check of a child: one training batch, then the export, no scoring. A broken child fails
    here in seconds instead of after its whole budget."""
    quick = dataclasses.replace(request, budget=Budget(tokens=1), score=False,
                                time_limit=min(PREFLIGHT_LIMIT, request.time_limit or PREFLIGHT_LIMIT))
    result = evaluate(quick)
    if result.status != "ok":
        result.error = f"pre-flight: {result.error}"
        result.budget_seconds, result.budget_tokens = request.budget.seconds, request.budget.tokens
    return result


def evaluate(request: EvalRequest, on_line: Callable[[str], None] | None = None,
             keep_dir: Path | None = None) -> EvalResult:
    """Trains and scores request.source. Never raises for a bad child; returns its status and reason."""
    sweep_orphans()
    budget = request.budget
    limit = request.time_limit or budget.default_time_limit()
    result = EvalResult(status="crash", seed=request.seed, budget_seconds=budget.seconds,
                        budget_tokens=budget.tokens)
    t0 = time.time()
    work = Path(tempfile.mkdtemp(prefix="evo-eval-"))
    try:
        train_dir, eval_dir = work / "train", work / "eval"
        train_dir.mkdir()
        eval_dir.mkdir()
        (train_dir / "train.py").write_text(request.source, encoding="utf-8")
        for folder, files in ((train_dir, (request.harness, *request.fixed_files)), (eval_dir, (request.harness,))):
            for path in files:
                shutil.copyfile(path, folder / Path(path).name)
                os.chmod(folder / Path(path).name, 0o444)
        out_dir = work / "out"
        out_dir.mkdir()
        spec = {"seed": request.seed, "budget_seconds": budget.seconds, "budget_tokens": budget.tokens,
                "train_dir": str(request.dataset / "train"), "model_path": str(out_dir / "model.pt2"),
                "stats_path": str(out_dir / "stats.json"), "threads": request.threads}
        (work / "train_spec.json").write_text(json.dumps(spec))
        extra = dict(request.env)
        if request.threads:
            extra["OMP_NUM_THREADS"] = str(request.threads)
        env = clean_environment(os.environ, extra)

        train_cmd, unshielded = _shielded([sys.executable, "train.py"], request.dataset)
        note = f"evo: training runs without the shield ({unshielded})" if unshielded else None
        if note and on_line:
            on_line(note)
        result.shielded = note is None
        code, log, _ = _run_phase(train_cmd, train_dir, {**env, "EVO_HARNESS_SPEC": str(work / "train_spec.json")},
                                  limit, request.memory_mb, on_line)
        result.log = (note + "\n" if note else "") + log
        if code is None:
            result.status, result.error = "timeout", f"training exceeded its wall-clock limit of {limit:g} s"
            return result
        if code != 0:
            result.status, result.error = _failure_reason(log, code)
            return result
        try:
            stats = json.loads((out_dir / "stats.json").read_text())
        except (OSError, json.JSONDecodeError):
            result.error = "train.py ended without calling submit(model)"
            return result
        for key in ("training_seconds", "tokens", "num_steps", "num_params", "peak_memory_mb", "device"):
            setattr(result, key, stats.get(key))
        if not request.score:
            result.status = "ok"
            return result

        eval_spec = {"model_path": spec["model_path"], "val_dir": str(request.dataset / "val"),
                     "result_path": str(out_dir / "result.json"), "threads": request.threads,
                     "device": stats.get("device")}
        (work / "eval_spec.json").write_text(json.dumps(eval_spec))
        code, eval_log, _ = _run_phase([sys.executable, "-I", "prepare.py", "--evaluate", str(work / "eval_spec.json")],
                                       eval_dir, env, EVAL_PHASE_LIMIT, request.memory_mb, None)
        if eval_log.strip():
            result.log += "\n--- evaluation ---\n" + eval_log
        if code is None:
            result.status, result.error = "timeout", f"scoring exceeded {EVAL_PHASE_LIMIT:g} s"
            return result
        try:
            scored = json.loads((out_dir / "result.json").read_text())
        except (OSError, json.JSONDecodeError):
            result.status, result.error = _failure_reason(eval_log, code or 1)
            result.error = f"scoring failed: {result.error}"
            return result
        result.status = scored["status"]
        result.val_bpb = scored.get("val_bpb")
        result.error = scored.get("error")
        result.eval_seconds = scored.get("eval_seconds")
        return result
    finally:
        result.total_seconds = round(time.time() - t0, 2)
        if keep_dir is not None:
            shutil.copytree(work, keep_dir, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)
