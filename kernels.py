"""
Fused kernels for train.py's hot spots: Triton on CUDA, the plain PyTorch ops everywhere else. Fixed: a child's
train.py imports this module and never edits it; the harness's metric never runs it (prepare.py computes the
cross-entropy itself, from the logits of the exported graph, and exporting takes the PyTorch path).

    rms_norm(x, weight=None, eps=None)                       F.rms_norm over the last dimension
    apply_rotary(x, cos, sin)                                rotary embedding of x [B, T, H, D] (half-split pairs)
    linear_cross_entropy(h, weight, targets, softcap=0.0)    mean cross-entropy of softcap(h @ weight.T), chunked

One switch, use_triton(x), decides per call: Triton for CUDA tensors when triton imports, PyTorch otherwise, and
PyTorch whenever torch.compile or torch.export is tracing (they capture and fuse the plain ops themselves, and an
exported graph must not need this module to run). The PyTorch path of each function is, op for op, what train.py
did before these kernels existed, so results on CPU are bit for bit the same. Tests force the Triton path on CPU
under Triton's interpreter (TRITON_INTERPRET=1, set before this module is imported) with backend("triton"), or
with EVO_KERNELS=triton|torch|auto in the environment of a whole run.

Ours or theirs: all three kernels are ours. liger-kernel (the obvious library: RMSNorm, RoPE and a fused linear
cross-entropy with softcap) was tried first. Under Triton 3.9's interpreter, liger-kernel 0.8.5's RMSNorm, and its
fused linear cross-entropy once given a softcap (the seed has one), stop with an error (the kernels call `.to()` on
Python float arguments), so they could not be tested on the CPU-only machines this project's tests run on; its
cross-entropy without a softcap and its RoPE do run there. Each kernel's own comment says what else did not fit.
None of ours uses atomics: a weight's gradient is summed from per-program partial rows, so the Triton path gives
the same bits run after run on one GPU.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:  # no wheel for this platform: every call takes the PyTorch path
    triton = None

BACKENDS = ("auto", "triton", "torch")


def _checked(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"the kernel backend must be one of {', '.join(BACKENDS)}; got {name!r}")
    return name


_backend = _checked(os.environ.get("EVO_KERNELS", "auto"))
_is_exporting = getattr(torch.compiler, "is_exporting", lambda: False)  # torch < 2.5 has only is_compiling


# ---------------------------------------------------------------------------
# The switch
# ---------------------------------------------------------------------------

def triton_available() -> bool:
    """Whether triton imported (on CPU its kernels run only under TRITON_INTERPRET=1)."""
    return triton is not None


def interpreted() -> bool:
    """Whether this module's Triton kernels run in Triton's interpreter (TRITON_INTERPRET=1 at import)."""
    return triton is not None and type(_rms_norm_forward_kernel).__name__ == "InterpretedFunction"


def get_backend() -> str:
    return _backend


def set_backend(name: str) -> str:
    """Sets the backend ("auto", "triton" or "torch") for every later call; returns the previous one."""
    global _backend
    previous, _backend = _backend, _checked(name)
    return previous


@contextmanager
def backend(name: str):
    """Within the block, kernels use this backend: "auto" (Triton on CUDA), "triton" (always) or "torch" (never)."""
    previous = set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def use_triton(x: torch.Tensor) -> bool:
    """The one switch: True when a kernel on x should run the Triton kernel, False for the PyTorch ops."""
    if _backend == "torch" or torch.compiler.is_compiling() or _is_exporting():
        return False
    if _backend == "auto":
        return triton is not None and x.is_cuda
    if triton is None:
        raise RuntimeError("the kernel backend is 'triton' but triton does not import here")
    if not x.is_cuda and not interpreted():
        raise RuntimeError("Triton kernels on CPU tensors need TRITON_INTERPRET=1 set before kernels is imported")
    return True


def _row_block(n_cols_block: int, n_rows: int, elements: int = 4096) -> int:
    """Rows per program so that a program's tile holds about `elements` values (more rows when rows are short)."""
    return max(1, min(triton.next_power_of_2(n_rows), elements // n_cols_block))


def _warps(block_elements: int) -> int:
    return 8 if block_elements >= 4096 else 4


# ---------------------------------------------------------------------------
# RMSNorm
# ---------------------------------------------------------------------------
# Ours: one pass over a tile of rows, fp32 statistics, the reciprocal RMS kept for the backward. liger-kernel's
# RMSNorm needs a weight (the seed has none) and would compute a weight gradient we would throw away.

MAX_NORM_WIDTH = 65536  # wider rows take the PyTorch path (a row must fit one tile)

if triton is not None:

    @triton.jit
    def _rms_norm_forward_kernel(X, W, Y, RSTD, n_rows, n_cols, x_stride, y_stride, eps,
                                 HAS_WEIGHT: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr):
        rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        cols = tl.arange(0, BLOCK_COLS)
        row_ok = rows < n_rows
        mask = row_ok[:, None] & (cols[None, :] < n_cols)
        x = tl.load(X + rows[:, None] * x_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        rstd = tl.rsqrt(tl.sum(x * x, axis=1) / n_cols + eps)
        y = x * rstd[:, None]
        if HAS_WEIGHT:
            w = tl.load(W + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
            y = y * w[None, :]
        tl.store(Y + rows[:, None] * y_stride + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)
        tl.store(RSTD + rows, rstd, mask=row_ok)

    @triton.jit
    def _rms_norm_backward_kernel(DY, X, W, RSTD, DX, DW_PARTIAL, n_rows, n_cols, dy_stride, x_stride, dx_stride,
                                  HAS_WEIGHT: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr):
        pid = tl.program_id(0)
        rows = pid.to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        cols = tl.arange(0, BLOCK_COLS)
        row_ok = rows < n_rows
        col_ok = cols < n_cols
        mask = row_ok[:, None] & col_ok[None, :]
        dy = tl.load(DY + rows[:, None] * dy_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        x = tl.load(X + rows[:, None] * x_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + rows, mask=row_ok, other=0.0)
        x_hat = x * rstd[:, None]
        if HAS_WEIGHT:
            w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
            g = dy * w[None, :]
        else:
            g = dy
        # d/dx of x * rstd(x): rstd * (g - x_hat * mean(g * x_hat))
        c = tl.sum(g * x_hat, axis=1) / n_cols
        dx = (g - x_hat * c[:, None]) * rstd[:, None]
        tl.store(DX + rows[:, None] * dx_stride + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)
        if HAS_WEIGHT:
            # one partial row per program, summed by the caller: deterministic, no atomics
            tl.store(DW_PARTIAL + pid * n_cols + cols, tl.sum(dy * x_hat, axis=0), mask=col_ok)


def _as_rows(t: torch.Tensor) -> torch.Tensor:
    """t as [rows, last dim] with unit stride along the last dim (a view when the layout allows)."""
    rows = t.reshape(-1, t.size(-1))
    return rows if rows.stride(-1) == 1 else rows.contiguous()


def _default_eps(dtype: torch.dtype) -> float:
    """F.rms_norm's eps when none is given: the machine epsilon of the dtype it computes in."""
    compute = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    return torch.finfo(compute).eps


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        x2 = _as_rows(x)
        n_rows, n_cols = x2.shape
        y = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
        rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
        block_cols = triton.next_power_of_2(n_cols)
        block_rows = _row_block(block_cols, n_rows)
        grid = (triton.cdiv(n_rows, block_rows),)
        _rms_norm_forward_kernel[grid](x2, weight if weight is not None else x2, y, rstd, n_rows, n_cols,
                                       x2.stride(0), y.stride(0), eps, HAS_WEIGHT=weight is not None,
                                       BLOCK_ROWS=block_rows, BLOCK_COLS=block_cols,
                                       num_warps=_warps(block_rows * block_cols))
        ctx.save_for_backward(x2, weight, rstd)
        ctx.shape = x.shape
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x2, weight, rstd = ctx.saved_tensors
        dy2 = _as_rows(dy)
        n_rows, n_cols = x2.shape
        dx = torch.empty((n_rows, n_cols), dtype=x2.dtype, device=x2.device)
        block_cols = triton.next_power_of_2(n_cols)
        block_rows = _row_block(block_cols, n_rows)
        grid = (triton.cdiv(n_rows, block_rows),)
        dw_partial = (torch.empty((grid[0], n_cols), dtype=torch.float32, device=x2.device)
                      if weight is not None else dx)
        _rms_norm_backward_kernel[grid](dy2, x2, weight if weight is not None else x2, rstd, dx, dw_partial,
                                        n_rows, n_cols, dy2.stride(0), x2.stride(0), dx.stride(0),
                                        HAS_WEIGHT=weight is not None, BLOCK_ROWS=block_rows,
                                        BLOCK_COLS=block_cols, num_warps=_warps(block_rows * block_cols))
        dw = dw_partial.sum(0).to(weight.dtype) if weight is not None and ctx.needs_input_grad[1] else None
        return dx.view(ctx.shape), dw, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float | None = None) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) over the last dimension, times weight when given: F.rms_norm(x, (D,), weight, eps).
    eps=None means F.rms_norm's default (the machine epsilon of the compute dtype)."""
    if use_triton(x) and x.size(-1) <= MAX_NORM_WIDTH and x.numel() > 0:
        return _RMSNorm.apply(x, weight, _default_eps(x.dtype) if eps is None else float(eps))
    return F.rms_norm(x, (x.size(-1),), weight, eps)


# ---------------------------------------------------------------------------
# Rotary embedding
# ---------------------------------------------------------------------------
# Ours: rotates one tensor in the [B, T, H, D] layout train.py produces (q and k straight out of the qkv view,
# strided, no copy), with half-width cos/sin tables broadcast by strides. liger-kernel's RoPE rotates q and k
# together in [B, H, T, D] with full-width (duplicated) tables, which would cost a transpose and a table copy.
# The backward is the same rotation by the opposite angle.

if triton is not None:

    @triton.jit
    def _rotary_kernel(X, COS, SIN, Y, n_rows, T, H, half, sxb, sxt, sxh, scb, sct, sch, scd, ssb, sst, ssh, ssd,
                       INVERSE: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_HALF: tl.constexpr):
        rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        cols = tl.arange(0, BLOCK_HALF)
        h = rows % H
        t = (rows // H) % T
        b = rows // (H * T)
        mask = (rows < n_rows)[:, None] & (cols < half)[None, :]
        x_at = (b * sxb + t * sxt + h * sxh)[:, None] + cols[None, :]
        x1 = tl.load(X + x_at, mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(X + x_at + half, mask=mask, other=0.0).to(tl.float32)
        c = tl.load(COS + (b * scb + t * sct + h * sch)[:, None] + cols[None, :] * scd, mask=mask, other=0.0)
        s = tl.load(SIN + (b * ssb + t * sst + h * ssh)[:, None] + cols[None, :] * ssd, mask=mask, other=0.0)
        c = c.to(tl.float32)
        s = s.to(tl.float32)
        if INVERSE:
            s = -s
        y_at = rows[:, None] * (2 * half) + cols[None, :]
        tl.store(Y + y_at, (x1 * c - x2 * s).to(Y.dtype.element_ty), mask=mask)
        tl.store(Y + y_at + half, (x1 * s + x2 * c).to(Y.dtype.element_ty), mask=mask)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, out_dtype: torch.dtype, inverse: bool):
    """Launches the rotary kernel: x [B, T, H, D] (any strides but the last), tables broadcastable to
    [B, T, H, D/2]; returns a contiguous [B, T, H, D] tensor of out_dtype."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    B, T, H, D = x.shape
    half = D // 2
    c = cos.broadcast_to((B, T, H, half))
    s = sin.broadcast_to((B, T, H, half))
    y = torch.empty((B, T, H, D), dtype=out_dtype, device=x.device)
    n_rows = B * T * H
    block_half = triton.next_power_of_2(half)
    block_rows = _row_block(block_half, n_rows, elements=2048)
    grid = (triton.cdiv(n_rows, block_rows),)
    _rotary_kernel[grid](x, c, s, y, n_rows, T, H, half, x.stride(0), x.stride(1), x.stride(2),
                         *c.stride(), *s.stride(), INVERSE=inverse, BLOCK_ROWS=block_rows, BLOCK_HALF=block_half,
                         num_warps=_warps(2 * block_rows * block_half))
    return y


class _Rotary(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        ctx.x_dtype = x.dtype
        return _rotate(x, cos, sin, torch.promote_types(x.dtype, cos.dtype), inverse=False)

    @staticmethod
    def backward(ctx, dy):
        cos, sin = ctx.saved_tensors
        return _rotate(dy, cos, sin, ctx.x_dtype, inverse=True), None, None  # the tables are constants


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding: x [B, T, H, D] split into halves x1, x2 along D, returns cat(x1*cos - x2*sin,
    x1*sin + x2*cos); cos and sin broadcast to [B, T, H, D/2] (train.py's are [1, T, 1, D/2]) and get no gradient
    on the Triton path."""
    if (use_triton(x) and x.dim() == 4 and x.size(-1) % 2 == 0 and x.numel() > 0
            and not (cos.requires_grad or sin.requires_grad)):
        return _Rotary.apply(x, cos, sin)
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


# ---------------------------------------------------------------------------
# Cross-entropy over the vocabulary, fused with the output layer and the softcap
# ---------------------------------------------------------------------------
# Ours: rows are taken a chunk at a time; a chunk's logits come from one matmul, the kernel turns them in place into
# the gradient of the loss (softmax minus one-hot, times the softcap's derivative) while it computes the loss, and
# two matmuls fold that gradient into the gradients of h and of the weight. So the full [N, V] float32 logits
# never exist, and the backward is a scaling of gradients computed in the forward (three matmuls, not four).
# liger-kernel's fused linear cross-entropy does the same; it is not used for the reason in the module docstring.

if triton is not None:

    @triton.jit
    def _tanh(u):
        # exact at both tails: exp overflows to inf (gives 1) or underflows to 0 (gives -1)
        return 1.0 - 2.0 / (tl.exp(2.0 * u) + 1.0)

    @triton.jit
    def _cross_entropy_kernel(LOGITS, TARGETS, LOSS, n_cols, logits_stride, softcap, ignore_index,
                              HAS_SOFTCAP: tl.constexpr, HAS_GRAD: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        logits = LOGITS + row * logits_stride
        target = tl.load(TARGETS + row)
        valid = target != ignore_index

        m = float("-inf")  # running max and sum of exp(z - m): logsumexp in one pass over the row
        d = 0.0
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            z = tl.load(logits + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
            if HAS_SOFTCAP:
                z = softcap * _tanh(z / softcap)
            z = tl.where(cols < n_cols, z, float("-inf"))
            m_new = tl.maximum(m, tl.max(z, axis=0))
            d = d * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), axis=0)
            m = m_new
        lse = m + tl.log(d)

        z_target = tl.load(logits + target, mask=valid, other=0.0).to(tl.float32)
        if HAS_SOFTCAP:
            z_target = softcap * _tanh(z_target / softcap)
        tl.store(LOSS + row, tl.where(valid, lse - z_target, 0.0))

        if HAS_GRAD:
            # d loss_row / d logits = (softmax(z) - onehot(target)) * dz/dlogits, written over the logits
            for start in range(0, n_cols, BLOCK):
                cols = start + tl.arange(0, BLOCK)
                raw = tl.load(logits + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
                if HAS_SOFTCAP:
                    t = _tanh(raw / softcap)
                    z = softcap * t
                else:
                    z = raw
                g = tl.exp(z - lse) - tl.where(cols == target, 1.0, 0.0)
                if HAS_SOFTCAP:
                    g = g * (1.0 - t * t)
                g = tl.where(valid, g, 0.0)
                tl.store(logits + cols, g.to(LOGITS.dtype.element_ty), mask=cols < n_cols)


MAX_CE_BLOCK = 8192  # vocabulary columns one program holds at a time


def _chunk_rows(n_rows: int, vocab: int, width: int) -> int:
    """Rows per chunk so that a chunk's logits take about as much memory as h itself (liger-kernel's rule)."""
    return min(n_rows, triton.next_power_of_2(triton.cdiv(n_rows, triton.cdiv(vocab, width))))


def _compute_dtype(h: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype F.linear(h, weight) would compute in: autocast's where it is on, else the promoted input dtype."""
    if torch.is_autocast_enabled(h.device.type):
        return torch.get_autocast_dtype(h.device.type)
    return torch.promote_types(h.dtype, weight.dtype)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, targets, softcap, ignore_index, chunk_rows, block_cols, grad_enabled):
        dtype = _compute_dtype(h, weight)
        h2 = _as_rows(h).to(dtype)
        w = weight.to(dtype)
        t = targets.reshape(-1)
        n_rows, width = h2.shape
        vocab = w.shape[0]
        # needs_input_grad says True under torch.no_grad() too: the caller's grad mode decides
        need_h, need_w = grad_enabled and ctx.needs_input_grad[0], grad_enabled and ctx.needs_input_grad[1]
        rows = chunk_rows or _chunk_rows(n_rows, vocab, width)
        block = block_cols or min(triton.next_power_of_2(vocab), MAX_CE_BLOCK)
        loss_rows = torch.empty(n_rows, dtype=torch.float32, device=h.device)
        grad_h = torch.empty_like(h2) if need_h else None
        grad_w = torch.zeros(w.shape, dtype=torch.float32, device=h.device) if need_w else None
        with torch.autocast(h.device.type, enabled=False):  # the dtypes are settled above
            for start in range(0, n_rows, rows):
                end = min(start + rows, n_rows)
                h_chunk = h2[start:end]
                logits = h_chunk @ w.t()  # [rows, V]
                _cross_entropy_kernel[(end - start,)](logits, t[start:end], loss_rows[start:end], vocab,
                                                      logits.stride(0), softcap, ignore_index,
                                                      HAS_SOFTCAP=softcap != 0.0, HAS_GRAD=need_h or need_w,
                                                      BLOCK=block, num_warps=_warps(block))
                # the logits now hold d loss_row / d logits
                if need_h:
                    torch.mm(logits, w, out=grad_h[start:end])
                if need_w:
                    if logits.dtype == torch.float32:
                        grad_w.addmm_(logits.t(), h_chunk)
                    else:
                        grad_w += (logits.t() @ h_chunk).float()
        n_valid = (t != ignore_index).sum()
        ctx.save_for_backward(grad_h, grad_w, n_valid)
        ctx.h_shape, ctx.h_dtype, ctx.w_dtype = h.shape, h.dtype, weight.dtype
        return loss_rows.sum() / n_valid

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w, n_valid = ctx.saved_tensors
        scale = grad_loss.float() / n_valid
        dh = (grad_h.float() * scale).to(ctx.h_dtype).view(ctx.h_shape) if grad_h is not None else None
        dw = (grad_w * scale).to(ctx.w_dtype) if grad_w is not None else None
        return dh, dw, None, None, None, None, None, None


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, softcap: float = 0.0,
                         ignore_index: int = -100, *, chunk_rows: int | None = None,
                         block_cols: int | None = None) -> torch.Tensor:
    """Mean cross-entropy of the logits softcap * tanh((h @ weight.T) / softcap) (no cap when softcap is 0) against
    targets, over the targets that are not ignore_index: h [..., C], weight [V, C] (an output layer without bias),
    targets [...]. The same value as F.cross_entropy on the float32 logits; the Triton path never holds more than
    chunk_rows rows of logits (chunk_rows and block_cols are tuning knobs: None picks them from the shapes)."""
    if use_triton(h) and h.numel() > 0:
        return _LinearCrossEntropy.apply(h, weight, targets, float(softcap or 0.0), int(ignore_index), chunk_rows,
                                         block_cols, torch.is_grad_enabled())
    logits = F.linear(h, weight).float()
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=ignore_index)
