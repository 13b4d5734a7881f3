"""Times kernels.py's Triton kernels and a whole training step against eager PyTorch and torch.compile, on CUDA.

    python benchmarks/kernels.py [--shapes seed,autoresearch] [--dtype float32|bfloat16]
                                 [--out benchmarks/results/kernels.json]
    TRITON_INTERPRET=1 python benchmarks/kernels.py --smoke [--out FILE]   # the same code on CPU, tiny shapes

At the seed's shapes (train.py: depth 2, width 128, sequence 256, vocab 1024, batch 16) and at autoresearch's (depth
8, width 512, 4 heads of 128, sequence 2048, vocab 8192; batch 32 here), each kernel (forward, and forward plus
backward) and one training step of train.py's own model and optimiser are timed three ways: "triton" (kernels.py's
Triton path), "eager" (its PyTorch path: the plain ops train.py used before the kernels) and "compile"
(torch.compile of the PyTorch path). Reported: milliseconds (median of repeats, CUDA events), tokens/s, peak memory
(torch.cuda.max_memory_allocated, absolute and above what was allocated before the call), achieved bandwidth (the
bytes the operation must move at least, divided by its time) and, for the cross-entropy (matmul-bound), TFLOP/s.
Writes JSON and a Markdown table beside it. Without CUDA it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import time
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # first: this script is named kernels.py too, and must import the root's

import kernels  # noqa: E402  (after the path, and after TRITON_INTERPRET is set by whoever runs this)

SHAPES = {
    "seed": {"depth": 2, "width": 128, "heads": 4, "vocab": 1024, "seq": 256, "batch": 16},
    "autoresearch": {"depth": 8, "width": 512, "heads": 4, "vocab": 8192, "seq": 2048, "batch": 32},
}
SMOKE_SHAPES = {"smoke": {"depth": 1, "width": 32, "heads": 2, "vocab": 97, "seq": 16, "batch": 2}}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


# ---------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn, device: torch.device, warmup: int, iters: int, repeats: int) -> float:
    """Median over repeats of the mean milliseconds per call of fn, timed with CUDA events on a GPU."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / iters)
        else:
            t0 = time.perf_counter()
            for _ in range(iters):
                fn()
            samples.append((time.perf_counter() - t0) * 1000 / iters)
    return statistics.median(samples)


def peak_memory_mib(fn, device: torch.device) -> tuple[float | None, float | None]:
    """(peak allocated during one call, that peak less what was allocated before it), in MiB; None on CPU."""
    if device.type != "cuda":
        fn()
        return None, None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    return round(peak / 2**20, 1), round((peak - before) / 2**20, 1)


def measure(what: str, impl: str, fn, *, tokens: int, nbytes: int | None, flops: int | None, device, settings) -> dict:
    row = {"what": what, "impl": impl}
    try:
        ms = time_ms(fn, device, **settings)
        peak, transient = peak_memory_mib(fn, device)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return {**row, "error": "out of memory"}
    except Exception as e:  # one implementation failing (a compiler error, say) must not lose the others' rows
        message = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        print(f"{what} [{impl}] failed: {message}", file=sys.stderr)
        return {**row, "error": message[:200]}
    seconds = ms / 1000
    row.update(ms=round(ms, 4), tokens_per_s=round(tokens / seconds), peak_mib=peak, transient_mib=transient,
               gb_per_s=round(nbytes / seconds / 1e9, 1) if nbytes else None,
               tflops=round(flops / seconds / 1e12, 1) if flops else None)
    return row


def implementations(compile_too: bool, triton_too: bool) -> list[tuple[str, str, bool]]:
    """(name, kernels backend, whether torch.compile wraps the call)."""
    impls = [("triton", "triton", False)] if triton_too else []
    impls.append(("eager", "torch", False))
    if compile_too:
        impls.append(("compile", "torch", True))
    return impls


def on_backend(name: str, fn):
    def call(*args):
        with kernels.backend(name):
            return fn(*args)
    return call


# ---------------------------------------------------------------------------
# The kernels, one at a time
# ---------------------------------------------------------------------------

def kernel_rows(shape: dict, dtype, device, impls, settings) -> list[dict]:
    B, T, C, H, V = shape["batch"], shape["seq"], shape["width"], shape["heads"], shape["vocab"]
    D = C // H
    N = B * T
    size = torch.tensor([], dtype=dtype).element_size()
    gen = torch.Generator(device=device).manual_seed(0)

    def randn(*s, scale=1.0):
        return (torch.randn(*s, generator=gen, device=device) * scale).to(dtype).requires_grad_()

    x_res = randn(B, T, C)
    qkv = randn(B, T, 3, H, D)
    q = qkv.unbind(dim=2)[0]  # the strided view train.py rotates
    q_rot = randn(B, T, H, D)
    angles = torch.rand(T, D // 2, generator=gen, device=device) * T
    cos, sin = angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]
    h, weight = randn(B, T, C), randn(V, C, scale=C ** -0.5)
    targets = torch.randint(0, V, (B, T), generator=gen, device=device)

    cases = [  # name, forward, inputs to differentiate, bytes forward, bytes forward+backward, flops fwd, fwd+bwd
        ("rms_norm width", lambda: kernels.rms_norm(x_res), (x_res,), 2 * N * C * size, 5 * N * C * size, None, None),
        ("rms_norm head", lambda: kernels.rms_norm(q_rot), (q_rot,), 2 * N * C * size, 5 * N * C * size, None, None),
        ("rotary", lambda: kernels.apply_rotary(q, cos, sin), (qkv,), 2 * N * C * size, 4 * N * C * size, None, None),
        ("cross_entropy", lambda: kernels.linear_cross_entropy(h, weight, targets, softcap=15.0), (h, weight),
         (N * C + V * C) * size + N * 8, 2 * (N * C + V * C) * size + N * 8, 2 * N * C * V, 6 * N * C * V),
    ]
    rows = []
    for name, forward, inputs, bytes_fwd, bytes_both, flops_fwd, flops_both in cases:
        for impl, backend_name, compiled in impls:
            f = torch.compile(forward, dynamic=False) if compiled else forward
            f = on_backend(backend_name, f)

            def fwd(f=f):
                with torch.no_grad():
                    return f()

            def fwd_bwd(f=f, inputs=inputs):
                out = f()
                return torch.autograd.grad(out, inputs, torch.ones_like(out))

            if compiled:
                torch._dynamo.reset()  # a fresh cache per case, so no recompile limit is hit
            rows.append(measure(f"{name} fwd", impl, fwd, tokens=N, nbytes=bytes_fwd, flops=flops_fwd,
                                device=device, settings=settings))
            rows.append(measure(f"{name} fwd+bwd", impl, fwd_bwd, tokens=N, nbytes=bytes_both, flops=flops_both,
                                device=device, settings=settings))
    return rows


# ---------------------------------------------------------------------------
# A whole training step of train.py's model
# ---------------------------------------------------------------------------

def with_hyperparameters(source: str, **values) -> str:
    for name, value in values.items():
        source, n = re.subn(rf"^{name} = [^#\n]*?(\s*#|$)", rf"{name} = {value}\1", source, count=1, flags=re.M)
        if n != 1:
            raise SystemExit(f"train.py has no hyperparameter {name}")
    return source


def seed_namespace(shape: dict) -> dict:
    """train.py above its Training section (hyperparameters, model, optimiser), at the given shape."""
    source = with_hyperparameters((ROOT / "train.py").read_text(), DEPTH=shape["depth"], WIDTH=shape["width"],
                                  N_HEADS=shape["heads"], BATCH_SIZE=shape["batch"], CONTEXT=shape["seq"])
    namespace = {"__name__": "seed_model"}
    exec(compile(source[:source.index("\n# Training\n")], "train.py", "exec"), namespace)
    return namespace


def step_rows(shape: dict, dtype, device, impls, settings) -> list[dict]:
    B, T = shape["batch"], shape["seq"]
    namespace = seed_namespace(shape)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randint(0, shape["vocab"], (B, T), generator=gen, device=device)
    y = torch.randint(0, shape["vocab"], (B, T), generator=gen, device=device)
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext())
    rows = []
    for impl, backend_name, compiled in impls:
        torch.manual_seed(0)
        model = namespace["GPT"](shape["vocab"]).to(device)
        optimizer = namespace["make_optimizer"](model)
        loss_fn = torch.compile(model.loss, dynamic=False) if compiled else model.loss
        clip = namespace["GRAD_CLIP"]

        def step(model=model, optimizer=optimizer, loss_fn=loss_fn, backend_name=backend_name, clip=clip):
            with kernels.backend(backend_name):
                with autocast:
                    loss = loss_fn(x, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()

        rows.append(measure("train_step", impl, step, tokens=B * T, nbytes=None, flops=None, device=device,
                            settings=settings))
        del model, optimizer, loss_fn, step
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def add_speedups(rows: list[dict]) -> None:
    eager = {row["what"]: row["ms"] for row in rows if row["impl"] == "eager" and "ms" in row}
    for row in rows:
        if "ms" in row and row["what"] in eager:
            row["speedup_vs_eager"] = round(eager[row["what"]] / row["ms"], 2)


def markdown(report: dict) -> str:
    def cell(value):
        return "" if value is None else str(value)

    lines = [f"# Kernel benchmark ({report['device']}, {report['dtype']})", "",
             f"{report['date']}; torch {report['torch']}, triton {report['triton']}.", ""]
    for shapes in report["shapes"]:
        lines += [f"## {shapes['name']}: {json.dumps(shapes['config'])}", "",
                  "| what | impl | ms | tokens/s | speedup vs eager | peak MiB | transient MiB | GB/s | TFLOP/s |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for row in shapes["rows"]:
            if "error" in row:
                lines.append(f"| {row['what']} | {row['impl']} | {row['error']} | | | | | | |")
                continue
            lines.append("| " + " | ".join(cell(row.get(k)) for k in (
                "what", "impl", "ms", "tokens_per_s", "speedup_vs_eager", "peak_mib", "transient_mib", "gb_per_s",
                "tflops")) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--shapes", default="seed,autoresearch", help=f"comma-separated, of {', '.join(SHAPES)}")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                        help="kernel inputs' dtype, and the training step's autocast dtype (float32: none)")
    parser.add_argument("--out", default=None, help="JSON report (a .md table goes beside it); default "
                                                    "benchmarks/results/kernels.json, none for --smoke")
    parser.add_argument("--smoke", action="store_true", help="run on CPU at tiny shapes, to check this script")
    parser.add_argument("--compile", action="store_true", help="with --smoke, time torch.compile too (slow)")
    args = parser.parse_args(argv)

    if args.smoke:
        device, shapes = torch.device("cpu"), SMOKE_SHAPES
        settings = {"warmup": 1, "iters": 1, "repeats": 1}
        impls = implementations(compile_too=args.compile, triton_too=kernels.interpreted())
        out = Path(args.out) if args.out else None
    else:
        if not torch.cuda.is_available():
            print("benchmarks/kernels.py: no CUDA device here, and the kernels are timed only on one; nothing to do")
            return 0
        if not kernels.triton_available():
            print("benchmarks/kernels.py: triton does not import here; timing eager PyTorch and torch.compile only")
        device = torch.device("cuda")
        unknown = [s for s in args.shapes.split(",") if s not in SHAPES]
        if unknown:
            parser.error(f"--shapes: unknown {', '.join(unknown)}; choose from {', '.join(SHAPES)}")
        shapes = {s: SHAPES[s] for s in args.shapes.split(",")}
        settings = {"warmup": 3, "iters": 10, "repeats": 5}
        impls = implementations(compile_too=True, triton_too=kernels.triton_available())
        out = Path(args.out or ROOT / "benchmarks" / "results" / "kernels.json")

    dtype = DTYPES[args.dtype]
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor()})",
        "torch": torch.__version__,
        "triton": getattr(sys.modules.get("triton"), "__version__", None),
        "dtype": args.dtype,
        "shapes": [],
    }
    for name, shape in shapes.items():
        print(f"{name}: {shape}", flush=True)
        rows = kernel_rows(shape, dtype, device, impls, settings) + step_rows(shape, dtype, device, impls, settings)
        add_speedups(rows)
        report["shapes"].append({"name": name, "config": shape, "rows": rows})
    text = markdown(report)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".md").write_text(text)
        print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
