"""The channel between a training process and the harness process that serves it.

One stream socket, inherited by the training process as a file descriptor (its number in EVO_HARNESS_CHANNEL).
Each message is a 4-byte big-endian header length, a JSON header, and, when the header has "payload": N, N
bytes. The training side asks; the harness side answers (evo.sandbox.batch_server):

    {"op": "hello"}                      -> {"seed", "budget_seconds", "budget_tokens", "vocab_size", "threads"}
    {"op": "batch", "B": B, "T": T}      -> {"rows": [B, T+1], "payload": n} + uint16 token rows, or {"end": why}
    {"op": "progress"}                   -> {"progress": p}
    {"op": "weights", "payload": n}      -> {"ok": true}           (parameters and buffers, at the budget's end)
    {"op": "submit", "payload": n, ...}  -> {"ok": true}           (the model archive, evo.sandbox.graph.archive)

Any request the harness refuses is answered {"error": why}. A header is at most MAX_HEADER bytes and
MAX_DEPTH levels of arrays and objects deep (checked before it is parsed, so no parser recursion is left to
chance). This module is all the training side needs of evo: stdlib only, so it imports quickly inside the
training process's root.
"""

from __future__ import annotations

import json
import os
import socket
import struct

CHANNEL_VAR = "EVO_HARNESS_CHANNEL"
MAX_HEADER = 1 << 16   # bytes of one header: the longest this protocol sends is a few hundred
MAX_DEPTH = 4          # levels of nested arrays and objects in one header: the deepest this protocol sends is 2
_OPENERS = frozenset(b"[{")
_CLOSERS = frozenset(b"]}")


class ChannelError(Exception):
    """The other side broke the protocol, closed the channel, or refused a request."""


def send(sock: socket.socket, header: dict, payload: bytes | memoryview | None = None) -> None:
    if payload is not None:
        header = {**header, "payload": len(payload)}
    data = json.dumps(header).encode()
    sock.sendall(struct.pack(">I", len(data)) + data)
    if payload is not None:
        sock.sendall(payload)


def _exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ChannelError("the channel closed")
        got += k
    return bytes(buf)


def _nesting(data: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest (brackets inside strings do not count)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in _OPENERS:
            depth += 1
            deepest = max(deepest, depth)
        elif byte in _CLOSERS:
            depth -= 1
    return deepest


def receive_header(sock: socket.socket) -> dict:
    """One message's header (its payload, if any, is still to be read). Refuses one over MAX_HEADER bytes or
    MAX_DEPTH levels deep, and anything but a JSON object, with a ChannelError."""
    (size,) = struct.unpack(">I", _exactly(sock, 4))
    if size > MAX_HEADER:
        raise ChannelError(f"a message header of {size:,} bytes is over the limit of {MAX_HEADER:,}")
    data = _exactly(sock, size)
    if _nesting(data) > MAX_DEPTH:
        raise ChannelError(f"a message header nests arrays or objects more than {MAX_DEPTH} deep")
    try:
        header = json.loads(data)
    except (ValueError, RecursionError):
        raise ChannelError("a message header is not JSON") from None
    if not isinstance(header, dict):
        raise ChannelError("a message header is not a JSON object")
    return header


def payload_size(header: dict, max_payload: int) -> int | None:
    n = header.get("payload")
    if n is None:
        return None
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= max_payload:
        raise ChannelError(f"a payload of {n!r} bytes is refused (at most {max_payload:,})")
    return n


def copy_payload(sock: socket.socket, n: int, out) -> None:
    """Streams n payload bytes from sock into the binary file out."""
    left = n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ChannelError("the channel closed")
        out.write(chunk)
        left -= len(chunk)


def receive(sock: socket.socket, max_payload: int) -> tuple[dict, bytes | None]:
    """One message: (header, payload or None). Refuses headers and payloads past their limits."""
    header = receive_header(sock)
    n = payload_size(header, max_payload)
    return header, (None if n is None else _exactly(sock, n))


class TrainingClient:
    """The training process's end: what prepare.py's API calls when a harness process serves it."""

    def __init__(self, fd: int):
        self.sock = socket.socket(fileno=fd)

    @classmethod
    def from_environment(cls) -> TrainingClient | None:
        fd = os.environ.get(CHANNEL_VAR)
        return cls(int(fd)) if fd else None

    def ask(self, header: dict, payload: bytes | None = None, max_payload: int = 1 << 34) -> tuple[dict, bytes | None]:
        try:
            send(self.sock, header, payload)
            answer, data = receive(self.sock, max_payload)
        except OSError as e:
            raise ChannelError(f"the harness closed the channel ({e.strerror or e})") from None
        if "error" in answer:
            raise ChannelError(str(answer["error"]))
        return answer, data

    def hello(self) -> dict:
        return self.ask({"op": "hello"})[0]

    def batch(self, B: int, T: int) -> tuple[dict, bytes | None]:
        """({"rows": [B, T+1], "progress": p}, uint16 rows), or ({"end": why}, None) once the budget is spent."""
        return self.ask({"op": "batch", "B": B, "T": T})

    def progress(self) -> float:
        return float(self.ask({"op": "progress"})[0]["progress"])

    def weights(self, snapshot: bytes) -> None:
        self.ask({"op": "weights"}, snapshot)

    def submit(self, archive: bytes, info: dict) -> None:
        self.ask({"op": "submit", **info}, archive)
