"""A read-only client for OpenRouter's management API (httpx).

Every request has an explicit timeout, goes through a per-client rate limiter, and is retried here
for transient failures (timeouts, 5xx, 408/425, malformed bodies, short 429s) with exponential backoff
and full jitter. What cannot be settled within the retry budget raises ProviderError; 401/402/403/404
are permanent and never retried. Any other 4xx is a RequestRejected: the same request would be
refused again, so it is not retried either; nor are a body larger than OPENROUTER_MAX_RESPONSE_MB,
which is read no further, and a listing that sends the same page again. The key only ever travels in
the Authorization header.
"""

import email.utils
import functools
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import quote

import httpx
from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from integrations import log_scrub
from integrations.providers import ProviderError
from openrouter import schemas

KEYS_PAGE_SIZE_HINT = 100


@functools.cache
def _ssl_context():
    """One TLS context per process: building it (loading the CA bundle) costs ~40 ms of CPU, which
    httpx would otherwise spend on every client, i.e. on every sync. Contexts are safe to share."""
    return httpx.create_ssl_context()


class RateLimited(ProviderError):
    def __init__(self, message: str, *, retry_after: float | None):
        super().__init__(message, permanent=False, code="rate_limited", retry_after=retry_after)


class RequestRejected(ProviderError):
    """OpenRouter refused a request as malformed or unprocessable (400, 409, 422, ...). Sending it
    again cannot help, so it is not retried; and it says nothing about the credential, so it is not
    `permanent` (which would mark the connection as needing attention)."""

    def __init__(self, message: str, *, status: int):
        super().__init__(message, permanent=False, code=f"http_{status}")
        self.status = status


class ResponseTooLarge(RequestRejected):
    """A body past the configured limit: reading on could take the worker's memory (a broken proxy,
    a wrong base URL, a compressed bomb), and the same request would send it again."""

    def __init__(self, path: str, *, limit: int, status: int):
        super().__init__(
            f"OpenRouter sent more than {limit // 2**20} MiB for {path}; Doow stopped reading it.",
            status=status,
        )
        self.code = "too_large"


class ListingStuck(RequestRejected):
    """A page of a listing identical to the one before it: the server is not moving through the
    listing (an ignored offset), and reading on would send requests until the time limit."""

    def __init__(self, path: str, *, offset: int):
        super().__init__(
            f"OpenRouter sent the same page of {path} again at offset {offset}: its listing does not "
            "advance, so Doow stopped reading it.",
            status=200,
        )
        self.code = "listing_stuck"


# 4xx statuses that do describe a passing condition: retried like a 5xx.
TRANSIENT_CLIENT_ERRORS = frozenset({408, 425})


# Longer than any wait OpenRouter means: a week, whether asked for in seconds or as a date.
RETRY_AFTER_CAP = 7 * 24 * 3600


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if absent/garbage."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit() alone accepts "²"
        return float(min(int(value), RETRY_AFTER_CAP))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - (now or datetime.now(UTC))).total_seconds()), RETRY_AFTER_CAP)


def backoff_seconds(attempt: int, *, base: float = 0.5, cap: float = 30.0) -> float:
    """Exponential backoff with full jitter, never below half the step (so it cannot collapse to 0)."""
    step = min(cap, base * (2**attempt))
    return step / 2 + random.uniform(0, step / 2)


class RateLimiter:
    """A polite, thread-safe request pacer: at most `per_second` request starts per second."""

    def __init__(self, per_second: float, sleep: Callable[[float], None] = time.sleep):
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self.sleep = sleep
        self._lock = threading.Lock()
        self._next = 0.0

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            self.sleep(start - now)


class OpenRouterClient:
    @sensitive_variables("api_key")
    def __init__(
        self,
        api_key: str | None,
        *,
        base_url: str | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        max_inline_wait: float = 60.0,
        requests_per_second: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        on_event: Callable[[str, dict], None] | None = None,
    ):
        self._http = httpx.Client(
            base_url=(base_url or settings.OPENROUTER_BASE_URL).rstrip("/") + "/",
            headers={"User-Agent": "Doow-OpenRouter-Sync/1"}
            | ({"Authorization": f"Bearer {api_key}"} if api_key else {}),
            timeout=httpx.Timeout(timeout or settings.OPENROUTER_TIMEOUT_SECONDS, connect=10.0),
            transport=transport,
            verify=_ssl_context(),
            follow_redirects=False,
        )
        self.max_retries = settings.OPENROUTER_MAX_RETRIES if max_retries is None else max_retries
        self.max_response_bytes = settings.OPENROUTER_MAX_RESPONSE_MB * 2**20
        self.max_inline_wait = max_inline_wait
        self.sleep = sleep
        self.limiter = RateLimiter(
            settings.OPENROUTER_MAX_REQUESTS_PER_SECOND
            if requests_per_second is None
            else requests_per_second,
            sleep,
        )
        self.on_event = on_event or (lambda code, detail: None)
        self.requests_made = 0
        self._count_lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- transport

    def _get_json(self, path: str, params: dict | None = None):
        """GET with retries; returns the parsed JSON (floats as Decimal)."""
        last_error: ProviderError | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                wait = backoff_seconds(attempt - 1)
                if isinstance(last_error, RateLimited) and last_error.retry_after is not None:
                    wait = max(wait, last_error.retry_after)
                if wait > self.max_inline_wait:
                    raise last_error  # Too long to wait in a worker: the task reschedules itself.
                self.on_event(
                    "retrying",
                    {
                        "path": path,
                        "attempt": attempt,
                        "wait_seconds": round(wait, 2),
                        "reason": last_error.code,
                    },
                )
                self.sleep(wait)
            try:
                return self._get_once(path, params)
            except ProviderError as exc:
                if exc.permanent or isinstance(exc, RequestRejected):
                    raise
                last_error = exc
        assert last_error is not None
        raise last_error

    def _get_once(self, path: str, params: dict | None):
        self.limiter.wait()
        with self._count_lock:
            self.requests_made += 1
        try:
            with self._http.stream("GET", path.lstrip("/"), params=params) as response:
                body = _read_body(response, path, limit=self.max_response_bytes)
        except httpx.TimeoutException:
            raise ProviderError(f"OpenRouter did not answer {path} in time.", code="timeout") from None
        except httpx.TransportError as exc:
            raise ProviderError(
                f"Could not reach OpenRouter ({type(exc).__name__}) for {path}.", code="network"
            ) from None
        except httpx.DecodingError:
            raise ProviderError(
                f"OpenRouter sent a body that does not decode for {path}.", code="malformed"
            ) from None
        status = response.status_code
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            self.on_event("rate_limited", {"path": path, "retry_after": retry_after})
            raise RateLimited(f"OpenRouter rate-limited {path}.", retry_after=retry_after)
        if status in (401, 403):
            raise ProviderError(
                self._error_message(status, body, path), permanent=True, code=f"http_{status}"
            )
        if status == 402:
            raise ProviderError(self._error_message(status, body, path), permanent=True, code="http_402")
        if status == 404:
            raise ProviderError(self._error_message(status, body, path), permanent=True, code="http_404")
        if 400 <= status < 500 and status not in TRANSIENT_CLIENT_ERRORS:
            raise RequestRejected(self._error_message(status, body, path), status=status)
        if status >= 400:
            raise ProviderError(f"OpenRouter answered {status} for {path}.", code=f"http_{status}")
        try:
            return json.loads(body, parse_float=Decimal)
        except (ValueError, UnicodeDecodeError):
            raise ProviderError(
                f"OpenRouter sent a body that is not JSON for {path}.", code="malformed"
            ) from None

    @sensitive_variables()
    def _error_message(self, status: int, body: bytes, path: str) -> str:
        secret = self._http.headers.get("Authorization", "").removeprefix("Bearer ")
        return _error_message(status, body, path, secret=secret)

    def _get_data(self, path: str, parse: Callable, params: dict | None = None):
        """GET, then validate; a schema error counts as a transient failure (retried)."""
        last: schemas.SchemaError | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.sleep(backoff_seconds(attempt - 1))
            payload = self._get_json(path, params)
            try:
                return parse(payload)
            except schemas.SchemaError as exc:
                last = exc
                self.on_event("malformed", {"path": path, "attempt": attempt + 1, "error": str(exc)[:300]})
        raise ProviderError(f"OpenRouter's answer for {path} did not match its schema: {last}", code="schema")

    # --- endpoints (read only)

    def get_key(self) -> schemas.CurrentKey:
        return self._get_data("/key", schemas.parse_current_key)

    def get_credits(self) -> schemas.Credits:
        return self._get_data("/credits", schemas.parse_credits)

    def iter_workspaces(self) -> Iterator[schemas.WorkspaceRecord]:
        yield from self._iter_counted("/workspaces", schemas.parse_workspaces, page_size=100)

    def iter_members(self) -> Iterator[schemas.MemberRecord]:
        yield from self._iter_counted("/organization/members", schemas.parse_members, page_size=100)

    def get_key_page(self, *, workspace_id: str | None = None, offset: int = 0) -> list[schemas.KeyRecord]:
        """One page of keys from `offset`, disabled and expired included; an empty page is the end."""
        params = {"offset": offset, "include_disabled": "true", "include_expired": "true"}
        if workspace_id:
            params["workspace_id"] = workspace_id
        return self._get_data("/keys", schemas.parse_keys, params)

    def get_key_by_hash(self, key_hash: str) -> schemas.KeyRecord:
        """One key of the organization, listed or not (a deleted key answers 404)."""
        return self._get_data(f"/keys/{quote(key_hash, safe='')}", schemas.parse_one_key)

    def get_activity(
        self, *, api_key_hash: str | None = None, group_by_workspace: bool = False, date: str | None = None
    ) -> list[schemas.ActivityRecord]:
        params: dict = {}
        if api_key_hash:
            params["api_key_hash"] = api_key_hash
        if group_by_workspace:
            params["group_by"] = "workspace"
        if date:
            params["date"] = date
        return self._get_data("/activity", schemas.parse_activity, params)

    def get_models(self) -> list[schemas.ModelRecord]:
        return self._get_data("/models", schemas.parse_models)

    def _iter_counted(self, path: str, parse: Callable, *, page_size: int):
        offset, previous = 0, None
        while True:
            items, total = self._get_data(path, parse, {"offset": offset, "limit": page_size})
            if items and items == previous:
                raise ListingStuck(path, offset=offset)
            yield from items
            offset += len(items)
            if not items or (total is not None and offset >= total):
                return
            previous = items


def _read_body(response: httpx.Response, path: str, *, limit: int) -> bytes:
    """The decoded body, read no further than `limit` bytes (ResponseTooLarge past it)."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ResponseTooLarge(path, limit=limit, status=response.status_code)
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge(path, limit=limit, status=response.status_code)
        chunks.append(chunk)
    return b"".join(chunks)


def _error_message(status: int, body: bytes, path: str, *, secret: str) -> str:
    """The server's own error message, else a generic one. It goes to the event log, which ops read:
    any piece of the key it quotes back (a proxy or gateway in front of OpenRouter may) is redacted.
    A NUL or a lone surrogate becomes U+FFFD: the event log cannot hold either."""
    try:
        message = schemas.storable_text(str(json.loads(body)["error"]["message"])[:300])
    except (ValueError, KeyError, TypeError):
        message = ""
    message = log_scrub.redact_pieces(message, secret)
    return f"OpenRouter refused {path} ({status}){': ' + message if message else ''}."
