"""The emulator over real HTTP on loopback, in a daemon thread (tests, benchmarks, the dev command)."""

from __future__ import annotations

import datetime
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clients pool connections
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's delayed
    # ACK (~40 ms on Linux) and every request looks 40 ms slower than the emulated latency.
    disable_nagle_algorithm = True
    server_version = "DoowOpenRouterEmulator/1"

    def _answer(self) -> None:
        emu = self.server.emu
        if self.server.follows_clock:
            # After midnight UTC a new completed day, as OpenRouter's, and today's counters grow through
            # the day; an unchanged moment (1% of a day) keeps what the emulator has worked out.
            emu.set_now(utc_now())
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        reply = emu.handle(self.command, url.path, url.query, self.headers.get("Authorization"))
        if reply.delay:
            self._sleep(reply.delay)
        if reply.hang:
            self._sleep(emu.config.hang_seconds)
            self.close_connection = True
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def _sleep(self, seconds: float) -> None:
        # In small steps, so shutdown() is not held up by a hanging request.
        deadline = time.monotonic() + seconds
        while not self.server.stopping.is_set() and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

    def log_message(self, format, *args):  # the emulator keeps its own request log
        pass


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:
        # A client that hangs up (a killed worker, a timed-out request, a pool closing a kept-alive
        # connection) is what a real server sees every day, not a fault of the emulator: only other
        # errors get socketserver's traceback on stderr.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class EmulatorServer:
    """`follows_clock`: the emulated moment is the real UTC time of each request, for a server that
    runs for days (the dev command): "today" moves to the real UTC date at the first request after
    midnight, as OpenRouter's window does, and today's counters grow with the time of day. Tests keep
    their fixed moment."""

    def __init__(self, emu, host: str = "127.0.0.1", port: int = 0, *, follows_clock: bool = False):
        self.emu = emu
        self._server = _Server((host, port), _Handler)
        self._server.emu = emu
        self._server.follows_clock = follows_clock
        self._server.stopping = threading.Event()
        self.host, self.port = self._server.server_address[:2]
        self.base_url = f"http://{self.host}:{self.port}/api/v1"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},  # shutdown() waits up to one poll interval
            name="openrouter-emulator",
            daemon=True,
        )
        self._thread.start()

    def shutdown(self) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def serve_forever(self) -> None:
        """Block until interrupted (the management command)."""
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()
