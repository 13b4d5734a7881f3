"""The evaluation sandbox: every process a child starts ends with it; limits become statuses."""

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from evo.sandbox.environment import clean_environment
from evo.sandbox.evaluation import Budget, EvalRequest, evaluate
from tests.support.genomes import ROOT, tiny_source
from tests.support.processes import processes


def request(source, dataset, **kw):
    kw.setdefault("budget", Budget(tokens=8192))
    return EvalRequest(source=source, seed=1, harness=ROOT / "prepare.py", dataset=dataset, threads=1,
                       fixed_files=(ROOT / "kernels.py",), **kw)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has exited; it only waits for its parent to reap it
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def escape(token: str) -> str:
    """Code that starts a process in a session of its own, findable from outside by token."""
    return textwrap.dedent(f"""
        import subprocess, sys
        escaped = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)  # {token}"],
                                   start_new_session=True)
        print("ESCAPED", flush=True)
    """)


def escaped_while_running(source: str, token: str, **kw):
    """Evaluates source in a thread; returns (result, the host pids of the escaped process seen while it ran)."""
    seen, box = set(), {}
    runner = threading.Thread(target=lambda: box.setdefault("result", evaluate(request(source, **kw))))
    runner.start()
    while runner.is_alive():
        seen.update(processes(token))
        time.sleep(0.1)
    return box["result"], seen


def test_a_process_that_left_the_session_is_ended_with_the_evaluation(dataset):
    token = f"escape-{uuid.uuid4().hex}"
    source = tiny_source().replace("torch.manual_seed(seed())", escape(token) + "torch.manual_seed(seed())")
    result, seen = escaped_while_running(source, token, dataset=dataset)
    assert result.status == "ok", result.error
    assert "ESCAPED" in result.log and seen
    assert not any(pid_alive(pid) for pid in seen) and not processes(token)


def test_the_whole_tree_ends_at_the_time_limit(dataset):
    token = f"escape-{uuid.uuid4().hex}"
    source = tiny_source().replace("submit(model)\n", escape(token) + "import time\ntime.sleep(300)\n")
    t0 = time.time()
    result, seen = escaped_while_running(source, token, dataset=dataset, time_limit=10)
    assert result.status == "timeout"
    assert time.time() - t0 < 60
    assert seen and not any(pid_alive(pid) for pid in seen)


def test_memory_over_the_limit_is_oom(dataset):
    source = tiny_source().replace("submit(model)\n", "hog = bytearray(1500 * 2**20)\nimport time\ntime.sleep(30)\n")
    result = evaluate(request(source, dataset, memory_mb=1200))
    assert result.status == "oom"
    assert "memory limit exceeded" in result.error


def _then_sleep(code: str) -> str:
    return tiny_source().replace("submit(model)\n", textwrap.dedent(code) + "import time\ntime.sleep(60)\n")


def test_writing_past_the_disk_limit_ends_the_phase_also_through_files_deleted_while_open(dataset):
    # no one file reaches the limit, and the last one is unlinked while still open: only the supervisor's count
    # of the folders and of the processes' open files catches it
    source = _then_sleep("""
        import os
        block = os.urandom(2**20)
        for n in range(3):
            with open(f"part{n}.bin", "wb") as f:
                for _ in range(20):
                    f.write(block)
        hidden = open("/tmp/hidden.bin", "wb")
        os.unlink("/tmp/hidden.bin")
        for _ in range(30):
            hidden.write(block)
        hidden.flush()
    """)
    t0 = time.time()
    result = evaluate(request(source, dataset, disk_mb=80))
    assert result.status == "crash" and "disk limit exceeded" in result.error, result.error
    assert time.time() - t0 < 50


def test_files_below_the_path_length_limit_count_against_the_disk_limit(dataset):
    # 40 folders of 200-byte names: a path past PATH_MAX, which a walk by path names cannot enter
    source = _then_sleep("""
        import os
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
        for _ in range(40):
            os.mkdir("d" * 200, dir_fd=fd)
            fd = os.open("d" * 200, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        block = os.urandom(2**20)
        for n in range(4):
            out = os.open(f"part{n}.bin", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd)
            for _ in range(25):
                os.write(out, block)
            os.close(out)
    """)
    result = evaluate(request(source, dataset, disk_mb=64))
    assert result.status == "crash" and "disk limit exceeded" in result.error, result.error


FLOOD = """
import json, resource, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from evo.sandbox.evaluation import Budget, EvalRequest, evaluate
from tests.support.genomes import ROOT, tiny_source

piece = "'x' * 2**20" if {lines!r} == 0 else "('x' * 1023 + '\\\\n') * 1024"
flood = f"import sys\\nblock = {{piece}}\\nfor _ in range({mib}):\\n    sys.stdout.write(block)\\n"
source = tiny_source().replace("submit(model)\\n", flood + "raise RuntimeError('the end of the flood')\\n")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
r = evaluate(EvalRequest(source=source, seed=1, harness=ROOT / "prepare.py", dataset=Path({dataset!r}), threads=1,
                         fixed_files=(ROOT / "kernels.py",), budget=Budget(tokens=8192)))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"status": r.status, "error": r.error, "log": len(r.log), "grew_mb": peak - before}}))
"""


def flooded(dataset, mib: int, lines: bool) -> dict:
    """One evaluation of the tiny seed that writes mib MiB to its output and raises, in a fresh evaluating process:
    its status, error, kept log size and how much that process's peak memory grew."""
    code = FLOOD.format(root=str(ROOT), dataset=str(dataset), mib=mib, lines=int(lines))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("lines", [False, True], ids=["one-line", "lines"])
def test_output_is_read_in_pieces_and_a_flood_ends_the_phase(dataset, lines):
    # 400 MiB without a newline: read a line at a time, it took the evaluating process past 1 GiB
    found = flooded(dataset, 400, lines)
    assert found["status"] == "crash" and "output limit exceeded" in found["error"], found
    assert found["log"] < 1.1 * 2**20 and found["grew_mb"] < 64, found


def test_the_end_of_a_long_output_is_kept(dataset):
    found = flooded(dataset, 3, False)
    assert found["status"] == "crash" and "the end of the flood" in found["error"], found
    assert found["log"] < 1.1 * 2**20, found


def test_one_file_cannot_grow_past_the_disk_limit(dataset):
    source = _then_sleep("""
        with open("big.bin", "wb") as f:
            f.write(bytes(48 * 2**20))
    """)
    result = evaluate(request(source, dataset, disk_mb=32))
    assert result.status == "crash" and "OSError: [Errno 27] File too large" in result.log, result.log[-500:]


def test_too_many_files_or_processes_end_the_phase(dataset):
    files = evaluate(request(_then_sleep("""
        import os
        os.makedirs("many", exist_ok=True)
        for n in range(3000):
            open(f"many/{n}", "w").close()
    """), dataset, files=1000))
    assert files.status == "crash" and "file limit exceeded" in files.error, files.error
    forks = evaluate(request(_then_sleep("""
        import subprocess, sys
        spawned = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(24)]
    """), dataset, processes=12))
    assert forks.status == "crash" and "process limit exceeded" in forks.error, forks.error


def test_the_evaluation_dies_with_the_process_that_runs_it(dataset, tmp_path):
    """SIGKILL the process running evaluate(): the supervisor ends the training and what it started."""
    token = f"escape-{uuid.uuid4().hex}"
    source = tiny_source().replace("submit(model)\n", escape(token) + "import time\ntime.sleep(300)\n")
    (tmp_path / "child.py").write_text(source)
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from evo.sandbox.evaluation import Budget, EvalRequest, evaluate
        evaluate(EvalRequest(source=Path({str(tmp_path / 'child.py')!r}).read_text(), seed=1,
                             budget=Budget(tokens=8192), harness=Path({str(ROOT / 'prepare.py')!r}),
                             dataset=Path({str(dataset)!r}), threads=1,
                             fixed_files=(Path({str(ROOT / 'kernels.py')!r}),)),
                 on_line=lambda line: print(line, flush=True))
    """)
    runner = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    for line in runner.stdout:
        if line.startswith("ESCAPED"):
            break
    escaped = processes(token)
    assert escaped and all(pid_alive(pid) for pid in escaped)
    runner.kill()
    runner.wait()
    deadline = time.time() + 10
    while any(pid_alive(pid) for pid in escaped) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(pid_alive(pid) for pid in escaped)


def test_secrets_never_reach_the_child():
    env = clean_environment({"ANTHROPIC_API_KEY": "k", "ANTHROPIC_BASE_URL": "u", "HF_TOKEN": "t",
                             "AWS_SECRET_ACCESS_KEY": "s", "EVO_CACHE_DIR": "/c", "PATH": "/bin",
                             "CUDA_VISIBLE_DEVICES": "0"}, {})
    assert env["PATH"] == "/bin" and env["CUDA_VISIBLE_DEVICES"] == "0"
    assert not {"ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY",
                "EVO_CACHE_DIR"} & set(env)


def test_child_sees_no_api_key(dataset, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-secret-value")
    source = tiny_source().replace("torch.manual_seed(seed())",
                                   "import os\nprint('KEYS', sorted(k for k in os.environ if 'KEY' in k))\n"
                                   "for pid in os.listdir('/proc'):\n"
                                   "    try:\n"
                                   "        print('ENVIRON', pid, open(f'/proc/{pid}/environ', 'rb').read())\n"
                                   "    except OSError:\n"
                                   "        pass\n"
                                   "torch.manual_seed(seed())")
    result = evaluate(request(source, dataset))
    assert "KEYS []" in result.log and "ENVIRON" in result.log
    assert "sk-secret-value" not in result.log


def test_a_request_that_requires_the_shield_fails_where_it_cannot_run(dataset):
    script = textwrap.dedent(f"""
        import json
        from pathlib import Path
        from evo.sandbox.evaluation import Budget, EvalRequest, evaluate
        r = evaluate(EvalRequest(source="print('trained')", seed=1, budget=Budget(tokens=8192),
                                 harness=Path({str(ROOT / 'prepare.py')!r}), dataset=Path({str(dataset)!r}),
                                 require_shield=True))
        print(json.dumps([r.status, r.error, r.log]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "EVO_SHIELD": "off"})
    status, error, log = json.loads(proc.stdout.strip().splitlines()[-1])
    assert status == "crash" and "cannot be shielded" in error and "trained" not in log
