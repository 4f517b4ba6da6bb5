"""Fault injection for real-server tests: a TCP proxy that can be cut, log growth."""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

from sqlalchemy.engine import make_url

from harness import free_port


class CuttableProxy:
    """A TCP proxy from ``127.0.0.1:<port>`` to ``upstream`` that a test can cut and restore.

    Cut, it closes every connection it carries and closes new ones right after accepting
    them: to the server behind it, the database is down (as when PostgreSQL is stopped),
    while the shared PostgreSQL other tests use keeps running.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._cut = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept_forever, daemon=True)

    def start(self) -> CuttableProxy:
        self._thread.start()
        return self

    def url_for(self, database_url: str) -> str:
        """``database_url`` pointed at this proxy."""
        url = make_url(database_url).set(host="127.0.0.1", port=self.port)
        return url.render_as_string(hide_password=False)

    def cut(self) -> None:
        """Drop every connection and refuse (accept, then close) new ones."""
        self._cut.set()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def restore(self) -> None:
        """Carry connections again."""
        self._cut.clear()

    def close(self) -> None:
        self._closed.set()
        self.cut()
        self._listener.close()

    def _accept_forever(self) -> None:
        while not self._closed.is_set():
            try:
                client, _addr = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._open.discard(src)
                self._open.discard(dst)


def file_size(path: Path | None) -> int:
    """The size of ``path`` in bytes (0 when it does not exist)."""
    if path is None or not path.exists():
        return 0
    return path.stat().st_size


FAULTS_DIR = Path(__file__).parent / "faults"


def fault_env(*faults: str) -> dict[str, str]:
    """Environment for a server process that installs ``faults`` (tests/faults/)."""
    import os

    path = os.pathsep.join(filter(None, [str(FAULTS_DIR), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, "LUMORA_FAULTS": ",".join(faults)}
