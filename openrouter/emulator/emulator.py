"""The emulator: one seeded organization, its clock, the request pipeline (faults, auth, log)."""

from __future__ import annotations

import dataclasses
import datetime
import threading
import urllib.parse
from array import array

from . import api, money, rng, views
from .config import EmulatorConfig
from .faults import Fault, FaultSet
from .generator import Counters, Snapshot, World, percent_of_day
from .log import RequestLog, RequestLogEntry, key_fingerprint

API_PREFIX = "/api/v1"
NON_JSON_BODY = b"<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>"
_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 408: "Request Timeout",
            429: "Rate limit exceeded", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout"}  # fmt: skip


@dataclasses.dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]
    delay: float = 0.0  # seconds to wait before answering
    hang: bool = False  # answer nothing (server) / time out (transport)


class Emulator:
    def __init__(self, config: EmulatorConfig | None = None, **overrides):
        if config is None:
            config = EmulatorConfig(**overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        self.config = config
        self.world = World(config)
        self._today = config.today
        self._lock = threading.RLock()
        self._snapshot: Snapshot | None = None
        self._listings: dict[tuple, array] = {}
        self.revoked: set[str] = set()
        self.removed_keys: set[int] = set()  # keys deleted by delete_key, after the world was built
        self._other_management_keys: set[str] = set()
        self.faults = FaultSet(config.seed)
        self.request_log = RequestLog()
        from .truth import Truth

        self.truth = Truth(self)

    # -- keys to use ------------------------------------------------------------------------------------

    @property
    def management_key(self) -> str:
        return self.world.management_key

    @property
    def normal_key(self) -> str:
        """The secret of the first listed key (default workspace, enabled, never expires, has usage)."""
        return self.world.key_secret(0)

    def new_management_key(self) -> str:
        """Another management key of the same organization, as an admin creates one to rotate the first."""
        with self._lock:
            number = len(self._other_management_keys) + 1
            secret = "sk-or-v1-" + rng.hex_id(f"doow-emulator-management:{self.config.seed}:{number}")
            self._other_management_keys.add(secret)
            return secret

    def is_management_key(self, secret: str) -> bool:
        return secret == self.world.management_key or secret in self._other_management_keys

    def key_secret(self, key_hash: str) -> str:
        i = self.world.index_of_hash(key_hash)
        if i is None:
            raise KeyError(key_hash)
        return self.world.key_secret(i)

    def revoke(self, secret: str) -> None:
        with self._lock:
            self.revoked.add(secret)

    def delete_key(self, key_hash: str) -> None:
        """Delete a key now, as an admin does in OpenRouter: it leaves the listings and GET /keys/{hash}
        answers 404. The generated world does not change, so the account-wide activity and credits
        keep its usage (later days' too)."""
        i = self.world.index_of_hash(key_hash)
        if i is None:
            raise KeyError(key_hash)
        with self._lock:
            self.removed_keys.add(i)

    # -- clock ------------------------------------------------------------------------------------------

    @property
    def today(self) -> datetime.date:
        return self._today

    @property
    def today_ord(self) -> int:
        return self._today.toordinal()

    def set_today(self, day: datetime.date) -> None:
        with self._lock:
            if day != self._today:
                self._today = day
                self._snapshot = None
                self._listings.clear()

    def set_now(self, now: datetime.datetime) -> None:
        """Today and how much of it has passed follow `now`, as a server on the real clock needs:
        today's counters grow through the day and no key was last used in the future."""
        now = now.astimezone(datetime.UTC)
        with self._lock:
            self.set_today(now.date())
            if self.world.set_partial_percent(self.today_ord, percent_of_day(now.time())):
                self._snapshot = None

    # -- derived figures (cached per "today") -----------------------------------------------------------

    def snapshot(self) -> Snapshot:
        with self._lock:
            if self._snapshot is None or self._snapshot.today_ord != self.today_ord:
                self._snapshot = Snapshot(self.world, self.today_ord)
            return self._snapshot

    def counters(self, i: int) -> Counters:
        snap = self._snapshot
        if snap is not None and snap.today_ord == self.today_ord:
            return snap.counters(i)
        return self.world.key_counters(self.world.profile(i), self.today_ord)

    def api_key(self, i: int) -> dict:
        return views.api_key(self.world, self.world.profile(i), self.counters(i))

    def listed_indexes(self, workspace: int | None, include_disabled: bool, include_expired: bool) -> array:
        cache_key = (self.today_ord, workspace, include_disabled, include_expired)
        with self._lock:
            found = self._listings.get(cache_key)
            if found is None:
                if len(self._listings) > 64:
                    self._listings.clear()
                found = self.world.listed_indexes(
                    self.today_ord, workspace, include_disabled, include_expired
                )
                self._listings[cache_key] = found
            if self.removed_keys:
                found = array(found.typecode, (i for i in found if i not in self.removed_keys))
            return found

    def credits_units(self) -> tuple[int, int]:
        """(total_credits, total_usage) in money units; usage counts every key, deleted ones too."""
        usage = self.snapshot().total_usage
        step = money.usd_units(100)
        credits = (usage * 5 // 4 // step + 1) * step  # purchases in $100 top-ups, ahead of spend
        return credits, usage

    def activity(
        self,
        first_ord: int,
        last_ord: int,
        key_index: int | None = None,
        workspace: int | None = None,
        member: int | None = None,
        by_workspace: bool = False,
    ) -> list[dict]:
        """Activity rows summed per (day, endpoint[, workspace]) over completed days in the range."""
        last_ord = min(last_ord, self.today_ord - 1)
        sums: dict[tuple[int, int, int], list[int]] = {}

        def add(day: int, endpoint: int, ws: int, values) -> None:
            k = (day, endpoint, ws if by_workspace else -1)
            acc = sums.get(k)
            if acc is None:
                sums[k] = list(values)
            else:
                for j in range(7):
                    acc[j] += values[j]

        world = self.world
        if key_index is not None or (member is not None and (workspace is not None or by_workspace)):
            # One key, or workspace and user together: stream the keys concerned (rare, never cached).
            slots = [key_index] if key_index is not None else range(world.slot_count)
            for i in slots:
                p = world.profile(i) if key_index is not None else world._build_profile(i)
                if workspace not in (None, p.workspace) or member not in (None, p.member):
                    continue
                for day, row in world.key_rows(p, first_ord, last_ord):
                    add(day, row[0], p.workspace, row[1:])
        elif member is not None:
            for (day, endpoint, mem), values in self.snapshot().by_member.items():
                if first_ord <= day <= last_ord and mem == member:
                    add(day, endpoint, -1, values)
        else:
            for (day, endpoint, ws), values in self.snapshot().by_workspace.items():
                if first_ord <= day <= last_ord and workspace in (None, ws):
                    add(day, endpoint, ws, values)
        rows = [
            views.activity_row(world, day, endpoint, values, ws if by_workspace else None)
            for (day, endpoint, ws), values in sums.items()
        ]
        rows.sort(key=lambda r: (r["date"], r["model"], r["provider_name"], r.get("workspace_id", "")))
        return rows

    # -- request pipeline -------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query_string: str, authorization: str | None) -> Reply:
        """Answer one HTTP request; used by both the in-process transport and the server."""
        method = method.upper()
        query = dict(urllib.parse.parse_qsl(query_string, keep_blank_values=True))
        secret = None
        if authorization and authorization[:7].lower() == "bearer ":
            secret = authorization[7:].strip() or None
        api_path = path[len(API_PREFIX) :] or "/" if path.startswith(API_PREFIX) else None
        faults = self.faults.fire(method, api_path, query) if api_path is not None else []
        kinds = tuple(_fault_kinds(faults))

        for fault in faults:
            if fault.revoke_after is not None and secret and fault.fired > fault.revoke_after:
                self.revoke(secret)

        delay = self.config.latency + sum(f.latency for f in faults)
        if any(f.hang for f in faults):
            self._log(method, api_path or path, query, secret, 0, kinds)
            return Reply(0, b"", {}, delay=delay, hang=True)

        headers = {"Content-Type": "application/json"}
        error_fault = next((f for f in faults if f.error_status is not None), None)
        if error_fault is not None:
            status = error_fault.error_status
            payload = error_fault.body
            if payload is None:
                payload = api.error_body(status, _REASONS.get(status, "Error"))
            if error_fault.retry_after is not None:
                headers["Retry-After"] = str(error_fault.retry_after)
            headers.update(error_fault.headers or {})
        elif api_path is None:
            status, payload = 404, api.error_body(404, "Not Found")
        else:
            try:
                payload = api.dispatch(self, method, api_path, query, secret)
                status = 200
            except api.ApiError as err:
                status, payload = err.status, api.error_body(err.status, err.message)
            if status == 200:
                for fault in faults:
                    payload = _reshape(payload, fault)

        body = payload if isinstance(payload, bytes) else (
            payload.encode() if isinstance(payload, str) else money.dumps(payload)
        )  # fmt: skip
        if any(f.non_json for f in faults):
            body = NON_JSON_BODY
            headers["Content-Type"] = "text/html"
        if any(f.truncate for f in faults):
            body = body[: max(1, len(body) // 2)]
        self._log(method, api_path or path, query, secret, status, kinds)
        return Reply(status, body, headers, delay=delay)

    def _log(self, method, path, query, secret, status, kinds) -> None:
        key_id = key_fingerprint(secret) if secret else None
        self.request_log.record(RequestLogEntry(method, path, query, key_id, status, kinds))

    # -- ways to run ------------------------------------------------------------------------------------

    def transport(self):
        from .transport import EmulatorTransport

        return EmulatorTransport(self)

    def async_transport(self):
        from .transport import AsyncEmulatorTransport

        return AsyncEmulatorTransport(self)

    def serve(self, host: str = "127.0.0.1", port: int = 0, *, follows_clock: bool = False):
        from .server import EmulatorServer

        return EmulatorServer(self, host, port, follows_clock=follows_clock)


def _fault_kinds(faults: list[Fault]):
    for f in faults:
        for name in ("hang", "truncate", "non_json", "drop_field", "extra_field", "revoke_after"):
            if getattr(f, name) not in (None, False):
                yield name
        if f.error_status is not None:
            yield f"status:{f.error_status}"
        if f.latency:
            yield "latency"


def _reshape(payload: dict, fault: Fault) -> dict:
    """Apply drop_field / extra_field to the `data` of a successful response."""
    if fault.drop_field is None and not fault.extra_field:
        return payload
    data = payload.get("data")
    items = data if isinstance(data, list) else [data] if isinstance(data, dict) else []
    for item in items:
        if fault.drop_field is not None:
            item.pop(fault.drop_field, None)
        if fault.extra_field:
            item.update(fault.extra_field)
    if fault.drop_field is not None and not items:
        payload.pop(fault.drop_field, None)
    return payload
