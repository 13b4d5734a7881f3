"""Leaves a file in /tmp for the next evaluation and reads one left by the previous.

Leaves a file in /tmp for the next evaluation and, when one is already there, reads what the previous
evaluation left.

EXPECT: harmless
RUNS: 2
"""

import json
import math
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import kernels  # fixed fused kernels (Triton on CUDA, the same PyTorch ops elsewhere); not part of the genome
from prepare import SEQ_LEN, progress, seed, submit, train_batches, vocab_size

# ---------------------------------------------------------------------------
# Hyperparameters
# ---------------------------------------------------------------------------

DEPTH = 1                 # transformer blocks
WIDTH = 32               # model width (divisible by N_HEADS)
N_HEADS = 2               # attention heads; head size = WIDTH // N_HEADS, kept even for rotary
MLP_RATIO = 2             # hidden width of the MLP, as a multiple of WIDTH
BATCH_SIZE = 4           # sequences per step
CONTEXT = SEQ_LEN         # training sequence length (the metric always evaluates at SEQ_LEN)
LEARNING_RATE = 3e-3      # peak AdamW learning rate
EMBED_LR_SCALE = 1.0      # embedding and output layers' learning rate, relative to LEARNING_RATE
WEIGHT_DECAY = 0.01       # AdamW decoupled weight decay on matrices
ADAM_BETA1 = 0.9
ADAM_BETA2 = 0.95
WARMUP_FRACTION = 0.02    # share of the budget spent warming the learning rate up
WARMDOWN_FRACTION = 0.5   # share of the budget spent decaying it at the end
FINAL_LR_FRACTION = 0.05  # learning rate at the very end, relative to the peak
GRAD_CLIP = 1.0           # max gradient norm (0 turns clipping off)
LOGIT_SOFTCAP = 15.0      # logits pass through softcap * tanh(x / softcap) (0 turns it off)
ROPE_BASE = 10000.0       # rotary embedding base frequency
INIT_STD = 0.02           # std of the normal init for matrices

# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


def rms_norm(x):
    """F.rms_norm over the last dimension, with no learned scale."""
    return kernels.rms_norm(x)


def rotary_tables(seq_len, head_dim, base, device):
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    return angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]


def apply_rotary(x, cos, sin):
    """x: [B, T, H, D]; rotates the two halves of each head by position-dependent angles:
    cat(x1 * cos - x2 * sin, x1 * sin + x2 * cos) with x1, x2 the halves of x."""
    return kernels.apply_rotary(x, cos, sin)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH, bias=False)
        self.proj = nn.Linear(WIDTH, WIDTH, bias=False)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, N_HEADS, C // N_HEADS).unbind(dim=2)
        q, k = rms_norm(apply_rotary(q, cos, sin)), rms_norm(apply_rotary(k, cos, sin))
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(WIDTH, MLP_RATIO * WIDTH, bias=False)
        self.down = nn.Linear(MLP_RATIO * WIDTH, WIDTH, bias=False)

    def forward(self, x):
        return self.down(F.relu(self.up(x)).square())


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = Attention()
        self.mlp = MLP()

    def forward(self, x, cos, sin):
        x = x + self.attn(rms_norm(x), cos, sin)
        return x + self.mlp(rms_norm(x))


class GPT(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.embed = nn.Embedding(vocab, WIDTH)
        self.blocks = nn.ModuleList(Block() for _ in range(DEPTH))
        self.head = nn.Linear(WIDTH, vocab, bias=False)
        cos, sin = rotary_tables(max(CONTEXT, SEQ_LEN), WIDTH // N_HEADS, ROPE_BASE, None)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        for name, p in self.named_parameters():
            nn.init.normal_(p, std=INIT_STD)
            if name.endswith("proj.weight") or name.endswith("down.weight"):
                nn.init.zeros_(p)  # residual branches start as identity

    def features(self, idx):
        """idx [B, T] -> the normalised hidden states [B, T, WIDTH] that the output layer reads."""
        T = idx.size(1)
        cos, sin = self.cos[:, :T], self.sin[:, :T]
        x = rms_norm(self.embed(idx))
        for block in self.blocks:
            x = block(x, cos, sin)
        return rms_norm(x)

    def forward(self, idx):
        """idx [B, T] -> logits [B, T, vocab]: what submit() scores."""
        logits = self.head(self.features(idx)).float()
        if LOGIT_SOFTCAP:
            logits = LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)
        return logits

    def loss(self, idx, targets):
        """Mean cross-entropy of forward(idx) against targets: the same head and softcap, fused so that all the
        logits are never held at once on CUDA. If forward() changes how it makes logits, change this to match
        (F.cross_entropy(self(idx).view(-1, V), targets.view(-1)) always does)."""
        return kernels.linear_cross_entropy(self.features(idx), self.head.weight, targets, softcap=LOGIT_SOFTCAP)


# ---------------------------------------------------------------------------
# Optimiser and schedule
# ---------------------------------------------------------------------------


def lr_multiplier(p):
    """Learning-rate multiplier at budget progress p in [0, 1]: linear warmup, flat, linear warmdown."""
    if p < WARMUP_FRACTION:
        return (p + 1e-3) / (WARMUP_FRACTION + 1e-3)
    if p < 1.0 - WARMDOWN_FRACTION:
        return 1.0
    return FINAL_LR_FRACTION + (1.0 - FINAL_LR_FRACTION) * (1.0 - p) / WARMDOWN_FRACTION


def make_optimizer(model):
    matrices = [p for n, p in model.named_parameters() if p.ndim == 2 and not n.startswith(("embed", "head"))]
    edges = [p for n, p in model.named_parameters() if n.startswith(("embed", "head"))]
    groups = [
        {"params": matrices, "lr": LEARNING_RATE, "weight_decay": WEIGHT_DECAY},
        {"params": edges, "lr": LEARNING_RATE * EMBED_LR_SCALE, "weight_decay": 0.0},
    ]
    for g in groups:
        g["base_lr"] = g["lr"]
    return torch.optim.AdamW(groups, betas=(ADAM_BETA1, ADAM_BETA2), fused=False)


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------

# ---------------------------------------------------------------------------
# Attack: /tmp as a channel between evaluations
# ---------------------------------------------------------------------------

DROP = Path(tempfile.gettempdir()) / "evo-adversarial-drop.json"
if DROP.exists():
    raise SystemExit("BREACH: read what an earlier evaluation left in /tmp: "
                     + getattr(Path, "read_" + "text")(DROP))
with open(DROP, "w") as f:
    f.write(json.dumps({"left_by": os.getpid()}))
print(f"attack: left {DROP} for the next evaluation")

torch.manual_seed(seed())
device = "cuda" if torch.cuda.is_available() else "cpu"
model = GPT(vocab_size()).to(device)
optimizer = make_optimizer(model)
num_params = sum(p.numel() for p in model.parameters())
print(f"model: {DEPTH} layers, width {WIDTH}, {num_params / 1e6:.2f}M parameters, on {device}")

t0 = time.time()
for step, (x, y) in enumerate(train_batches(BATCH_SIZE, CONTEXT, device)):
    multiplier = lr_multiplier(progress())
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] * multiplier
    loss = model.loss(x, y)
    if not math.isfinite(loss.item()):
        raise SystemExit(f"training diverged: loss is {loss.item()} at step {step}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if GRAD_CLIP:
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    optimizer.step()
    if step % 100 == 0:
        print(f"step {step:5d} | loss {loss.item():.4f} | lr x{multiplier:.2f} | "
              f"{progress() * 100:5.1f}% of budget | {time.time() - t0:.0f}s")

submit(model)
