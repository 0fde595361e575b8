"""`aptune serve`: many tasks on one frozen backbone over HTTP (FastAPI + uvicorn, the `serve` extra).

    server = Server(aptune.load_adapters({"ucf101": ..., "hmdb51": ...}, checkpoint=...), port=8000)
    server.run()                      # until SIGTERM / Ctrl-C; or server.start() ... server.stop() in a thread

Layers: batcher.py (requests waiting together -> one mixed forward; threads, no web framework),
service.py (query, decoding into test views, scores: no HTTP), app.py (routes, bodies, one-line
errors). Shutdown (SIGTERM, SIGINT, `stop()`): uvicorn stops accepting connections and lets requests in
flight finish (up to `graceful_s`), then the batcher runs what waits and its thread ends.
"""
from __future__ import annotations

import signal
import socket
import threading
import time
from contextlib import contextmanager

from ..errors import ConfigError
from .service import Problem, Service, Settings

__all__ = ["Problem", "Server", "Service", "Settings"]


class Server:
    """A Service with its FastAPI app under uvicorn, on a socket bound at construction (port 0: any free
    port; `url` says which)."""

    def __init__(self, mt, settings: Settings | None = None, host: str = "127.0.0.1", port: int = 8000,
                 log_level: str = "info", graceful_s: float = 30.0):
        try:                    # FastAPI (app.py imports it) and uvicorn are optional: the `serve` extra
            import uvicorn

            from .app import create_app
        except ImportError as e:
            raise ConfigError(f"aptune serve needs FastAPI and uvicorn ({e}); install them with "
                              "pip install 'aptune[serve]'") from None
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self.socket = socket.create_server((host, port), family=family)
        except OSError as e:
            raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        self.port = self.socket.getsockname()[1]
        self.url = f"http://{'[' + host + ']' if family == socket.AF_INET6 else host}:{self.port}"
        self.service = Service(mt, settings)
        config = uvicorn.Config(create_app(self.service), log_level=log_level, lifespan="off",
                                timeout_graceful_shutdown=graceful_s)
        self.uvicorn = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self.signals: list[int] = []                 # the signals that stopped it

    def run(self) -> None:
        """Serve until asked to stop (SIGTERM / SIGINT when run in the main thread), then close."""
        with _signals_recorded(self.signals):
            try:
                self.uvicorn.run(sockets=[self.socket])
            finally:
                self.service.close()
                self.socket.close()

    def start(self, timeout: float = 30.0) -> "Server":
        """Serve from a background thread; returns once the server accepts connections."""
        self._thread = threading.Thread(target=self.run, name="aptune-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)


@contextmanager
def _signals_recorded(received: list[int]):
    """uvicorn shuts down gracefully on SIGTERM / SIGINT, then raises the signal again for the handler
    that was there before; with this one in place that only records it, so the batcher still closes and
    the command exits 0 instead of being killed by its own signal. Main thread only (as signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {sig: signal.signal(sig, lambda s, frame: received.append(s)) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
