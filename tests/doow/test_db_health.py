"""A request's session read is its database health check (doow.db): no `SELECT 1` before it, and a
connection the database closed (a restart) is replaced without failing the request."""

import psycopg
import pytest
from django.db import OperationalError, connection, connections

from bench.detail import WsgiGet
from doow.db import read_as_health_check


class FakeConnection:
    """What read_as_health_check reads of Django's connection wrapper."""

    def __init__(self, *, usable: bool, due: bool = True):
        self.connection = object()
        self.health_check_enabled = True
        self.health_check_done = not due
        self.in_atomic_block = False
        self.usable = usable
        self.closed = 0

    def is_usable(self) -> bool:
        return self.usable

    def close(self) -> None:
        self.closed += 1


def reads(*outcomes):
    """A read that gives (or raises) each outcome in turn, counting its calls."""
    calls = []

    def read():
        outcome = outcomes[len(calls)]
        calls.append(outcome)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return read, calls


def test_a_read_due_for_a_check_is_the_check_and_sends_nothing_before_it():
    db = FakeConnection(usable=False)
    read, calls = reads("row")
    assert read_as_health_check(read, db) == "row"
    assert (calls, db.health_check_done, db.closed) == (["row"], True, 0)


def test_a_closed_connection_is_replaced_and_the_read_made_again():
    db = FakeConnection(usable=False)
    read, calls = reads(OperationalError("server closed the connection unexpectedly"), "row")
    assert read_as_health_check(read, db) == "row"
    assert (len(calls), db.closed) == (2, 1)


def test_an_error_of_the_statement_on_a_working_connection_is_raised_as_it_is():
    db = FakeConnection(usable=True)
    read, calls = reads(OperationalError("canceling statement due to statement timeout"), "row")
    with pytest.raises(OperationalError, match="statement timeout"):
        read_as_health_check(read, db)
    assert (len(calls), db.closed) == (1, 0)


@pytest.mark.parametrize("state", ["checked", "new connection", "in a transaction", "checks off"])
def test_where_no_check_is_due_it_is_a_plain_read(state):
    db = FakeConnection(usable=False, due=state != "checked")
    if state == "new connection":
        db.connection = None
    db.in_atomic_block = state == "in a transaction"
    db.health_check_enabled = state != "checks off"
    read, calls = reads(OperationalError("closed"), "row")
    with pytest.raises(OperationalError):
        read_as_health_check(read, db)
    assert (len(calls), db.closed) == (1, 0)


# --- Against PostgreSQL, through Django's WSGI handler as a server calls it (bench.detail.WsgiGet:
# the test client leaves out what a request does with the connection, its health check before and its
# age check after).

SETTINGS_PAGE = "/c/acme/settings/"
needs_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="health checks are for PostgreSQL's persistent connections"
)


@needs_postgresql
@pytest.mark.django_db(transaction=True)
def test_pages_on_a_reused_connection_send_no_select_1(alice, monkeypatch):
    get = WsgiGet(alice)
    assert get(SETTINGS_PAGE) == 200
    checks = []
    monkeypatch.setattr(connections["default"], "is_usable", lambda: checks.append(1) or True)
    for _ in range(3):
        assert get(SETTINGS_PAGE) == 200
    assert connection.connection is not None  # reused, not a new one per request
    assert checks == []
    connection.close()


@needs_postgresql
@pytest.mark.django_db(transaction=True)
def test_a_connection_the_database_closed_is_replaced_without_failing_the_request(alice):
    get = WsgiGet(alice)
    assert get(SETTINGS_PAGE) == 200
    old_pid = connection.connection.info.backend_pid
    # As a database restart does: the server ends the session the web process holds.
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [old_pid])

    assert get(SETTINGS_PAGE) == 200  # still signed in, no 500
    assert connection.connection.info.backend_pid != old_pid
    connection.close()
