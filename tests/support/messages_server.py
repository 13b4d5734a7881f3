"""A local HTTP server that speaks enough of the Anthropic Messages API for tests, answering POST /v1/messages
from a script of replies, and recording every request it receives.

    with MessagesServer() as server:
        server.script(error(529), message("Hypothesis: ...\\n<<<<<<< SEARCH ..."))
        ... point the real `anthropic` client at server.url ...
        server.requests[0]["system"]   # the JSON body the client sent

A request beyond the script gets `server.default` if one is set, else a 500 with x-should-retry: false (so the
client does not retry it) and the test sees the failure.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Reply:
    """One scripted answer: status, body (a dict is sent as JSON, bytes as they are), extra headers, a delay
    before answering (longer than the client's timeout makes it time out), and cut_after: send only that many
    bytes of the body (its full length announced), then close the connection."""

    status: int = 200
    body: dict | bytes = b""
    headers: dict = field(default_factory=dict)
    delay: float = 0.0
    cut_after: int | None = None


def message(text: str, *, input_tokens: int = 1200, output_tokens: int = 80, cache_read: int = 0,
            cache_write: int = 0, stop_reason: str = "end_turn", delay: float = 0.0,
            model: str = "claude-sonnet-test") -> Reply:
    """A successful Messages API answer whose content is one text block (none when text is "")."""
    content = [{"type": "text", "text": text}] if text else []
    return Reply(200, {
        "id": "msg_test", "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": stop_reason, "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                  "cache_read_input_tokens": cache_read, "cache_creation_input_tokens": cache_write},
    }, delay=delay)


_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}


def cut(reply: Reply, after: int = 40) -> Reply:
    """reply, its connection closed after `after` bytes of the body (the client sees an incomplete answer)."""
    return Reply(reply.status, reply.body, reply.headers, reply.delay, cut_after=after)


def error(status: int, message_text: str = "scripted error", *, retry_after_ms: int = 10) -> Reply:
    """An API error answer. retry-after-ms keeps the client's backoff short in tests."""
    body = {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message_text}}
    return Reply(status, body, headers={"retry-after-ms": str(retry_after_ms)})


class MessagesServer:
    """A threaded server on 127.0.0.1 (a free port) answering from a script. Thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._script: list[Reply] = []
        self._stop = threading.Event()
        self.default: Reply | None = None
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        # A short poll interval: shutdown() waits for the serve loop to notice, 0.5 s by default, per test.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, *replies: Reply) -> None:
        """Appends replies, to be given in order, one per request."""
        with self._lock:
            self._script.extend(replies)

    @property
    def unused(self) -> int:
        """How many scripted replies no request has taken yet."""
        with self._lock:
            return len(self._script)

    def _record(self, body: dict, headers: dict) -> None:
        """Keeps a request and counts it in flight; the caller holds the lock."""
        self.requests.append(body)
        self.headers.append(headers)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _next(self, body: dict, headers: dict) -> Reply:
        with self._lock:
            self._record(body, headers)
            if self._script:
                return self._script.pop(0)
            if self.default is not None:
                return self.default
        reply = error(500, "no scripted reply left for this request")
        return Reply(reply.status, reply.body, {"x-should-retry": "false"})

    def _done(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {"_unparsed": raw.decode("utf-8", "replace")}
                if self.path.split("?")[0] != "/v1/messages":
                    reply = Reply(404, {"type": "error", "error": {"type": "not_found_error", "message": self.path}})
                    server.requests.append(body)
                else:
                    reply = server._next(body, {k.lower(): v for k, v in self.headers.items()})
                try:
                    if reply.delay and server._stop.wait(reply.delay):
                        return
                    payload = json.dumps(reply.body).encode() if isinstance(reply.body, dict) else reply.body
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json" if isinstance(reply.body, dict)
                                     else "text/plain")
                    self.send_header("content-length", str(len(payload)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    if reply.cut_after is not None:
                        self.wfile.write(payload[:reply.cut_after])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): nothing to answer
                finally:
                    if self.path.split("?")[0] == "/v1/messages":
                        server._done()

        return Handler

    def start(self) -> "MessagesServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "MessagesServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
