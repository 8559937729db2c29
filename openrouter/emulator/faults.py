"""Fault injection: make chosen requests slow, failing, malformed or fatal for the key that sent them."""

from __future__ import annotations

import dataclasses
import random
import re
import threading
from typing import Any


@dataclasses.dataclass
class Fault:
    """What to do to requests that match.

    path: "/activity" matches that path and any below it ("/keys" also matches "/keys/{hash}");
      a string starting with "^" or a compiled pattern is a regular expression searched in the path.
      Paths are relative to /api/v1. None matches every path.
    query: every item must equal the request's query value (as strings), e.g. {"offset": 100}.
    times: fire at most this many times, then stop matching. probability: chance of firing, drawn
      from an RNG seeded with the emulator's seed, so chaos runs are repeatable.
    """

    path: str | re.Pattern | None = None
    query: dict[str, Any] | None = None
    method: str | None = None
    # Replace the response by an error: status with an OpenRouter error body (or `body`), plus headers.
    status: int | None = None
    body: Any = None
    headers: dict[str, str] | None = None
    # Retry-After value: seconds ("7") or an HTTP date; on its own it means a 429.
    retry_after: str | int | None = None
    latency: float = 0.0
    # No response at all: a server sleeps `hang_seconds`, the in-process transport raises ReadTimeout.
    hang: bool = False
    truncate: bool = False  # the body is cut in half (still a complete HTTP response)
    non_json: bool = False  # an HTML error page instead of JSON, status unchanged unless `status` says
    drop_field: str | None = None  # removed from `data` (from each item when `data` is a list)
    extra_field: dict[str, Any] | None = None  # merged into `data` (each item when a list)
    # The key that sends the matching requests is revoked after this many of them succeeded.
    revoke_after: int | None = None
    times: int | None = None
    probability: float = 1.0
    fired: int = dataclasses.field(default=0, init=False)

    def matches(self, method: str, path: str, query: dict[str, str]) -> bool:
        if self.method and self.method.upper() != method:
            return False
        if self.path is not None and not _path_matches(self.path, path):
            return False
        if self.query:
            return all(query.get(k) == _query_text(v) for k, v in self.query.items())
        return True

    @property
    def error_status(self) -> int | None:
        if self.status is not None:
            return self.status
        return 429 if self.retry_after is not None else None


def _query_text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _path_matches(pattern: str | re.Pattern, path: str) -> bool:
    if isinstance(pattern, re.Pattern):
        return pattern.search(path) is not None
    if pattern.startswith("^"):
        return re.search(pattern, path) is not None
    prefix = pattern.rstrip("/")
    return path == prefix or path.startswith(prefix + "/")


class FaultSet:
    def __init__(self, seed: int):
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def __iter__(self):
        return iter(list(self._faults))

    def __len__(self) -> int:
        return len(self._faults)

    def fire(self, method: str, path: str, query: dict[str, str]) -> list[Fault]:
        """The faults that apply to this request, counting them as fired."""
        chosen = []
        with self._lock:
            for fault in self._faults:
                if fault.times is not None and fault.fired >= fault.times:
                    continue
                if not fault.matches(method, path, query):
                    continue
                if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                    continue
                fault.fired += 1
                chosen.append(fault)
        return chosen
