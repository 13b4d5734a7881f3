"""kernels.py: each Triton kernel, run under Triton's interpreter on CPU, against a float64 PyTorch reference;
the PyTorch path against train.py's plain ops, bit for bit; the switch; the seed model exported with Triton forced.

Every output a kernel writes is poisoned first: deterministic mode fills torch.empty() with NaN, so an element a
kernel leaves unwritten shows up as NaN in the comparison.

On a machine with a GPU, EVO_KERNEL_TESTS=cuda runs the same tests on the compiled kernels, with CUDA tensors.
"""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from tests.support.genomes import ROOT, tiny_source

FP32_TOLERANCE = 1e-5  # relative error (max |error| / max |reference|); float32 kernels land near 1e-7
BF16_TOLERANCE = 2e-2


TRITON_IMPORT_ERROR: list[str] = []
MODES = ("interpreter", "cuda")
MODE = os.environ.get("EVO_KERNEL_TESTS", "interpreter")


def _is_triton_module(name: str) -> bool:
    return (name == "triton" or name.startswith("triton.")) and not name.startswith("triton._C")


@pytest.fixture(scope="module")
def kernels():
    """kernels.py with its Triton kernels running in Triton's interpreter, the only way they run on a CPU (where
    triton does not import, kernels.py without them: its PyTorch path is still tested).

    The interpreter is chosen when @triton.jit functions (triton's own and ours) are decorated, so triton and
    kernels are imported here under TRITON_INTERPRET=1. Where something in this process imported triton before
    (torch.export does), that copy is set aside and put back afterwards (its compiled extension is shared);
    otherwise the interpreted copy stays imported, since dropping it leaves nanobind objects to leak at exit.

    With EVO_KERNEL_TESTS=cuda, kernels.py is imported with the compiler instead, for tests on a GPU."""
    if MODE not in MODES:
        pytest.fail(f"EVO_KERNEL_TESTS must be one of {', '.join(MODES)}; got {MODE!r}")
    if MODE == "cuda" and not torch.cuda.is_available():
        pytest.skip("EVO_KERNEL_TESTS=cuda, but there is no CUDA device here")
    previous_env = os.environ.get("TRITON_INTERPRET")
    set_aside = {n: sys.modules.pop(n) for n in list(sys.modules) if _is_triton_module(n) or n == "kernels"}
    if MODE == "cuda":
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        try:
            import triton  # noqa: F401
        except ImportError as e:
            TRITON_IMPORT_ERROR.append(str(e))
        import kernels as module

        assert module.interpreted() == (module.triton_available() and MODE == "interpreter")
        yield module
    finally:
        if set_aside:
            for name in [n for n in list(sys.modules) if _is_triton_module(n) or n == "kernels"]:
                del sys.modules[name]
            sys.modules.update(set_aside)
        if previous_env is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = previous_env


@pytest.fixture
def triton_path(kernels):
    """The Triton path forced (on CPU tensors, or CUDA ones with EVO_KERNEL_TESTS=cuda: the tests' tensors are made
    on the default device), with every freshly allocated float tensor filled with NaN."""
    if not kernels.triton_available():
        pytest.skip(f"triton does not import here ({TRITON_IMPORT_ERROR[-1]}): its kernels cannot run")
    deterministic = torch.are_deterministic_algorithms_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    device = torch.get_default_device()
    torch.set_default_device("cuda" if MODE == "cuda" else "cpu")
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    assert torch.empty(8).isnan().all(), "poisoning is off: unwritten outputs would go unnoticed"
    torch.manual_seed(0)
    try:
        with kernels.backend("triton"):
            yield kernels
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.utils.deterministic.fill_uninitialized_memory = fill
        torch.set_default_device(device)


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want|, NaN (an unwritten element) counted as infinite."""
    err = (got.double() - want).abs()
    if not torch.isfinite(err).all():
        return float("inf")
    return (err.max() / want.abs().max().clamp_min(1e-30)).item()


def leaf(*shape, dtype=torch.float32, scale=1.0):
    return (torch.randn(*shape, dtype=torch.float64) * scale).to(dtype).requires_grad_()


def f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().double().requires_grad_()


# ---------------------------------------------------------------------------
# RMSNorm
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(3, 5, 24), (7, 10), (2, 3, 4, 6), (300, 10), (1, 3), (4, 130)])
@pytest.mark.parametrize("with_weight", [False, True])
def test_rms_norm_matches_float64_reference(triton_path, shape, with_weight):
    x = leaf(*shape)
    weight = leaf(shape[-1]) if with_weight else None
    y = triton_path.rms_norm(x, weight)
    dy = torch.randn_like(y)
    y.backward(dy)

    xd, wd = f64(x), f64(weight) if with_weight else None
    yd = F.rms_norm(xd, (shape[-1],), wd, torch.finfo(torch.float32).eps)
    yd.backward(dy.double())
    assert y.dtype == x.dtype and y.shape == x.shape
    assert rel_error(y, yd) < FP32_TOLERANCE
    assert rel_error(x.grad, xd.grad) < FP32_TOLERANCE
    if with_weight:
        assert rel_error(weight.grad, wd.grad) < FP32_TOLERANCE


def test_rms_norm_of_strided_bfloat16_input(triton_path):
    base = leaf(6, 2, 40, dtype=torch.bfloat16)
    x = base[:, 1, :36]  # rows 80 elements apart, not contiguous
    y = triton_path.rms_norm(x, eps=1e-5)
    y.float().sum().backward()
    xd = f64(x)
    F.rms_norm(xd, (36,), eps=1e-5).sum().backward()
    assert y.dtype == torch.bfloat16
    assert rel_error(y, F.rms_norm(x.detach().double(), (36,), eps=1e-5)) < BF16_TOLERANCE
    assert rel_error(base.grad[:, 1, :36], xd.grad) < BF16_TOLERANCE
    assert (base.grad[:, 0] == 0).all() and (base.grad[:, 1, 36:] == 0).all()


def test_poisoning_catches_rows_a_kernel_leaves_unwritten(triton_path):
    """The check the tests above rely on: a launch that skips the last tile leaves NaN behind."""
    x = torch.randn(300, 10)
    y = torch.empty_like(x)
    rstd = torch.empty(300)
    triton_path._rms_norm_forward_kernel[(1,)](x, x, y, rstd, 300, 10, 10, 10, 1e-6, HAS_WEIGHT=False,
                                               BLOCK_ROWS=256, BLOCK_COLS=16)
    assert torch.isfinite(y[:256]).all()
    assert y[256:].isnan().all()
    assert rel_error(y, F.rms_norm(x.double(), (10,), eps=1e-6)) == float("inf")


# ---------------------------------------------------------------------------
# Rotary embedding
# ---------------------------------------------------------------------------

def rotary_reference(x, cos, sin):
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def tables(T, half, longest=None):
    """cos, sin [1, T, 1, half], sliced from longer tables as train.py's are."""
    angles = torch.randn(longest or T, half) * 3
    return angles.cos()[None, :T, None, :], angles.sin()[None, :T, None, :]


@pytest.mark.parametrize("B, T, H, D", [(2, 5, 3, 10), (1, 7, 1, 6), (3, 4, 2, 2), (2, 33, 3, 12)])
def test_rotary_matches_float64_reference_on_strided_q_and_k(triton_path, B, T, H, D):
    qkv = leaf(B, T, 3, H, D)
    q, k, _ = qkv.unbind(dim=2)  # strided views, as in train.py's attention
    cos, sin = tables(T, D // 2, longest=T + 9)
    yq, yk = triton_path.apply_rotary(q, cos, sin), triton_path.apply_rotary(k, cos, sin)
    dq, dk = torch.randn_like(yq), torch.randn_like(yk)
    torch.autograd.backward((yq, yk), (dq, dk))

    qkvd = f64(qkv)
    qd, kd, _ = qkvd.unbind(dim=2)
    yqd, ykd = rotary_reference(qd, cos.double(), sin.double()), rotary_reference(kd, cos.double(), sin.double())
    torch.autograd.backward((yqd, ykd), (dq.double(), dk.double()))
    assert yq.shape == (B, T, H, D) and yq.dtype == torch.float32
    assert rel_error(yq, yqd) < FP32_TOLERANCE and rel_error(yk, ykd) < FP32_TOLERANCE
    assert rel_error(qkv.grad, qkvd.grad) < FP32_TOLERANCE
    assert (qkv.grad[:, :, 2] == 0).all()


def test_rotary_with_tables_that_vary_by_batch_and_head(triton_path):
    x = leaf(2, 3, 5, 8)
    cos, sin = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4)
    y = triton_path.apply_rotary(x, cos, sin)
    y.backward(torch.ones_like(y))
    xd = f64(x)
    yd = rotary_reference(xd, cos.double(), sin.double())
    yd.backward(torch.ones_like(yd))
    assert rel_error(y, yd) < FP32_TOLERANCE and rel_error(x.grad, xd.grad) < FP32_TOLERANCE


def test_rotary_of_bfloat16_with_float32_tables_promotes_like_pytorch(triton_path):
    x = leaf(2, 6, 2, 10, dtype=torch.bfloat16)
    cos, sin = tables(6, 5)
    y = triton_path.apply_rotary(x, cos, sin)
    y.sum().backward()
    xd = f64(x)
    rotary_reference(xd, cos.double(), sin.double()).sum().backward()
    assert y.dtype == torch.float32 and x.grad.dtype == torch.bfloat16
    assert rel_error(y, rotary_reference(x.detach().double(), cos.double(), sin.double())) < FP32_TOLERANCE
    assert rel_error(x.grad, xd.grad) < BF16_TOLERANCE


# ---------------------------------------------------------------------------
# Cross-entropy fused with the output layer and the softcap
# ---------------------------------------------------------------------------

def cross_entropy_reference(h, weight, targets, softcap):
    logits = h @ weight.t()
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


@pytest.mark.parametrize("softcap", [0.0, 2.5])
@pytest.mark.parametrize("N, C, V, chunk_rows, block_cols", [
    (13, 6, 37, None, None),     # one chunk, one column block
    (13, 6, 37, 5, 16),          # chunks of 5, 5, 3 rows; blocks of 16, 16, 5 columns
    (37, 12, 100, 8, 32),
    (1, 3, 5, None, None),
])
def test_linear_cross_entropy_matches_float64_reference(triton_path, softcap, N, C, V, chunk_rows, block_cols):
    h, weight = leaf(N, C), leaf(V, C, scale=0.7)
    targets = torch.randint(0, V, (N,))
    loss = triton_path.linear_cross_entropy(h, weight, targets, softcap, chunk_rows=chunk_rows,
                                            block_cols=block_cols)
    loss.backward()
    hd, wd = f64(h), f64(weight)
    want = cross_entropy_reference(hd, wd, targets, softcap)
    want.backward()
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert rel_error(loss, want) < FP32_TOLERANCE
    assert rel_error(h.grad, hd.grad) < FP32_TOLERANCE
    assert rel_error(weight.grad, wd.grad) < FP32_TOLERANCE


def test_linear_cross_entropy_with_softcap_batches_ignored_targets_and_a_scaled_gradient(triton_path):
    h, weight = leaf(2, 9, 8, scale=3.0), leaf(29, 8)  # large logits: the softcap matters
    targets = torch.randint(0, 29, (2, 9))
    targets[0, 3] = targets[1, 0] = -100
    loss = triton_path.linear_cross_entropy(h, weight, targets, softcap=15.0, chunk_rows=4, block_cols=8)
    (loss * 3.0).backward()
    hd, wd = f64(h), f64(weight)
    want = cross_entropy_reference(hd, wd, targets, 15.0)
    (want * 3.0).backward()
    assert rel_error(loss, want) < FP32_TOLERANCE
    assert rel_error(h.grad, hd.grad) < FP32_TOLERANCE
    assert (h.grad[0, 3] == 0).all() and (h.grad[1, 0] == 0).all()
    assert rel_error(weight.grad, wd.grad) < FP32_TOLERANCE


def test_linear_cross_entropy_with_a_frozen_weight_and_without_gradients(triton_path):
    h, weight = leaf(11, 6), torch.randn(19, 6)
    targets = torch.randint(0, 19, (11,))
    loss = triton_path.linear_cross_entropy(h, weight, targets, softcap=4.0, chunk_rows=3)
    loss.backward()
    hd = f64(h)
    want = cross_entropy_reference(hd, weight.double(), targets, 4.0)
    want.backward()
    assert rel_error(h.grad, hd.grad) < FP32_TOLERANCE
    with torch.no_grad():
        again = triton_path.linear_cross_entropy(h, weight, targets, softcap=4.0, chunk_rows=3)
    assert rel_error(again, want.detach()) < FP32_TOLERANCE


def test_linear_cross_entropy_under_bfloat16_autocast(triton_path):
    h, weight = leaf(13, 16), leaf(37, 16, scale=0.5)
    targets = torch.randint(0, 37, (13,))
    with torch.autocast(h.device.type, dtype=torch.bfloat16):
        loss = triton_path.linear_cross_entropy(h, weight, targets, softcap=3.0, chunk_rows=6)
    loss.backward()
    hd, wd = f64(h), f64(weight)
    want = cross_entropy_reference(hd, wd, targets, 3.0)
    want.backward()
    assert h.grad.dtype == weight.grad.dtype == torch.float32
    assert rel_error(loss, want) < BF16_TOLERANCE
    assert rel_error(h.grad, hd.grad) < BF16_TOLERANCE and rel_error(weight.grad, wd.grad) < BF16_TOLERANCE


# ---------------------------------------------------------------------------
# The PyTorch path and the switch
# ---------------------------------------------------------------------------

def test_pytorch_path_is_train_pys_plain_ops_bit_for_bit(kernels):
    """On CPU (the "auto" backend) each function is exactly the ops train.py used before the kernels."""
    torch.manual_seed(1)
    x = torch.randn(4, 9, 3, 8, requires_grad=True)
    cos, sin = tables(9, 4)
    h, weight = torch.randn(4, 9, 16, requires_grad=True), torch.randn(50, 16, requires_grad=True)
    targets = torch.randint(0, 50, (4, 9))
    with kernels.backend("auto"):
        assert not kernels.use_triton(x)
        got = (kernels.rms_norm(x), kernels.apply_rotary(x, cos, sin),
               kernels.linear_cross_entropy(h, weight, targets, softcap=15.0))
    logits = F.linear(h, weight).float()
    logits = 15.0 * torch.tanh(logits / 15.0)
    want = (F.rms_norm(x, (8,)), rotary_reference(x, cos, sin),
            F.cross_entropy(logits.view(-1, 50), targets.view(-1)))
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    gx, gh, gw = torch.autograd.grad(sum(t.sum() for t in got), (x, h, weight))
    wx, wh, ww = torch.autograd.grad(sum(t.sum() for t in want), (x, h, weight))
    assert torch.equal(gx, wx) and torch.equal(gh, wh) and torch.equal(gw, ww)


def test_switch_picks_triton_only_for_cuda_or_when_forced(kernels):
    cpu = torch.zeros(2)
    before = kernels.get_backend()
    with kernels.backend("auto"):
        assert kernels.use_triton(cpu) is False
    with kernels.backend("torch"):
        assert kernels.use_triton(cpu) is False
    with kernels.backend("triton"):
        assert kernels.get_backend() == "triton"
        if not kernels.triton_available():
            with pytest.raises(RuntimeError, match="triton does not import"):
                kernels.use_triton(cpu)
        elif kernels.interpreted():
            assert kernels.use_triton(cpu) is True
        else:
            with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
                kernels.use_triton(cpu)
    assert kernels.get_backend() == before
    if torch.cuda.is_available():
        with kernels.backend("auto"):
            assert kernels.use_triton(torch.zeros(2, device="cuda")) is kernels.triton_available()
    with pytest.raises(ValueError, match="one of auto, triton, torch"):
        kernels.set_backend("cuda")


def test_forced_triton_without_the_interpreter_says_what_to_set():
    code = ("import torch, kernels\n"
            "print(kernels.get_backend())\n"
            "try:\n"
            "    kernels.rms_norm(torch.ones(2, 4))\n"
            "except RuntimeError as e:\n"
            "    print(e)\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**env, "EVO_KERNELS": "triton"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "triton"
    assert "TRITON_INTERPRET=1" in lines[1] or "triton does not import" in lines[1]


# ---------------------------------------------------------------------------
# The seed model with the kernels
# ---------------------------------------------------------------------------

def seed_model(source: str, vocab: int):
    """train.py's GPT class, from the part of the source above its Training section (the rest trains)."""
    namespace = {"__name__": "seed_model"}
    exec(compile(source[:source.index("\n# Training\n")], "train.py", "exec"), namespace)
    return namespace["GPT"](vocab)


def test_seed_model_loss_and_gradients_match_between_triton_and_pytorch(triton_path):
    kernels = triton_path
    torch.manual_seed(2)
    model = seed_model(tiny_source(CONTEXT="12"), vocab=97)
    for p in model.parameters():
        p.data.normal_(0, 0.3)  # no zero-initialised branches: every kernel's gradient reaches a parameter
    idx, targets = torch.randint(0, 97, (2, 12)), torch.randint(0, 97, (2, 12))
    results = {}
    for name in ("torch", "triton"):
        with kernels.backend(name):
            loss = model.loss(idx, targets)
            grads = torch.autograd.grad(loss, list(model.parameters()))
        results[name] = (loss, grads)
    (loss_t, grads_t), (loss_k, grads_k) = results["torch"], results["triton"]
    assert rel_error(loss_k, loss_t.double()) < 1e-5
    for (name, _), gt, gk in zip(model.named_parameters(), grads_t, grads_k):
        assert rel_error(gk, gt.double()) < 1e-4, name
    with kernels.backend("torch"):
        logits = model(idx)
    assert rel_error(F.cross_entropy(logits.view(-1, 97), targets.view(-1)), loss_t.double()) < 1e-6


def test_a_child_that_swaps_rms_norm_for_layer_norm_needs_no_change_to_kernels(triton_path):
    kernels = triton_path
    old = "    return kernels.rms_norm(x)\n"
    assert old in tiny_source()
    source = tiny_source(CONTEXT="12").replace(old, "    return F.layer_norm(x, (x.size(-1),))\n")
    torch.manual_seed(4)
    model = seed_model(source, vocab=50)
    idx, targets = torch.randint(0, 50, (2, 12)), torch.randint(0, 50, (2, 12))
    losses = {}
    for name in ("torch", "triton"):
        with kernels.backend(name):
            losses[name] = model.loss(idx, targets)
            losses[name].backward()
    assert rel_error(losses["triton"], losses["torch"].double()) < 1e-5


def test_seed_model_exports_with_triton_forced(triton_path):
    """submit() exports forward(idx) under no_grad: that trace takes the PyTorch path, so the graph needs no
    Triton and no kernels.py to run."""
    kernels = triton_path
    torch.manual_seed(3)
    model = seed_model(tiny_source(CONTEXT="12"), vocab=97).eval()
    idx = torch.randint(0, 97, (2, 12))
    with kernels.backend("triton"), torch.no_grad():
        program = torch.export.export(model, (idx,))
        eager_triton = model(idx)
    with kernels.backend("torch"), torch.no_grad():
        eager_torch = model(idx)
    graph = str(program.graph_module.code)
    assert "triton" not in graph and "kernels" not in graph
    assert torch.equal(program.module()(idx), eager_torch)
    assert rel_error(eager_triton, eager_torch.double()) < 1e-5
