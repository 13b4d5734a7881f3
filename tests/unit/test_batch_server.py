"""evo.batch_server: the harness side of a training run counts the budget itself, serves the same rows the
standalone harness draws, and takes the model once."""

import json
import statistics
import struct
import time

import numpy as np
import pytest
import torch

from evo import batch_server
from evo.batch_server import BatchServer, ServeSettings, open_channel
from evo.channel import ChannelError, TrainingClient


@pytest.fixture
def train_bin(tmp_path):
    path = tmp_path / "train.bin"
    np.random.default_rng(0).integers(0, 1024, size=50_000, dtype=np.uint16).tofile(path)
    return path


def serve(train_bin, tmp_path, **settings):
    ours, theirs = open_channel()
    base = dict(seed=7, budget_seconds=None, budget_tokens=10_000, vocab_size=1024, threads=None)
    server = BatchServer(ours, train_bin, ServeSettings(**{**base, **settings}), tmp_path / "model.bin",
                         tmp_path / "weights.bin")
    server.start()
    return server, TrainingClient(theirs.detach())


def rows(answer_payload, B, T):
    answer, payload = answer_payload
    return None if payload is None else np.frombuffer(payload, dtype=np.uint16).reshape(B, T + 1)


def test_served_rows_are_the_rows_torch_randint_draws_with_the_harness_seed(train_bin, tmp_path):
    server, client = serve(train_bin, tmp_path, budget_tokens=1_000_000)
    data = torch.from_numpy(np.fromfile(train_bin, dtype=np.uint16).astype(np.int64))
    gen = torch.Generator().manual_seed(7)
    for _ in range(5):
        got = rows(client.batch(4, 32), 4, 32)
        starts = torch.randint(0, len(data) - 32 - 1, (4,), generator=gen)
        assert np.array_equal(got, data[starts[:, None] + torch.arange(33)].numpy())


def test_a_batch_bigger_than_what_is_left_ends_the_run_and_the_counts_are_the_servers(train_bin, tmp_path):
    server, client = serve(train_bin, tmp_path, budget_tokens=1000)
    assert rows(client.batch(3, 100), 3, 100) is not None          # 300
    assert rows(client.batch(6, 100), 6, 100) is not None          # 900
    answer, payload = client.batch(2, 100)                          # 1100 > 1000: refused
    assert payload is None and "token budget" in answer["end"]
    assert client.batch(1, 1)[1] is None                            # and nothing after it, however small
    assert server.tokens == 900 and server.steps == 2
    assert client.progress() == pytest.approx(0.9)


def test_a_seconds_budget_runs_from_the_first_batch_but_never_past_start_plus_the_allowance(train_bin, tmp_path,
                                                                                              monkeypatch):
    monkeypatch.setattr(batch_server, "STARTUP_ALLOWANCE", 0.3)
    server, client = serve(train_bin, tmp_path, budget_tokens=None, budget_seconds=0.5)
    time.sleep(0.5)  # work before the first batch: past the allowance, it comes out of the budget
    t0 = time.monotonic()
    served = 0
    while client.batch(1, 8)[1] is not None:
        served += 1
    assert served >= 1
    assert time.monotonic() - t0 < 0.45  # ended at start + 0.3 + 0.5, not at the first batch + 0.5
    assert server.deadline() == pytest.approx(server.budget_end + batch_server.WEIGHTS_ALLOWANCE)
    client.weights(b"w")
    assert server.deadline() == pytest.approx(server.budget_end + batch_server.HANDOVER_ALLOWANCE)


def test_the_model_is_taken_once_and_then_nothing_more_is_served(train_bin, tmp_path):
    server, client = serve(train_bin, tmp_path)
    client.batch(2, 8)
    client.weights(b"weights bytes")
    assert client.batch(2, 8)[1] is None  # nothing is served once the weights are in
    client.submit(b"archive bytes", {"device": "cpu", "peak_memory_mb": 12.5})
    assert (tmp_path / "model.bin").read_bytes() == b"archive bytes"
    assert (tmp_path / "weights.bin").read_bytes() == b"weights bytes"
    with pytest.raises(ChannelError, match="already submitted"):
        client.batch(2, 8)
    assert server.deadline() is None and server.info == {"device": "cpu", "peak_memory_mb": 12.5}


@pytest.mark.parametrize("request_, reason", [
    ({"op": "batch", "B": 0, "T": 8}, "B >= 1"),
    ({"op": "batch", "B": 1 << 20, "T": 1 << 10}, "over the limit"),
    ({"op": "batch", "B": 2, "T": 10 ** 6}, "too few"),
    ({"op": "reset_budget"}, "unknown request"),
])
def test_bad_requests_are_refused_without_serving(train_bin, tmp_path, request_, reason):
    server, client = serve(train_bin, tmp_path)
    with pytest.raises(ChannelError, match=reason):
        client.ask(request_)
    assert server.tokens == 0 and server.steps == 0


def test_the_last_batch_that_fits_starts_the_handover_clock(train_bin, tmp_path):
    server, client = serve(train_bin, tmp_path, budget_tokens=1000)
    client.batch(4, 100)
    assert server.budget_end is None and server.deadline() is None  # 600 left: another 400 would fit
    client.batch(4, 100)
    assert server.budget_end is not None  # 200 left: another batch like it would not
    assert server.deadline() == pytest.approx(server.budget_end + batch_server.WEIGHTS_ALLOWANCE)
    assert "weights did not arrive" in server.late()


def test_slow_honest_steps_widen_the_weights_allowance_and_hoarding_does_not(train_bin, tmp_path):
    # On a loaded machine every step is slow: the last one may take longer than the fixed allowance.
    server, client = serve(train_bin, tmp_path, budget_tokens=300)
    for _ in range(3):
        client.batch(1, 100)
        if server.budget_end is None:
            time.sleep(2.0)
    step = statistics.median(server.steps_seconds)
    assert step >= 2.0
    assert server.deadline() == pytest.approx(server.budget_end + batch_server.STEP_ALLOWANCE * step)
    # A child that takes its batches as fast as it can (to train on them after the budget) keeps the fixed one.
    hoarder, client = serve(train_bin, tmp_path, budget_tokens=300)
    for _ in range(3):
        client.batch(1, 100)
    assert hoarder.deadline() == pytest.approx(hoarder.budget_end + batch_server.WEIGHTS_ALLOWANCE)


def test_a_preflight_is_not_scored_so_its_slow_first_step_gets_the_handover_allowance(train_bin, tmp_path):
    server, client = serve(train_bin, tmp_path, max_batches=1)
    client.batch(2, 8)
    assert server.deadline() == pytest.approx(server.budget_end + batch_server.HANDOVER_ALLOWANCE)


def test_the_graph_is_refused_before_the_weights(train_bin, tmp_path):
    server, client = serve(train_bin, tmp_path)
    with pytest.raises(ChannelError):
        client.submit(b"archive", {})
    server.join(timeout=5)
    assert "before the weights" in server.violation and server.submitted is None


def test_garbage_on_the_channel_is_a_recorded_violation(train_bin, tmp_path):
    server, client = serve(train_bin, tmp_path)
    client.sock.sendall(b"\x00\x00\x00\x05nope!")
    server.join(timeout=5)
    assert "not JSON" in server.violation
    server2, client2 = serve(train_bin, tmp_path)
    header = json.dumps({"op": "progress", "payload": 10}).encode()
    client2.sock.sendall(struct.pack(">I", len(header)) + header + b"x" * 10)
    server2.join(timeout=5)
    assert "payload" in server2.violation
