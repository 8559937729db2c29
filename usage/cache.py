"""Report results cached per connection data version.

A report over a month of a large organization aggregates hundreds of thousands of rows, yet the
rows only change when a sync writes. Results are cached under the connection's identity and
`data_version` (bumped in the same transaction as every write), so a cached figure always equals
what the database holds now; a write simply moves readers to new keys, and old ones expire.
"""

import hashlib
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.core.cache import cache

T = TypeVar("T")

# Raised whenever the computation behind a cached result changes (a fix to a figure): what the code
# before it cached stays under keys no longer read, where it would otherwise be served under the same
# data version until the next sync.
REPORTS_VERSION = 2

# After the cache failed, it is left alone this long: every figure is in the database, and a page
# must not wait on a cache that is down once per figure.
CACHE_RETRY_AFTER_SECONDS = 30

logger = logging.getLogger(__name__)
_cache_down_until = 0.0


def cache_key(connection, name: str, params) -> str:
    # created_at tells apart connections that reuse an id (a re-created development database).
    identity = (
        connection.pk,
        connection.created_at.isoformat(),
        connection.generation,
        connection.data_version,
    )
    digest = hashlib.sha256(repr((identity, name, params)).encode()).hexdigest()
    return f"report:v{REPORTS_VERSION}:{digest}"


def cached(connection, name: str, params, compute: Callable[[], T]) -> T:
    """compute(), or its result for this connection, data version, name and params if cached.
    `params` must be a repr-stable value (tuples, strings, dates, numbers)."""
    value = cache_get(connection, name, params)
    if value is None:
        value = compute()
        _use_cache(
            lambda: cache.set(cache_key(connection, name, params), value, settings.REPORT_CACHE_SECONDS)
        )
    return value


def cache_get(connection, name: str, params):
    return _use_cache(lambda: cache.get(cache_key(connection, name, params)))


def cache_set_many(connection, values: dict) -> None:
    """values: {(name, params): value}."""
    _use_cache(
        lambda: cache.set_many(
            {cache_key(connection, name, params): value for (name, params), value in values.items()},
            settings.REPORT_CACHE_SECONDS,
        )
    )


def _use_cache(operation: Callable[[], T]) -> T | None:
    """The operation's result, or None (a miss) while the cache is down: a cache that cannot be
    reached (Redis restarting, a network blip) slows pages down, and must not break them."""
    global _cache_down_until
    if time.monotonic() < _cache_down_until:
        return None
    try:
        return operation()
    except Exception as exc:  # Any backend's errors: redis-py's, the file cache's OSError.
        _cache_down_until = time.monotonic() + CACHE_RETRY_AFTER_SECONDS
        logger.warning(
            "Report cache unavailable (%s); figures are computed from the database for %d s.",
            exc.__class__.__name__,
            CACHE_RETRY_AFTER_SECONDS,
        )
        return None
