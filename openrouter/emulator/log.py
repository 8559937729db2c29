"""What the emulator was asked, for tests and benchmarks to count and inspect. Never holds a key."""

from __future__ import annotations

import dataclasses
import hashlib
import threading


def key_fingerprint(secret: str) -> str:
    """A short, non-reversible id of a key: enough to tell keys apart in a log."""
    return hashlib.sha256(secret.encode()).hexdigest()[:8]


@dataclasses.dataclass(frozen=True)
class RequestLogEntry:
    method: str
    path: str  # relative to /api/v1, e.g. "/activity"
    query: dict[str, str]
    key_id: str | None  # key_fingerprint() of the bearer key, None without one
    status: int  # 0 when no response was sent (injected hang)
    faults: tuple[str, ...] = ()  # which kinds of fault were applied


class RequestLog(list):
    """A list of RequestLogEntry with a few filters; appends are thread-safe (server mode)."""

    def __init__(self):
        super().__init__()
        self._lock = threading.Lock()

    def record(self, entry: RequestLogEntry) -> None:
        with self._lock:
            self.append(entry)

    def matching(self, path: str | None = None, method: str | None = None) -> list[RequestLogEntry]:
        return [
            e
            for e in list(self)
            if (path is None or e.path == path) and (method is None or e.method == method)
        ]

    def paths(self) -> list[str]:
        return [e.path for e in list(self)]
