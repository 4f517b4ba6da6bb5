"""A local webhook receiver for tests: records every request, answers from a script."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    status: int


@dataclass
class Receiver:
    """``answer(n)`` gives the status for the n-th request (0-based); ``hold`` (when set)
    makes the handler wait on it before answering."""

    answer: Callable[[int], int] = lambda _n: 200
    hold: threading.Event | None = None
    received: list[Received] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def wait_for(self, done: Callable[[list[Received]], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if done(list(self.received)):
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver timed out; got {len(self.received)} requests")
            time.sleep(0.05)


@contextmanager
def receiver(
    answer: Callable[[int], int] = lambda _n: 200, hold: threading.Event | None = None
) -> Iterator[Receiver]:
    state = Receiver(answer=answer, hold=hold)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with state.lock:
                n = len(state.received)
                status = state.answer(n)
                state.received.append(Received(body, dict(self.headers.items()), status))
            state.arrived.set()
            if state.hold is not None and n == 0:
                state.hold.wait(60)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        if hold is not None:
            hold.set()
        server.shutdown()
        server.server_close()
