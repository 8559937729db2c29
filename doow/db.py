"""A request's first read as its database health check, and the prepared statements of the few
statements every request and sync makes (doow.rows)."""

from collections.abc import Callable
from typing import TypeVar

from django.db import InterfaceError, NotSupportedError, OperationalError, connection
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper

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


def planned_once_cursor(db=connection):
    """Django's cursor (its error wrapping, query logging and execute wrappers all apply), over a
    psycopg cursor whose statements PostgreSQL plans once per connection: psycopg prepares a
    statement that binds its values on the server once the connection has run it
    `prepare_threshold` times (settings: DATABASE_PREPARED_STATEMENTS). Django's own cursors bind
    values on the client and are never prepared. A rollback makes psycopg forget what it prepared
    (it cannot tell what the rollback undid); it prepares them again as they run. Elsewhere, or
    with prepared statements off, Django's cursor."""
    if db.vendor != "postgresql" or db.settings_dict["OPTIONS"].get("prepare_threshold") is None:
        return db.cursor()
    db.close_if_health_check_failed()
    cursor = _server_binding_cursor(db)
    db.validate_thread_sharing()
    return (_PreparedDebugCursor if db.queries_logged else _PreparedCursor)(cursor, db)


def _server_binding_cursor(db):
    from django.db.backends.postgresql.base import TIMESTAMPTZ_OID, ServerBindingCursor
    from django.db.backends.postgresql.psycopg_any import register_tzloader
    from psycopg.pq import Format

    db.ensure_connection()
    with db.wrap_database_errors:
        cursor = ServerBindingCursor(db.connection)
        # As Django's create_cursor: the connection's time zone, if the database's has changed.
        if db.timezone != db.connection.adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT).timezone:
            register_tzloader(db.timezone, cursor)
    return cursor


class _PreparedCursor(CursorWrapper):
    def execute(self, sql, params=None):
        # CursorWrapper's execute by name: in the debug cursor below, the next class in line is
        # Django's debug cursor, which would log the statement a second time (as None).
        try:
            return CursorWrapper.execute(self, sql, params)
        except NotSupportedError as exc:
            # "cached plan must not change result type": a migration changed the type of a column
            # the prepared statement reads, and psycopg sends it the same way until the connection
            # rolls back (a transaction's failure does) or closes. Outside a transaction the
            # statement, which did not run, is made again on a new connection.
            if (
                getattr(exc.__cause__, "sqlstate", None) != "0A000"
                or self.db.in_atomic_block
                or not self.db.get_autocommit()
            ):
                raise
            self.db.close()
            self.cursor = _server_binding_cursor(self.db)
            return CursorWrapper.execute(self, sql, params)


class _PreparedDebugCursor(_PreparedCursor, CursorDebugWrapper):
    """Django's debug cursor (DEBUG, the tests' query capture) for `planned_once_cursor`: Django
    reads the statement it logs from a cursor binding values on the client, and from this one would
    log None. It logs the statement with its values, as Django's shows them."""

    def execute(self, sql, params=None):
        try:
            shown = self.db.ops.compose_sql(sql, params)
        except Exception:  # a value psycopg cannot adapt fails in execute, with Django's error
            shown = sql
        with self.debug_sql(shown, params):
            return super().execute(sql, params)
