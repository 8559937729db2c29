"""A request's first read as its database health check."""

from collections.abc import Callable
from typing import TypeVar

from django.db import InterfaceError, OperationalError, connection

T = TypeVar("T")


def read_as_health_check(read: Callable[[], T], db=connection) -> T:
    """`read`, a read that changes nothing (the session's), made as the request's health check.

    With CONN_HEALTH_CHECKS, Django sends `SELECT 1` before the first statement of each request on a
    reused connection: a round trip of every page and download, a twentieth of a one-key export's
    time. A read that changes nothing can be that check itself: when it finds the connection closed
    (a database restart, a proxy's idle timeout), the connection is closed and the read made again
    on a new one, as a failed check would have reconnected before it. An error of the statement on
    a working connection is raised as it is. Where no check is due (a new connection, one already
    checked, inside a transaction, health checks off) it is a plain read."""
    if db.connection is None or not db.health_check_enabled or db.health_check_done or db.in_atomic_block:
        return read()
    db.health_check_done = True
    try:
        return read()
    except (OperationalError, InterfaceError):
        if db.is_usable():
            raise
        db.close()
        return read()
