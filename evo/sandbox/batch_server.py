"""The harness side of a training run: serves batches, counts the budget, receives the model.

It runs in the evaluating process (a thread per training run), never in the training process, so nothing the
child does can change what it counts. It answers the requests of evo.sandbox.child.channel:

- batches are drawn here from the training split with the harness seed: the same rows, in the same order, as
  `torch.randint(0, n, (B,), generator=torch.Generator().manual_seed(seed))` draws (numpy's MT19937 with the
  same seeding gives the same 32-bit stream);
- a token budget serves a batch only while it fits in what is left: a batch bigger than that ends the run;
- a seconds budget is the server's clock: it ends at the serving deadline fixed when the first batch is served,
  `seconds` later and never past the training process's start + STARTUP_ALLOWANCE + seconds (work before the
  first batch is not free beyond the allowance). Nothing the child does later moves it. The server serves a batch
  only while its own estimate of one more step (the latest gap between batch requests, scaled by the requested
  batch's tokens against the previous one's) ends by the deadline, so an honest child's last step ends inside the
  budget, and a child that asks rarely only loses batches;
- a token budget serves a batch only while it fits in what is left: a batch bigger than that ends the run, and
  so does serving a batch that leaves less than itself;
- from the budget's end (a seconds budget's deadline, or the weights where they come first; a token budget's refused
  request or last batch that fit) the child has the weights allowance to hand over its weights (a plain copy of its
  parameters and buffers) and HANDOVER_ALLOWANCE to hand over its graph (the slower export), each once, as payloads
  written to files only the scorer reads. The scorer accepts the graph only with those weights, byte for byte, so
  training after the budget buys at most the weights allowance (`deadline()`; `overrun()` checks the arrival times
  again after the phase). The allowance is fixed, never learned from the child: for a seconds budget
  min(WEIGHTS_ALLOWANCE, WEIGHTS_SHARE * seconds), which covers the copy alone; for a token budget, whose compute
  per token is not budgeted anyway, HANDOVER_ALLOWANCE, which also covers the last step; for a pre-flight (not
  scored, its one step the slow first one) HANDOVER_ALLOWANCE. Measured (benchmarks/results/post_budget.md): a child
  that trains on and hands over at the last moment it can ends ok with at most 0.49 s / 4.54 s / 4.53 s of training
  after a 5 s / 60 s / 300 s budget, and `timeout` when it aims at the allowance itself;
- tokens, steps and training seconds in the result are counted here;
- whatever the child sends, the thread records a violation (a broken protocol, in one line) and closes the
  channel; it never dies of an exception, and the sandbox ends the phase at once (`deadline()`).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evo.errors import first_line
from evo.sandbox.budget import Budget
from evo.sandbox.child.channel import (
    ChannelError,
    copy_payload,
    payload_size,
    receive_header,
    send,
)

STARTUP_ALLOWANCE = 30.0     # seconds a seconds-budget run may spend before its first batch without losing budget
WEIGHTS_ALLOWANCE = 5.0      # at most these seconds from a seconds budget's end to the weights' arrival (the copy)
WEIGHTS_SHARE = 0.1          # ... and at most this share of the budget
SCHEDULING_TOLERANCE = 0.25  # seconds the first batch to the weights may exceed the budget + allowance by
HANDOVER_ALLOWANCE = 30.0    # seconds from the budget's end to the graph's arrival (export and upload)
MAX_BATCH_TOKENS = 1 << 24   # one batch's B * T: a bigger request is a protocol error, not an allocation
MAX_MODEL_BYTES = 1 << 34


@dataclass(frozen=True)
class ServeSettings:
    seed: int
    budget: Budget
    vocab_size: int
    threads: int | None
    max_batches: int | None = None   # serve this many batches and no more, whatever the budget (a pre-flight)
    max_payload: int = MAX_MODEL_BYTES  # bytes one handed-over payload (weights, graph) may take: the disk limit


class BatchServer(threading.Thread):
    """Serves one training process over sock (see the module docstring); writes its model to model_path."""

    def __init__(self, sock: socket.socket, train_bin: Path, settings: ServeSettings, model_path: Path,
                 weights_path: Path, started: float | None = None):
        super().__init__(daemon=True, name="evo-batch-server")
        self.sock, self.settings, self.model_path, self.weights_path = sock, settings, model_path, weights_path
        self.data = np.memmap(train_bin, dtype=np.uint16, mode="r")
        self.rng = np.random.RandomState(settings.seed & 0xFFFFFFFF)
        self.started = time.monotonic() if started is None else started
        self.first_batch: float | None = None
        self.last_batch: float | None = None   # when the latest batch was served, and its B * T
        self.last_tokens = 0
        self.budget_end: float | None = None   # when the budget ran out (the handover clock starts)
        self.end_reason = "the budget is spent"
        self.weighed: float | None = None      # when the weights arrived
        self.submitted: float | None = None
        self.tokens = 0
        self.steps = 0
        self.info: dict = {}                   # what the child said of its model (device, memory): not trusted
        self.violation: str | None = None      # a broken protocol, in one line
        self.violated: float | None = None     # when it was recorded

    # -- the budget ---------------------------------------------------------------------------------------

    def _serving_deadline(self) -> float | None:
        seconds = self.settings.budget.seconds
        if seconds is None or self.first_batch is None:
            return None
        return min(self.first_batch + seconds, self.started + STARTUP_ALLOWANCE + seconds)

    def progress(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        if self.settings.budget.tokens is not None:
            return min(1.0, self.tokens / self.settings.budget.tokens)
        deadline = self._serving_deadline()
        if deadline is None:
            return 0.0
        return min(1.0, max(0.0, 1.0 - (deadline - now) / self.settings.budget.seconds))

    def budget_over(self) -> float | None:
        """When the budget ended (or, for a seconds budget, will end at the latest), if that is known yet."""
        if self.budget_end is not None:
            return self.budget_end
        deadline = self._serving_deadline()
        if deadline is not None:
            return deadline
        seconds = self.settings.budget.seconds
        return None if seconds is None else self.started + STARTUP_ALLOWANCE + seconds

    def weights_allowance(self) -> float:
        """Seconds from the budget's end to the weights' arrival: fixed by the settings (see the module docstring)."""
        seconds = self.settings.budget.seconds
        if self.settings.max_batches is not None or seconds is None:
            return HANDOVER_ALLOWANCE
        return min(WEIGHTS_ALLOWANCE, WEIGHTS_SHARE * seconds)

    def deadline(self) -> float | None:
        """The monotonic time by which the next handover (weights, then graph) must have arrived, when known;
        the moment of a violation once there is one (the phase is over)."""
        if self.violated is not None:
            return self.violated
        end = self.budget_over()
        if self.submitted is not None or end is None:
            return None
        return end + (self.weights_allowance() if self.weighed is None else HANDOVER_ALLOWANCE)

    def overrun(self) -> str | None:
        """Why the handover was late by the server's own record, if it was: the weights after their allowance,
        the graph after its, or, for a seconds budget, more than the budget + the allowance from the first batch
        to the weights. (The sandbox polls deadline(), so a handover a fraction of a second late can slip past
        it; this is the check that counts.)"""
        end = self.budget_end
        if self.weighed is None or end is None:
            return None
        allowance = self.weights_allowance()
        if self.weighed > end + allowance:
            return (f"the weights arrived {self.weighed - end:.2f} s after the budget's end, "
                    f"past the allowance of {allowance:.3g} s")
        if self.submitted is not None and self.submitted > end + HANDOVER_ALLOWANCE:
            return (f"the graph arrived {self.submitted - end:.2f} s after the budget's end, "
                    f"past the allowance of {HANDOVER_ALLOWANCE:g} s")
        seconds = self.settings.budget.seconds
        if seconds is not None and self.settings.max_batches is None and self.first_batch is not None:
            trained = self.weighed - self.first_batch
            if trained > seconds + allowance + SCHEDULING_TOLERANCE:
                return f"trained {trained:.2f} s on a budget of {seconds:g} s (+ {allowance:.3g} s to hand over)"
        return None

    def late(self) -> str:
        """What did not arrive in time, for the timeout's reason."""
        if self.weighed is None:
            return f"the weights did not arrive within {self.weights_allowance():.3g} s of the budget's end"
        return f"the graph did not arrive within {HANDOVER_ALLOWANCE:g} s of the budget's end"

    def training_seconds(self) -> float | None:
        """From the first batch to the weights' arrival (the end of the last step), or to the budget's end (a
        seconds budget's deadline where no request found it over)."""
        if self.first_batch is None:
            return None
        now = time.monotonic()
        end = self.weighed or self.budget_end or self.submitted or min(now, self.budget_over() or now)
        return round(end - self.first_batch, 3)

    def _close(self, why: str, now: float) -> None:
        """Ends the budget at now; a seconds budget ends at its deadline, or at the weights where they come first.
        Nothing later moves it."""
        if self.budget_end is None:
            deadline = self._serving_deadline()
            self.budget_end, self.end_reason = (now if deadline is None else min(now, deadline)), why

    def _end(self, why: str, now: float) -> dict:
        """A refused request: serving is over. A seconds budget still ends at its deadline (the child may train
        on what it holds until then), never at the moment of a refusal, early or late."""
        deadline = self._serving_deadline()
        self._close(why, now if deadline is None else deadline)
        return {"end": self.end_reason}

    def _step_estimate(self, tokens: int, now: float) -> float:
        """Seconds one more step on a batch of `tokens` will take, by the latest gap between batch requests."""
        if self.last_batch is None or not self.last_tokens:
            return 0.0
        return (now - self.last_batch) * tokens / self.last_tokens

    def _batch(self, header: dict) -> tuple[dict, bytes | None]:
        B, T = header.get("B"), header.get("T")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (B, T)):
            return {"error": f"a batch needs integers B >= 1 and T >= 1; got B={B!r}, T={T!r}"}, None
        if B * T > MAX_BATCH_TOKENS:
            return {"error": f"a batch of {B} x {T} tokens is over the limit of {MAX_BATCH_TOKENS:,}"}, None
        n = len(self.data) - T - 1
        if n <= 0:
            return {"error": f"the training split has {len(self.data)} tokens, too few for sequences of {T}"}, None
        now = time.monotonic()
        if self.budget_end is not None:
            return {"end": self.end_reason}, None
        if self.first_batch is None:
            self.first_batch = now
        tokens = self.settings.budget.tokens
        if self.settings.max_batches is None and tokens is not None and self.tokens + B * T > tokens:
            return self._end("the token budget is spent", now), None
        deadline = self._serving_deadline()
        if deadline is not None and now >= deadline:
            return self._end("the time budget is spent", now), None
        if deadline is not None and now + self._step_estimate(B * T, now) > deadline:
            return self._end("the time budget is spent (one more step would end after it)", now), None
        self.last_batch, self.last_tokens = now, B * T
        if n < 1 << 32:
            starts = (self.rng.randint(0, 1 << 32, size=B, dtype=np.uint64) % n).astype(np.int64)
        else:
            starts = self.rng.randint(0, n, size=B, dtype=np.int64)
        rows = np.asarray(self.data[starts[:, None] + np.arange(T + 1)], dtype=np.uint16)
        self.tokens += B * T
        self.steps += 1
        left = None if self.settings.budget.tokens is None else self.settings.budget.tokens - self.tokens
        full = self.settings.max_batches is not None and self.steps >= self.settings.max_batches
        if full or (self.settings.max_batches is None and left is not None and left < B * T):
            # another batch like this one would not fit: the last step is running, and the handover clock starts
            self.budget_end = now
            self.end_reason = "the pre-flight's batch is served" if full else "the token budget is spent"
        return {"rows": [B, T + 1], "progress": self.progress(now)}, rows.tobytes()

    # -- the conversation ---------------------------------------------------------------------------------

    def _answer(self, header: dict) -> tuple[dict, bytes | None]:
        op = header.get("op")
        if self.submitted is not None:
            return {"error": "the model was already submitted"}, None
        if op == "hello":
            s = self.settings
            return {"seed": s.seed, **s.budget.fields(), "vocab_size": s.vocab_size, "threads": s.threads}, None
        if op == "batch":
            return self._batch(header)
        if op == "progress":
            return {"progress": self.progress()}, None
        return {"error": f"unknown request {op!r}"}, None

    def _receive(self, header: dict, path: Path) -> float:
        n = payload_size(header, self.settings.max_payload)
        if n is None:
            raise ChannelError(f"a {header.get('op')} without its payload")
        with open(path, "wb") as out:
            copy_payload(self.sock, n, out)
        return time.monotonic()

    def _receive_model(self, header: dict) -> None:
        now = self._receive(header, self.model_path)
        self.submitted = now
        self._close("the model is submitted", now)
        self.info = {k: header[k] for k in ("device", "peak_memory_mb") if isinstance(header.get(k), (str, int, float))}

    def _violate(self, why: str) -> None:
        if self.violation is None:
            self.violation, self.violated = why, time.monotonic()

    def run(self) -> None:
        try:
            while True:
                try:
                    header = receive_header(self.sock)
                except ChannelError as e:
                    if str(e) != "the channel closed":
                        self._violate(str(e))
                    return
                if header.get("op") == "weights" and self.weighed is None and self.submitted is None:
                    self.weighed = self._receive(header, self.weights_path)
                    self._close("the weights are handed over", self.weighed)  # nothing more is served after them
                    send(self.sock, {"ok": True})
                    continue
                if header.get("op") == "submit" and self.submitted is None:
                    if self.weighed is None:
                        raise ChannelError("the graph came before the weights")
                    self._receive_model(header)
                    send(self.sock, {"ok": True})
                    continue
                if payload_size(header, 0):
                    raise ChannelError("a request other than submit carried a payload")
                answer, payload = self._answer(header)
                send(self.sock, answer, payload)
        except (ChannelError, OSError) as e:
            self._violate(str(e))
        except Exception as e:  # anything else the child's input set off: recorded, never a dead thread
            self._violate(f"a request the harness could not handle ({first_line(e, 200, typed=True)})")
        finally:
            try:
                self.sock.close()
            except OSError:
                pass

    def stats(self) -> dict:
        """What the harness counted: tokens, steps, training seconds."""
        return {"tokens": self.tokens, "num_steps": self.steps, "training_seconds": self.training_seconds()}


def open_channel() -> tuple[socket.socket, socket.socket]:
    """(harness end, training end): the training end is inheritable, to be passed to the training process."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.set_inheritable(True)
    return ours, theirs


def vocab_from_tokenizer(train_dir: Path) -> int:
    """The vocabulary size of a prepared dataset's tokenizer (its BOS id + 1)."""
    return int(json.loads((train_dir / "tokenizer.json").read_text())["bos"]) + 1
