"""One evaluation of one train.py, in processes of its own.

    train phase:  python train.py     behind evo.sandbox.shield: a root of its own with the runtime read-only, the
                                      child's source and the harness's files in a scratch folder, a private
                                      /tmp, no network, no data. Batches come over a channel from a BatchServer
                                      thread here (evo.sandbox.batch_server), which counts the budget; submit() sends
                                      the model back over it as a graph archive (evo.sandbox.graph.archive)
    score phase:  python -I -m evo.sandbox.scorer SPEC FD
                                      behind evo.sandbox.shield too, in a folder the child never saw: checks the
                                      archive, runs its graph from an allow-list of ops, and scores it with the
                                      harness's metric; its result is taken only from the pipe FD and only when
                                      it exits 0

- failures: every one becomes a status with its reason (ok, crash, timeout, oom, rejected); nothing here raises for
  a bad child
- numbers: from the batch server and the scorer, never from the child's output or its files
- no namespaces: where the kernel allows none both phases run unshielded, and the result says so (`shielded` false)
"""

from __future__ import annotations

import dataclasses
import json
import os
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

from evo.results import reported_fields, typed
from evo.sandbox import cgroup, shield
from evo.sandbox.batch_server import (
    HANDOVER_ALLOWANCE,
    MAX_MODEL_BYTES,
    STARTUP_ALLOWANCE,
    BatchServer,
    ServeSettings,
    open_channel,
    vocab_from_tokenizer,
)
from evo.sandbox.budget import Budget
from evo.sandbox.child.channel import CHANNEL_VAR
from evo.sandbox.environment import clean_environment
from evo.sandbox.proctree import MARKER_VAR, kill_tree, new_marker, sweep_orphans
from evo.sandbox.supervise import DISK_EXIT, MEMORY_EXIT, PROCESS_EXIT, Limits
from evo.task_files import hidden_paths

LOG_CAP_BYTES = 1 << 20          # output kept per phase (its start and its end); the rest is counted and dropped
LINE_CAP_BYTES = 1 << 16         # a line passed on as it comes is cut here
READ_BYTES = 1 << 16             # output is read in pieces of at most this, whatever its lines
OUTPUT_LIMIT_BYTES = 64 << 20    # a phase that writes more output than this is ended: no honest run needs it
OUTPUT_EXIT = 89                 # the status _run_phase gives a phase it ended for its output
EVAL_PHASE_LIMIT = 600.0         # seconds the scoring process may take
SCORED_FIELDS = ("status", "val_bpb", "test_bpb", "error", "eval_seconds", "num_params")  # what the scorer sends
MODEL_FILE = "model.evograph"
WEIGHTS_FILE = "weights.evo"


def default_time_limit(budget: Budget) -> float:
    """Wall-clock limit of the train phase: the budget plus the batch server's allowances for start-up and for
    handing the model over. A token budget assumes at least 2,000 tokens/s, since per-token compute would otherwise
    be free."""
    if budget.seconds is not None:
        return budget.seconds + STARTUP_ALLOWANCE + HANDOVER_ALLOWANCE
    return 60.0 + budget.tokens / 2000.0


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
    disk_mb: float = Limits.disk_mb  # what each phase may leave in its scratch folder and /tmp; 0: no limit
    files: int = Limits.files     # how many files each phase may leave there; 0: no limit
    processes: int = Limits.processes  # how many processes each phase may have at once; 0: no limit
    fixed_files: tuple[Path, ...] = ()  # read-only files train.py may import besides the harness (kernels.py)
    score: bool = True            # False: stop after the train phase (the pre-flight)
    test: bool = False            # True: the scorer also measures test_bpb (where the data has a test split)
    batches: int | None = None    # serve at most this many batches, whatever their size (the pre-flight: 1)
    require_shield: bool = False  # True: where the shield cannot run, fail instead of training unshielded
    cache_root: Path | None = None  # the harness's cache_dir() (data, bundles), covered from the training process
    env: Mapping[str, str] = field(default_factory=dict)  # beyond the allow-list: the GPU, --env variables


@dataclass
class EvalResult:
    status: str                   # ok, crash, timeout, oom, rejected, interrupted
    val_bpb: float | None = None
    test_bpb: float | None = None   # only when the request asked for it; selection never reads it
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
    shielded: bool | None = None  # whether training ran behind evo.sandbox.shield (None: it never started)
    limits: str | None = None     # what held training's memory and process limits: a cgroup, or the polling supervisor
    log: str = ""

    def to_dict(self, with_log: bool = False) -> dict:
        d = asdict(self)
        if not with_log:
            d.pop("log")
        return d


class _Capture(threading.Thread):
    """Copies a pipe into memory in fixed-size reads, whatever the length of its lines: the first and the last
    LOG_CAP_BYTES / 2 bytes are kept (the end holds the error that ended a phase), the rest is counted and dropped;
    each line is passed on as it comes, cut at LINE_CAP_BYTES. Memory held stays within about LOG_CAP_BYTES +
    LINE_CAP_BYTES + one read, whatever the child prints."""

    def __init__(self, pipe, on_line: Callable[[str], None] | None):
        super().__init__(daemon=True)
        self.pipe, self.on_line = pipe, on_line
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0
        self.total = 0

    def _keep(self, chunk: bytes) -> None:
        half = LOG_CAP_BYTES // 2
        room = half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        if len(self.tail) > half:
            self.dropped += len(self.tail) - half
            del self.tail[:len(self.tail) - half]

    def _pass_on(self, line: bytes) -> None:
        self.on_line(line.decode("utf-8", "replace"))

    def run(self):
        fd, line = self.pipe.fileno(), bytearray()
        while chunk := os.read(fd, READ_BYTES):
            self.total += len(chunk)
            self._keep(chunk)
            if not self.on_line:
                continue
            *ended, rest = chunk.split(b"\n")
            for piece in ended:
                self._pass_on(bytes(line + piece[:max(0, LINE_CAP_BYTES - len(line))]))
                line.clear()
            line += rest[:max(0, LINE_CAP_BYTES - len(line))]
        if line and self.on_line:
            self._pass_on(bytes(line))
        self.pipe.close()

    def text(self) -> str:
        out = self.head.decode("utf-8", "replace")
        if self.dropped:
            out += f"\n[... {self.dropped:,} bytes of output dropped ...]\n"
        return out + self.tail.decode("utf-8", "replace")


def _run_phase(cmd: list[str], cwd: Path, env: dict, limit: float, limits: Limits,
               on_line: Callable[[str], None] | None, pass_fds: tuple[int, ...] = (),
               deadline: Callable[[], float | None] = lambda: None) -> tuple[int | None, str, str]:
    """Runs one phase under the supervisor (evo.sandbox.supervise, which holds it to limits) to its end, its time
    limit, or deadline() (a monotonic time, which may move as the phase goes), or past OUTPUT_LIMIT_BYTES of output
    (status OUTPUT_EXIT). The phase's command runs in a cgroup of its own where one can be made (evo.sandbox.cgroup),
    so the kernel keeps its memory and process limits. Returns (exit status, or None on timeout; output; what held its
    memory and process limits)."""
    marker = new_marker()
    env = {**env, MARKER_VAR: marker}
    group, why_not = cgroup.make(marker, limits.memory_mb, limits.processes)
    if group is not None:
        limits = dataclasses.replace(limits, cgroup=group.dirs, cgroup_kind=group.kind)
    held = group.kind if group is not None else f"the supervisor's polling: {why_not}"
    cmd = [sys.executable, "-I", "-m", "evo.sandbox.supervise", marker, limits.text(), "--", *cmd]
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True, pass_fds=pass_fds)
    except BaseException:
        if group is not None:
            group.remove()
        raise
    t0 = time.monotonic()
    capture = _Capture(proc.stdout, on_line)
    capture.start()
    code = None
    try:
        while True:
            try:
                code = proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            now, moving = time.monotonic(), deadline()
            if now - t0 > limit or (moving is not None and now > moving):
                break
            if capture.total > OUTPUT_LIMIT_BYTES:
                code = OUTPUT_EXIT
                break
    except BaseException:  # KeyboardInterrupt or the worker being torn down: the child goes with us
        kill_tree(proc.pid, marker)
        proc.wait()
        raise
    finally:
        kill_tree(proc.pid, marker)  # the phase is over: anything it left behind goes too
        proc.wait()
        if group is not None:
            group.remove()
    capture.join(timeout=5)
    return code, capture.text(), held


def _failure_reason(output: str, code: int) -> tuple[str, str]:
    """(status, reason) for a phase that exited non-zero, from its exit status and the end of its output."""
    tail = [line for line in output.strip().splitlines() if line.strip()]
    last = tail[-1].strip() if tail else ""
    if code == MEMORY_EXIT:
        return "oom", last or "memory limit exceeded"
    if code == OUTPUT_EXIT:
        return "crash", f"evo: output limit exceeded: more than {OUTPUT_LIMIT_BYTES // 2**20} MiB written to its output"
    if code in (DISK_EXIT, PROCESS_EXIT):
        return "crash", last or "a limit on what an evaluation may use was exceeded"
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
    quick = dataclasses.replace(request, score=False, batches=1,
                                time_limit=min(PREFLIGHT_LIMIT, request.time_limit or PREFLIGHT_LIMIT))
    result = evaluate(quick)
    if result.status != "ok":
        result.error = f"pre-flight: {result.error}"
    return result


def _gpu_visible(request: EvalRequest) -> bool:
    """Whether this evaluation may use a GPU: the worker's CUDA_VISIBLE_DEVICES, else this process's, else
    whether the machine has NVIDIA device nodes at all."""
    value = request.env.get("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES"))
    if value is None:
        return any(Path("/dev").glob("nvidia[0-9]*"))
    return value.strip() not in ("", "-1")


def _phase_env(base: dict, shielded: bool, work: Path, name: str) -> dict:
    """Where the phase `name` keeps its caches: its own /tmp (work/name-tmp), emptied with the evaluation."""
    tmp = "/tmp" if shielded else str(work / f"{name}-tmp")
    env = {**base, "TMPDIR": tmp, "XDG_CACHE_HOME": f"{tmp}/.cache", "TRITON_CACHE_DIR": f"{tmp}/.triton",
           "TORCHINDUCTOR_CACHE_DIR": f"{tmp}/.inductor"}
    if shielded:
        env.update(HOME=str(shield.INSIDE / "work"), USER="evo", LOGNAME="evo")
    return env


TASKS_PER_PROCESS = 8  # the shield's kernel-enforced cap counts threads too: room for torch's and the compilers'


def _limits(request: EvalRequest, work: Path, name: str) -> Limits:
    """What the phase `name` may use: the request's memory limit, and the disk and process limits over the two
    folders it can write (work/name and work/name-tmp, its /tmp); training's count also holds what it hands over
    (work/score, where the batch server writes its weights and graph)."""
    handed_over = (str(work / "score"),) if name == "train" else ()
    return Limits(memory_mb=request.memory_mb, processes=request.processes, disk_mb=request.disk_mb,
                  files=request.files, watch=(str(work / name), str(work / f"{name}-tmp"), *handed_over))


def _behind_shield(cmd: list[str], work: Path, name: str, binds: list[shield.Bind], covers: list[Path],
                   gpu: bool, processes: int) -> list[str]:
    """cmd behind the shield, with work/name as its working folder and work/name-tmp as its /tmp."""
    scratch, tmp, build = work / name, work / f"{name}-tmp", work / f"{name}-root"
    shield.prepare_scratch(scratch, tmp)
    build.mkdir()
    spec = shield.Spec(binds=(*shield.runtime_binds(), *binds,
                              shield.Bind(str(scratch), str(shield.INSIDE / "work"), True),
                              shield.Bind(str(tmp), "/tmp", True)),
                       cwd=str(shield.INSIDE / "work"), build_dir=str(build), covers=tuple(map(str, covers)), gpu=gpu,
                       tasks=processes * TASKS_PER_PROCESS if processes else 0)
    return shield.command(spec, cmd)


def _train(request: EvalRequest, result: EvalResult, work: Path, env: dict, shielded: bool,
           on_line: Callable[[str], None] | None) -> BatchServer | None:
    """The train phase; returns the batch server that received the model, or None with result's status set."""
    budget = request.budget
    limit = request.time_limit or default_time_limit(budget)
    scratch = work / "train"
    shield.prepare_scratch(scratch, work / "train-tmp")
    (scratch / "train.py").write_text(request.source, encoding="utf-8")
    for path in (request.harness, *request.fixed_files):
        shutil.copyfile(path, scratch / Path(path).name)
    for path in scratch.iterdir():
        os.chmod(path, 0o444)
    ours, theirs = open_channel()
    settings = ServeSettings(seed=request.seed, budget=budget,
                             vocab_size=vocab_from_tokenizer(request.dataset / "train"), threads=request.threads,
                             max_batches=request.batches,
                             max_payload=int(request.disk_mb * 2**20) if request.disk_mb > 0 else MAX_MODEL_BYTES)
    server = BatchServer(ours, request.dataset / "train" / "train.bin", settings, work / "score" / MODEL_FILE,
                         work / "score" / WEIGHTS_FILE)
    cmd = [sys.executable, "train.py"]
    if shielded:
        cmd = _behind_shield(cmd, work, "train", [], hidden_paths(request.dataset, request.cache_root),
                             gpu=_gpu_visible(request), processes=request.processes)
    env = _phase_env({**env, CHANNEL_VAR: str(theirs.fileno())}, shielded, work, "train")
    server.start()
    try:
        code, log, result.limits = _run_phase(cmd, scratch, env, limit, _limits(request, work, "train"), on_line,
                                  pass_fds=(theirs.fileno(),), deadline=server.deadline)
    finally:
        theirs.close()
    server.join(timeout=10)
    result.log = log
    result.training_seconds, result.tokens, result.num_steps = (
        server.training_seconds(), server.tokens, server.steps)
    result.device, result.peak_memory_mb, misreported = reported_fields(server.info)
    violation = server.violation or misreported
    if violation:  # first: it ends the phase at once, and the child's own last words would hide it
        result.error = f"the training process broke the harness protocol: {violation}"
        return None
    if code is None:
        moving = server.deadline()
        if moving is not None and time.monotonic() > moving:
            result.status, result.error = "timeout", server.late()
        else:
            result.status, result.error = "timeout", f"training exceeded its wall-clock limit of {limit:g} s"
        return None
    overrun = server.overrun()  # the server's own record of the handover, which the polling above can miss by a little
    if overrun:
        result.status, result.error = "timeout", overrun
        return None
    if code != 0:
        result.status, result.error = _failure_reason(log, code)
        return None
    if server.submitted is None:
        result.error = "train.py ended without calling submit(model)"
        return None
    return server


def _score(request: EvalRequest, result: EvalResult, work: Path, env: dict, shielded: bool) -> None:
    """The score phase: sets result's status, val_bpb and error from the scorer's pipe."""
    private = work / "score"
    device = "cuda" if (result.device or "").startswith("cuda") and _gpu_visible(request) else "cpu"
    test_dir = request.dataset / "test"
    test = request.test and test_dir.is_dir()       # data from an older prepare.py has no test split
    if shielded:
        inside = shield.INSIDE
        spec = {"harness": str(inside / "harness" / "prepare.py"), "model": str(inside / "input" / MODEL_FILE),
                "weights": str(inside / "input" / WEIGHTS_FILE), "val_dir": str(inside / "data" / "val")}
        binds = [shield.Bind(str(request.harness), spec["harness"]), shield.Bind(str(private), str(inside / "input")),
                 shield.Bind(str(request.dataset / "val"), spec["val_dir"])]
        if test:
            spec["test_dir"] = str(inside / "data" / "test")
            binds.append(shield.Bind(str(test_dir), spec["test_dir"]))
    else:
        spec = {"harness": str(request.harness), "model": str(private / MODEL_FILE),
                "weights": str(private / WEIGHTS_FILE), "val_dir": str(request.dataset / "val")}
        if test:
            spec["test_dir"] = str(test_dir)
    spec.update(device=device, threads=request.threads)
    spec_path = private / "spec.json"
    spec_path.write_text(json.dumps(spec))
    read_end, write_end = os.pipe()
    cmd = [sys.executable, "-I", "-m", "evo.sandbox.scorer",
           str(shield.INSIDE / "input" / "spec.json") if shielded else str(spec_path), str(write_end)]
    if shielded:
        cmd = _behind_shield(cmd, work, "scorer", binds, [], gpu=device == "cuda", processes=request.processes)
    else:
        shield.prepare_scratch(work / "scorer", work / "scorer-tmp")
    reader = _PipeReader(read_end)
    reader.start()
    try:
        code, log, _ = _run_phase(cmd, work / "scorer", _phase_env(env, shielded, work, "scorer"), EVAL_PHASE_LIMIT,
                                  _limits(request, work, "scorer"), None, pass_fds=(write_end,))
    finally:
        os.close(write_end)
    reader.join(timeout=10)
    if log.strip():
        result.log += "\n--- scoring ---\n" + log
    if code is None:
        result.status, result.error = "timeout", f"scoring exceeded {EVAL_PHASE_LIMIT:g} s"
        return
    scored = reader.result()
    if code != 0 or scored is None:
        status, reason = _failure_reason(log, code or 1)
        result.status, result.error = status, f"scoring failed: {reason}"
        return
    scored = typed({name: scored.get(name) for name in SCORED_FIELDS})  # a non-finite score is rejected here too
    result.status, result.val_bpb, result.test_bpb, result.error = (
        scored["status"], scored["val_bpb"], scored["test_bpb"], scored["error"])
    result.eval_seconds, result.num_params = scored["eval_seconds"], scored["num_params"]
    if scored.get("log"):
        result.log += "\n" + scored["log"]


class _PipeReader(threading.Thread):
    """Reads the scorer's result pipe to its end (at most 1 MiB), so the scorer never blocks on it."""

    def __init__(self, fd: int):
        super().__init__(daemon=True)
        self.fd, self.data = fd, b""

    def run(self):
        with os.fdopen(self.fd, "rb") as f:
            self.data = f.read(1 << 20)

    def result(self) -> dict | None:
        try:
            scored = json.loads(self.data)
        except ValueError:
            return None
        if not isinstance(scored, dict) or scored.get("status") not in ("ok", "rejected"):
            return None
        return scored  # its fields are typed where they are taken (evo.results)


def evaluate(request: EvalRequest, on_line: Callable[[str], None] | None = None,
             keep_dir: Path | None = None) -> EvalResult:
    """Trains and scores request.source. Never raises for a bad child; returns its status and reason."""
    sweep_orphans()
    cgroup.sweep()
    result = EvalResult(status="crash", seed=request.seed, **request.budget.fields())
    t0 = time.time()
    work = Path(tempfile.mkdtemp(prefix="evo-eval-"))
    try:
        os.chmod(work, 0o755)
        (work / "score").mkdir()
        unshielded = shield.unavailable()
        if unshielded is not None and request.require_shield:
            result.error = f"training cannot be shielded on this node ({unshielded}) and the run requires it"
            return result
        result.shielded = unshielded is None
        note = f"evo: training runs without the shield ({unshielded})" if unshielded else None
        if note and on_line:
            on_line(note)
        extra = dict(request.env)
        if request.threads:
            extra["OMP_NUM_THREADS"] = str(request.threads)
        env = clean_environment(os.environ, extra)
        server = _train(request, result, work, env, result.shielded, on_line)
        if note:
            result.log = note + "\n" + result.log
        if server is None:
            return result
        if not request.score:
            result.status = "ok"
            return result
        _score(request, result, work, env, result.shielded)
        return result
    finally:
        result.total_seconds = round(time.time() - t0, 2)
        if keep_dir is not None:
            shutil.copytree(work, keep_dir, dirs_exist_ok=True, symlinks=True)
        shutil.rmtree(work, ignore_errors=True)
