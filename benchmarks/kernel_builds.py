"""Compiles kernels.py's Triton kernels ahead of time for NVIDIA GPUs, with no GPU needed, and reports what each
build uses: registers per thread, spilled bytes (local memory) and shared memory per block.

    python benchmarks/kernel_builds.py [--arch 90,80] [--shapes seed,autoresearch] [--json] [--out FILE]

Each kernel is built at the specialisations kernels.py's wrappers launch it with on CUDA, at the seed's shapes and at
autoresearch's (benchmarks/kernels.py's SHAPES), in float32 and under bfloat16 autocast: the same pointer dtypes,
the same constexprs and the same num_warps, from the same helpers. Triton lowers the kernel to PTX and the bundled
ptxas assembles it for the architecture (90: H100/H200, 80: A100), so a kernel that runs under the interpreter but
does not compile, or needs more shared memory than a block may have, shows up here on a machine without a GPU.
Exit status 1 when any build fails. --json prints one JSON object per build instead of the table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.pop("TRITON_INTERPRET", None)  # the real compiler, not the interpreter
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, set to quiet its warning

import torch  # noqa: E402

import kernels  # noqa: E402
from benchmarks.kernels import SHAPES  # noqa: E402
from benchmarks.task_baseline import cpu_model  # noqa: E402

# The most shared memory one block may use (opt-in), by compute capability.
MAX_SHARED = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}
TRITON_TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.int64: "i64"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Build:
    kernel: str  # the @triton.jit function's name in kernels.py
    what: str  # which launch this is, in words
    pointers: tuple[tuple[str, torch.dtype], ...]  # pointer arguments and their element dtypes
    constexprs: tuple[tuple[str, object], ...]
    num_warps: int


def _signature(fn, build: Build) -> dict[str, str]:
    """Triton's signature for fn: the pointers as given, the constexprs, fp32 for the float scalars, i32 else."""
    pointers, constexprs = dict(build.pointers), dict(build.constexprs)
    floats = {"eps", "softcap"}
    signature = {}
    for name in fn.arg_names:
        if name in pointers:
            signature[name] = "*" + TRITON_TYPES[pointers[name]]
        elif name in constexprs:
            signature[name] = "constexpr"
        else:
            signature[name] = "fp32" if name in floats else "i32"
    missing = (set(pointers) | set(constexprs)) - set(signature)
    if missing:
        raise SystemExit(f"{fn.__name__} has no arguments {sorted(missing)}: this script is out of date")
    return signature


def builds(shape: dict, dtype: torch.dtype) -> list[Build]:
    """The launches kernels.py makes for train.py's model at this shape, inputs in dtype (bf16: autocast)."""
    B, T, C, H, V = shape["batch"], shape["seq"], shape["width"], shape["heads"], shape["vocab"]
    D = C // H
    f32 = torch.float32
    out = []
    # rms_norm: the residual stream [B, T, C] and q, k per head [B, T, H, D]; with a weight as a child might add
    for what, rows, cols, weight in (("width", B * T, C, False), ("width, weighted", B * T, C, True),
                                     ("head", B * T * H, D, False)):
        block_cols = kernels.triton.next_power_of_2(cols)
        block_rows = kernels._row_block(block_cols, rows)
        common = (("HAS_WEIGHT", weight), ("BLOCK_ROWS", block_rows), ("BLOCK_COLS", block_cols))
        warps = kernels._warps(block_rows * block_cols)
        out.append(Build("_rms_norm_forward_kernel", f"rms_norm {what}",
                         (("X", dtype), ("W", dtype), ("Y", dtype), ("RSTD", f32)), common, warps))
        out.append(Build("_rms_norm_backward_kernel", f"rms_norm {what} backward",
                         (("DY", dtype), ("X", dtype), ("W", dtype), ("RSTD", f32), ("DX", dtype),
                          ("DW_PARTIAL", f32 if weight else dtype)), common, warps))
    # rotary: q or k [B, T, H, D] against train.py's float32 tables; the output promotes like PyTorch's ops
    half = D // 2
    block_half = kernels.triton.next_power_of_2(half)
    block_rows = kernels._row_block(block_half, B * T * H, elements=2048)
    promoted = torch.promote_types(dtype, f32)
    for inverse, x_dtype, y_dtype in ((False, dtype, promoted), (True, promoted, dtype)):
        out.append(Build("_rotary_kernel", "rotary backward" if inverse else "rotary",
                         (("X", x_dtype), ("COS", f32), ("SIN", f32), ("Y", y_dtype)),
                         (("INVERSE", inverse), ("BLOCK_ROWS", block_rows), ("BLOCK_HALF", block_half)),
                         kernels._warps(2 * block_rows * block_half)))
    # cross-entropy: a chunk's logits in the matmul's dtype, rewritten in place as their gradient
    block = min(kernels.triton.next_power_of_2(V), kernels.MAX_CE_BLOCK)
    for softcap, grad in ((True, True), (True, False), (False, True)):
        what = "cross_entropy" + (", softcap" if softcap else "") + ("" if grad else ", no grad")
        out.append(Build("_cross_entropy_kernel", what,
                         (("LOGITS", dtype), ("TARGETS", torch.int64), ("LOSS", f32)),
                         (("HAS_SOFTCAP", softcap), ("HAS_GRAD", grad), ("BLOCK", block)), kernels._warps(block)))
    return out


def _resource_usage(cubin: bytes) -> dict:
    """REG, STACK, SHARED and LOCAL of the cubin's kernel, read with the cuobjdump that ships with triton."""
    tool = Path(kernels.triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([str(tool), "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    line = next(line for line in text.splitlines() if "REG:" in line)
    return {key.lower(): int(value) for key, value in re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", line)}


def compile_build(build: Build, arch: int) -> dict:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile

    fn = getattr(kernels, build.kernel)
    row = {"kernel": build.kernel, "what": build.what, "arch": f"sm_{arch}",
           "dtypes": {name: TRITON_TYPES[dt] for name, dt in build.pointers},
           "constexprs": dict(build.constexprs), "num_warps": build.num_warps}
    try:
        compiled = compile(ASTSource(fn, _signature(fn, build), dict(build.constexprs)),
                           target=GPUTarget("cuda", arch, 32), options={"num_warps": build.num_warps})
        usage = _resource_usage(compiled.asm["cubin"])
    except Exception as e:  # one failing build must not hide the others
        lines = str(e).strip().splitlines()
        return {**row, "ok": False, "error": f"{type(e).__name__}: {lines[-1] if lines else ''}"[:400]}
    shared = compiled.metadata.shared
    row.update(ok=shared <= MAX_SHARED.get(arch, 48 * 1024), registers=usage["reg"],
               spilled_bytes=usage["local"] + usage["stack"], shared_bytes=shared)
    if not row["ok"]:
        row["error"] = f"needs {shared} bytes of shared memory; sm_{arch} allows {MAX_SHARED.get(arch)}"
    return row


def markdown(report: dict) -> str:
    lines = [f"# Kernel builds for {', '.join(report['arch'])}", "",
             f"`{report['command']}`", "",
             f"{report['date']}; triton {report['triton']}, torch {report['torch']}; built on {report['machine']} "
             "(none is needed). Registers are per thread; spilled bytes are local memory per thread.", "",
             "| shapes | dtype | what | arch | warps | constexprs | registers | spilled bytes | shared bytes |",
             "| --- | --- | --- | --- | ---: | --- | ---: | ---: | ---: |"]
    for row in report["builds"]:
        consts = ", ".join(f"{k}={v}" for k, v in row["constexprs"].items())
        if "registers" not in row:
            lines.append(f"| {row['shapes']} | {row['dtype']} | {row['what']} | {row['arch']} | {row['num_warps']} "
                         f"| {consts} | failed: {row['error']} | | |")
            continue
        lines.append(f"| {row['shapes']} | {row['dtype']} | {row['what']} | {row['arch']} | {row['num_warps']} "
                     f"| {consts} | {row['registers']} | {row['spilled_bytes']} | {row['shared_bytes']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="90,80", help="comma-separated compute capabilities, e.g. 90 for H100")
    parser.add_argument("--shapes", default="seed,autoresearch", help=f"comma-separated, of {', '.join(SHAPES)}")
    parser.add_argument("--dtypes", default="float32,bfloat16", help=f"comma-separated, of {', '.join(DTYPES)}")
    parser.add_argument("--json", action="store_true", help="print one JSON object per build, not the table")
    parser.add_argument("--out", default=None, help="also write this JSON report and a .md table beside it")
    args = parser.parse_args(argv)
    if not kernels.triton_available():
        print("benchmarks/kernel_builds.py: triton does not import here; there is nothing to build")
        return 0
    try:
        archs = [int(a) for a in args.arch.split(",")]
    except ValueError:
        parser.error(f"--arch: expected numbers such as 90,80; got {args.arch!r}")
    unknown = [s for s in args.shapes.split(",") if s not in SHAPES] + [
        d for d in args.dtypes.split(",") if d not in DTYPES]
    if unknown:
        parser.error(f"unknown shapes or dtypes: {', '.join(unknown)}")

    argv = sys.argv[1:] if argv is None else argv
    report = {"command": " ".join(shlex.quote(a) for a in ["python", "benchmarks/kernel_builds.py", *argv]),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{cpu_model()}, {os.cpu_count()} cores, no GPU",
              "triton": kernels.triton.__version__, "torch": torch.__version__,
              "arch": [f"sm_{a}" for a in archs], "builds": []}
    seen = set()
    for shape_name in args.shapes.split(","):
        for dtype_name in args.dtypes.split(","):
            for build in builds(SHAPES[shape_name], DTYPES[dtype_name]):
                for arch in archs:
                    if (build, arch) in seen:
                        continue
                    seen.add((build, arch))
                    row = {"shapes": shape_name, "dtype": dtype_name, **compile_build(build, arch)}
                    report["builds"].append(row)
                    if args.json:
                        print(json.dumps(row), flush=True)
    failed = [row for row in report["builds"] if not row["ok"]]
    text = markdown(report)
    if not args.json:
        print(text, end="")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".md").write_text(text)
        print(f"wrote {out} and {out.with_suffix('.md')}", file=sys.stderr)
    for row in failed:
        print(f"{row['kernel']} ({row['what']}, {row['shapes']}, {row['dtype']}, {row['arch']}) did not build: "
              f"{row['error']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
