"""kernels.py's Triton kernels compiled for an H100 (sm_90) by Triton's own compiler and the ptxas that ships with
it, at the specialisations the wrappers launch on CUDA: what the interpreter tests cannot show (that each kernel
lowers to GPU code, within a block's shared memory), shown on a machine without a GPU."""

import json
import subprocess
import sys

import pytest

from tests.support.genomes import ROOT
from tests.support.toolchain import triton_import_error

KERNELS = {"_rms_norm_forward_kernel", "_rms_norm_backward_kernel", "_rotary_kernel", "_cross_entropy_kernel"}


@pytest.fixture(scope="module")
def builds():
    why = triton_import_error()
    if why:
        pytest.skip(f"triton does not import here ({why}): there is no compiler to build with")
    proc = subprocess.run([sys.executable, "benchmarks/kernel_builds.py", "--arch", "90", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc, rows


def test_every_kernel_builds_for_sm90_at_the_seed_and_autoresearch_shapes(builds):
    proc, rows = builds
    failed = [f"{r['what']} ({r['shapes']}, {r['dtype']}): {r['error']}" for r in rows if not r["ok"]]
    assert not failed, "\n".join(failed)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {r["kernel"] for r in rows} == KERNELS
    assert {(r["shapes"], r["dtype"]) for r in rows} == {
        (s, d) for s in ("seed", "autoresearch") for d in ("float32", "bfloat16")}
    for row in rows:
        assert row["arch"] == "sm_90"
        assert 0 < row["registers"] <= 255, row
        assert 0 <= row["shared_bytes"] <= 227 * 1024, row


def test_the_builds_follow_the_wrappers_launch_parameters(builds):
    _, rows = builds
    by = {(r["shapes"], r["dtype"], r["what"]): r for r in rows}
    # autoresearch's vocabulary of 8192 fits one block of the cross-entropy kernel, with 8 warps
    ce = by[("autoresearch", "bfloat16", "cross_entropy, softcap")]
    assert ce["constexprs"] == {"HAS_SOFTCAP": True, "HAS_GRAD": True, "BLOCK": 8192} and ce["num_warps"] == 8
    assert ce["dtypes"] == {"LOGITS": "bf16", "TARGETS": "i64", "LOSS": "fp32"}
    # under autocast the rotary output is promoted by the float32 tables, and its backward returns bf16
    assert by[("seed", "bfloat16", "rotary")]["dtypes"]["Y"] == "fp32"
    assert by[("seed", "bfloat16", "rotary backward")]["dtypes"]["Y"] == "bf16"
    # the seed's head size of 32 gives tiles of 128 rows by 32 columns
    assert by[("seed", "float32", "rms_norm head")]["constexprs"]["BLOCK_COLS"] == 32


def test_a_kernel_that_cannot_compile_is_reported_as_failed():
    """The check above can fail: a block that is not a power of two does not lower (tl.arange refuses it)."""
    if triton_import_error():
        pytest.skip("triton does not import here")
    code = """if True:
        import json, torch
        from benchmarks.kernel_builds import Build, compile_build
        build = Build("_rms_norm_forward_kernel", "bad block",
                      (("X", torch.float32), ("W", torch.float32), ("Y", torch.float32), ("RSTD", torch.float32)),
                      (("HAS_WEIGHT", False), ("BLOCK_ROWS", 4), ("BLOCK_COLS", 100)), 4)
        print(json.dumps(compile_build(build, 90)))
    """
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads(proc.stdout.splitlines()[-1])
    assert row["ok"] is False and "power of 2" in row["error"], row
