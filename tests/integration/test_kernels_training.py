"""The seed trained with the Triton kernels (under Triton's interpreter) and without them, and the kernel benchmark
on a machine without CUDA."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from tests.support.genomes import ROOT, tiny_source
from tests.support.toolchain import triton_import_error

STEPS = 6
BATCH, CONTEXT = 4, 32
STEP_LINE = re.compile(r"^step\s+(\d+) \| loss ([\d.]+) ", re.M)


def traced_source() -> str:
    """The tiny seed, printing every step's loss in full and whether the kernels took the Triton path."""
    source = tiny_source(BATCH_SIZE=str(BATCH), CONTEXT=str(CONTEXT))
    edits = {
        "    if step % 100 == 0:\n": "    if True:\n",
        "loss {loss.item():.4f}": "loss {loss.item():.9f}",
        "t0 = time.time()\n":
            "t0 = time.time()\nprint(f\"triton path: {kernels.use_triton(model.cos.new_empty(0))}\")\n",
    }
    for old, new in edits.items():
        assert source.count(old) == 1, f"train.py no longer contains {old!r}"
        source = source.replace(old, new)
    return source


def train(folder, kernel_backend: str) -> tuple[list[float], float, str]:
    """Runs the traced tiny seed in folder as the sandbox lays it out (train.py beside prepare.py and kernels.py);
    returns the per-step losses, val_bpb and the stdout."""
    folder.mkdir()
    (folder / "train.py").write_text(traced_source())
    for fixed in ("prepare.py", "kernels.py"):
        shutil.copyfile(ROOT / fixed, folder / fixed)
    env = {**os.environ, "EVO_BUDGET_TOKENS": str(STEPS * BATCH * CONTEXT), "EVO_SEED": "3",
           "EVO_KERNELS": kernel_backend, "OMP_NUM_THREADS": "2"}
    env.pop("TRITON_INTERPRET", None)
    if kernel_backend == "triton":
        env["TRITON_INTERPRET"] = "1"
    proc = subprocess.run([sys.executable, "train.py"], cwd=folder, capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = [float(loss) for _, loss in STEP_LINE.findall(proc.stdout)]
    val_bpb = float(re.search(r"^val_bpb:\s+([\d.]+)$", proc.stdout, re.M).group(1))
    return losses, val_bpb, proc.stdout


def test_seed_trains_the_same_with_and_without_the_kernels(tmp_path):
    if error := triton_import_error():
        pytest.skip(f"triton does not import here ({error}): there is no kernel path to compare")
    plain, plain_bpb, plain_out = train(tmp_path / "torch", "torch")
    fused, fused_bpb, fused_out = train(tmp_path / "triton", "triton")
    assert "triton path: False" in plain_out and "triton path: True" in fused_out
    assert len(plain) == len(fused) == STEPS
    assert plain[0] == pytest.approx(fused[0], rel=1e-6)  # same weights, same batch: only rounding differs
    for step, (a, b) in enumerate(zip(plain, fused)):
        assert a == pytest.approx(b, rel=1e-4), f"step {step}: loss {a} without the kernels, {b} with them"
    assert plain[-1] < plain[0]  # it trained, so the later steps compare updated weights
    assert fused_bpb == pytest.approx(plain_bpb, abs=1e-3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the benchmark runs for minutes: run it by hand")
def test_kernel_benchmark_without_cuda_says_so_and_exits_0():
    proc = subprocess.run([sys.executable, "benchmarks/kernels.py"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA" in proc.stdout


def test_kernel_benchmark_smoke_run_reports_every_measure(tmp_path):
    """--smoke runs the benchmark's own code on CPU at tiny shapes (Triton under the interpreter), so the CUDA
    run's plumbing is exercised where there is no GPU."""
    if error := triton_import_error():
        pytest.skip(f"triton does not import here ({error})")
    out = tmp_path / "kernels.json"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "benchmarks/kernels.py", "--smoke", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = [row for shapes in report["shapes"] for row in shapes["rows"]]
    measured = {(row["what"], row["impl"]) for row in rows}
    for what in ("rms_norm", "rotary", "cross_entropy", "train_step"):
        for impl in ("triton", "eager"):
            assert any(w.startswith(what) and i == impl for w, i in measured), (what, impl)
    for row in rows:
        assert row["ms"] > 0 and row["tokens_per_s"] > 0
    assert out.with_suffix(".md").read_text().count("|") > 20
