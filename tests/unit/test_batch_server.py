"""evo.sandbox.batch_server: the harness side of a training run counts the budget itself, serves the same rows the
standalone harness draws, and takes the model once."""

import json
import socket
import struct
import time

import numpy as np
import pytest
import torch

from evo.sandbox import batch_server
from evo.sandbox.batch_server import BatchServer, ServeSettings, open_channel
from evo.sandbox.budget import Budget
from evo.sandbox.child.channel import (
    MAX_DEPTH,
    MAX_HEADER,
    ChannelError,
    TrainingClient,
    receive_header,
)


@pytest.fixture
def train_bin(tmp_path):
    path = tmp_path / "train.bin"
    np.random.default_rng(0).integers(0, 1024, size=50_000, dtype=np.uint16).tofile(path)
    return path


def serve(train_bin, tmp_path, **settings):
    ours, theirs = open_channel()
    base = dict(seed=7, budget=Budget(tokens=10_000), vocab_size=1024, threads=None)
    server = BatchServer(ours, train_bin, ServeSettings(**{**base, **settings}), tmp_path / "model.bin",
                         tmp_path / "weights.bin")
    server.start()
    return server, TrainingClient(theirs.detach())


def rows(answer_payload, B, T):
    answer, payload = answer_payload
    return None if payload is None else np.frombuffer(payload, dtype=np.uint16).reshape(B, T + 1)


def test_served_rows_are_the_rows_torch_randint_draws_with_the_harness_seed(train_bin, tmp_path):
    server, client = serve(train_bin, tmp_path, budget=Budget(tokens=1_000_000))
    data = torch.from_numpy(np.fromfile(train_bin, dtype=np.uint16).astype(np.int64))
    gen = torch.Generator().manual_seed(7)
    for _ in range(5):
        got = rows(client.batch(4, 32), 4, 32)
        starts = torch.randint(0, len(data) - 32 - 1, (4,), generator=gen)
        assert np.array_equal(got, data[starts[:, None] + torch.arange(33)].numpy())


def test_a_batch_bigger_than_what_is_left_ends_the_run_and_the_counts_are_the_servers(train_bin, tmp_path):
    server, client = serve(train_bin, tmp_path, budget=Budget(tokens=1000))
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
    server, client = serve(train_bin, tmp_path, budget=Budget(seconds=0.5))
    time.sleep(0.5)  # work before the first batch: past the allowance, it comes out of the budget
    t0 = time.monotonic()
    served = 0
    while client.batch(1, 8)[1] is not None:
        served += 1
    assert served >= 1
    assert time.monotonic() - t0 < 0.45  # ended at start + 0.3 + 0.5, not at the first batch + 0.5
    assert server.weights_allowance() == pytest.approx(0.05)  # a tenth of the budget, under WEIGHTS_ALLOWANCE
    assert server.deadline() == pytest.approx(server.budget_end + 0.05)
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
    server, client = serve(train_bin, tmp_path, budget=Budget(tokens=1000))
    client.batch(4, 100)
    assert server.budget_end is None and server.deadline() is None  # 600 left: another 400 would fit
    client.batch(4, 100)
    assert server.budget_end is not None  # 200 left: another batch like it would not
    # a token budget's compute per token is not budgeted: the allowance covers the last step too, and is fixed
    assert server.deadline() == pytest.approx(server.budget_end + batch_server.HANDOVER_ALLOWANCE)
    assert "weights did not arrive" in server.late()


def test_a_seconds_budgets_allowance_is_fixed_whatever_the_steps_look_like(train_bin, tmp_path):
    # Slow steps (a child asking rarely for large batches) buy no more time to hand over the weights.
    server, client = serve(train_bin, tmp_path, budget=Budget(seconds=3.0))
    for _ in range(3):
        client.batch(1, 8)
        time.sleep(0.4)
    assert server.weights_allowance() == pytest.approx(0.3)  # min(WEIGHTS_ALLOWANCE, a tenth of 3 s)
    big = serve(train_bin, tmp_path, budget=Budget(seconds=600.0))[0]
    assert big.weights_allowance() == batch_server.WEIGHTS_ALLOWANCE


def test_a_late_refused_request_does_not_move_a_seconds_budgets_end(train_bin, tmp_path):
    server, client = serve(train_bin, tmp_path, budget=Budget(seconds=0.5))
    client.batch(1, 8)
    end = server.first_batch + 0.5
    time.sleep(0.9)  # trains on past the end, then asks
    answer, payload = client.batch(1, 8)
    assert payload is None and "time budget" in answer["end"]
    assert server.budget_end == pytest.approx(end)
    assert server.deadline() == pytest.approx(end + 0.05)
    time.sleep(0.2)
    assert client.batch(1, 8)[1] is None and server.budget_end == pytest.approx(end)


def test_the_server_stops_serving_when_one_more_step_would_end_after_the_deadline(train_bin, tmp_path):
    # Two children with 0.8 s steps on a 2 s budget: at 1.6 s one more step like the last would end at 2.4 s, so
    # it is refused (the budget still ends at 2 s); a batch a tenth the size would end at 1.68 s: it is served.
    same, client = serve(train_bin, tmp_path, budget=Budget(seconds=2.0))
    smaller, other = serve(train_bin, tmp_path, budget=Budget(seconds=2.0))
    for c in (client, other):
        c.batch(10, 10)
    time.sleep(0.8)
    assert client.batch(10, 10)[1] is not None and other.batch(10, 10)[1] is not None   # 1.6 s <= 2 s
    time.sleep(0.8)
    answer, payload = client.batch(10, 10)
    assert payload is None and "one more step" in answer["end"]
    assert same.budget_end == pytest.approx(same.first_batch + 2.0) and same.steps == 2
    assert other.batch(1, 10)[1] is not None and smaller.steps == 3


def test_weights_after_the_allowance_are_an_overrun_by_the_servers_own_record(train_bin, tmp_path):
    late, client = serve(train_bin, tmp_path, budget=Budget(seconds=0.5))
    client.batch(1, 8)
    time.sleep(0.5 + 0.05 + 0.2)
    client.weights(b"w")
    assert "weights arrived" in late.overrun()
    on_time, client = serve(train_bin, tmp_path, budget=Budget(seconds=0.5))
    client.batch(1, 8)
    time.sleep(0.5)
    client.weights(b"w")
    client.submit(b"archive", {})
    assert on_time.overrun() is None


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


def _raw(client: TrainingClient, header: bytes) -> None:
    client.sock.sendall(struct.pack(">I", len(header)) + header)


@pytest.mark.parametrize("header, reason", [
    (b"[" * 20_000 + b"]" * 20_000, "nests"),                                   # RecursionError in json
    (b'{"op": "batch", "T": 8, "B": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", "nests"),
    (b'{"op": "batch", "B": [[[[[1]]]]], "T": 8}', "nests"),
    (b'{"op": "\\ud800\\u001b[2J"}', "unknown request"),                     # a lone surrogate, an escape
    (b'{"op": "batch", "B": 1' + b"0" * 5000 + b', "T": 8}', "not JSON"),       # past int's digit limit
    (b"\xff\xfe\x00", "not JSON"),
])
def test_any_input_ends_as_a_recorded_violation_and_the_phase_with_it(train_bin, tmp_path, header, reason):
    server, client = serve(train_bin, tmp_path, budget=Budget(seconds=30.0))
    client.batch(1, 8)
    _raw(client, header)
    if reason == "unknown request":  # refused, and the conversation goes on
        assert "unknown request" in receive_header(client.sock)["error"]
        assert client.batch(1, 8)[1] is not None and server.violation is None
        return
    server.join(timeout=5)
    assert not server.is_alive() and reason in server.violation
    assert server.deadline() <= time.monotonic()  # the sandbox ends the phase at once
    with pytest.raises(ChannelError):
        client.batch(1, 8)


def test_an_exception_on_the_server_thread_is_a_recorded_violation(train_bin, tmp_path):
    # settings that cannot be sent (a set is not JSON): the hello answer raises TypeError on the thread
    server, client = serve(train_bin, tmp_path, threads={1, 2})
    with pytest.raises(ChannelError):
        client.hello()
    server.join(timeout=5)
    assert "could not handle" in server.violation and "TypeError" in server.violation


def test_a_header_over_the_size_or_depth_limit_is_refused_before_it_is_parsed():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.sendall(struct.pack(">I", MAX_HEADER + 1))
        with pytest.raises(ChannelError, match="over the limit"):
            receive_header(theirs)
        deep = b'{"a": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}"
        ours.sendall(struct.pack(">I", len(deep)) + deep)
        with pytest.raises(ChannelError, match="nests"):
            receive_header(theirs)
        quoted = json.dumps({"op": "[[[[[[[[\"{{{{{{", "rows": [2, 9]}).encode()  # brackets in strings do not count
        ours.sendall(struct.pack(">I", len(quoted)) + quoted)
        assert receive_header(theirs)["rows"] == [2, 9]


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
