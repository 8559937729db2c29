"""doow.rows.get_one: the lookups every request makes, read without the query compiler, must give
exactly what the ORM gives (on SQLite and on PostgreSQL, as the suite runs on both)."""

from datetime import UTC, date, datetime, timedelta

import pytest
from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.models import Session
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from doow import rows
from doow.backends import ModelBackend
from doow.models import Membership, User
from doow.sessions import SessionStore
from doow.tasks import clear_expired_sessions
from integrations.models import Connection
from tests.conftest import client_for


def field_values(instance) -> dict:
    return {field.attname: getattr(instance, field.attname) for field in type(instance)._meta.concrete_fields}


@pytest.fixture
def stored_connection(acme, alice) -> Connection:
    # Every kind of column a connection holds: JSON, text, dates, aware datetimes, big integers.
    return Connection.objects.create(
        company=acme,
        provider="openrouter",
        name="Prod — ☃ «OpenRouter»",
        config={"workspaces": ["a", "b"], "limit": 2.5, "nested": {"ok": True}},
        sync_progress={"phase": "keys", "done": 3},
        data_version=2**62,
        last_synced_at=datetime(2026, 11, 30, 23, 59, 59, 123456, tzinfo=UTC),
        complete_through=date(2026, 11, 29),
        created_by=alice,
    )


def test_a_row_read_holds_exactly_what_the_orm_reads(stored_connection, acme):
    read = rows.get_one(Connection, company_id=acme.pk, pk=stored_connection.pk)
    assert field_values(read) == field_values(Connection.objects.get(pk=stored_connection.pk))
    assert read.config == {"workspaces": ["a", "b"], "limit": 2.5, "nested": {"ok": True}}
    assert read.last_synced_at.tzinfo is not None
    assert read._state.adding is False and read._state.db == "default"
    # A loaded instance saves as an update of its row, like one the ORM loaded.
    read.name = "Renamed"
    read.save(update_fields=["name"])
    assert Connection.objects.get(pk=stored_connection.pk).name == "Renamed"


def test_a_row_of_another_company_or_no_row_reads_as_none(stored_connection, acme, globex):
    assert rows.get_one(Connection, company_id=globex.pk, pk=stored_connection.pk) is None
    assert rows.get_one(Connection, company_id=acme.pk, pk=stored_connection.pk + 1000) is None


@pytest.mark.parametrize("number", [2**31, 2**63, -(2**63) - 1, 10**30])
def test_a_number_no_column_can_hold_reads_as_no_row_not_an_error(stored_connection, acme, number):
    # A URL's <int:…> takes any number of digits; the ORM answers "no row", and so does get_one.
    assert rows.get_one(Connection, company_id=acme.pk, pk=number) is None
    assert rows.get_one(Connection, company_id=number, pk=stored_connection.pk) is None


def test_a_value_that_is_not_a_number_fails_as_it_does_in_the_orm(acme):
    with pytest.raises(ValueError, match="expected a number"):
        Connection.objects.filter(pk="abc").first()
    with pytest.raises(ValueError, match="expected a number"):
        rows.get_one(Connection, company_id=acme.pk, pk="abc")


def test_a_joined_row_is_read_in_the_same_statement_and_cached(alice, acme):
    with CaptureQueriesContext(db_connection) as queries:
        membership = rows.get_one(Membership, related="company", user_id=alice.pk, company__slug="acme")
        company = membership.company
    assert len(queries) == 1
    assert field_values(membership) == field_values(Membership.objects.get(user=alice, company=acme))
    assert field_values(company) == field_values(acme)
    assert rows.get_one(Membership, related="company", user_id=alice.pk, company__slug="globex") is None


def test_conditions_it_does_not_read_are_refused_rather_than_guessed(acme):
    with pytest.raises(ValueError, match="does not read"):
        rows.get_one(Connection, name__icontains="prod")
    with pytest.raises(ValueError, match="no NULL matches"):
        rows.get_one(Connection, company_id=acme.pk, last_synced_at=None)
    with pytest.raises(ValueError, match="not a non-null foreign key"):
        rows.get_one(Connection, related="created_by", created_by__email="a@b.test")


def test_the_session_store_reads_a_live_session_and_not_an_expired_one(alice):
    store = SessionStore()
    store[SESSION_KEY] = str(alice.pk)
    store.create()
    key = store.session_key
    assert SessionStore(key).load() == {SESSION_KEY: str(alice.pk)}
    Session.objects.filter(session_key=key).update(expire_date=timezone.now() - timedelta(seconds=1))
    expired = SessionStore(key)
    assert expired.load() == {}
    assert expired.session_key is None  # a new session starts, as with Django's own store


def test_the_daily_task_drops_expired_sessions_and_keeps_live_ones(alice):
    live, expired = SessionStore(), SessionStore()
    for store in (live, expired):
        store[SESSION_KEY] = str(alice.pk)
        store.create()
    Session.objects.filter(session_key=expired.session_key).update(
        expire_date=timezone.now() - timedelta(seconds=1)
    )
    clear_expired_sessions.run()
    assert list(Session.objects.values_list("session_key", flat=True)) == [live.session_key]


def test_the_backend_reads_an_active_user_and_refuses_an_inactive_or_missing_one(alice):
    backend = ModelBackend()
    assert field_values(backend.get_user(str(alice.pk))) == field_values(User.objects.get(pk=alice.pk))
    assert backend.get_user(alice.pk + 1000) is None
    User.objects.filter(pk=alice.pk).update(is_active=False)
    assert backend.get_user(alice.pk) is None


def test_a_company_page_reads_its_session_user_membership_and_connection_once_each(stored_connection, alice):
    client = client_for(alice)
    url = reverse("openrouter:export", args=["acme", stored_connection.pk, "csv"])
    with CaptureQueriesContext(db_connection) as queries:
        response = client.get(url)
        assert response.status_code == 200
        assert b"".join(response.streaming_content).startswith(b"date,")
    statements = [query["sql"] for query in queries]
    for table in ("django_session", "doow_user", "doow_membership", "integrations_connection"):
        reads = [sql for sql in statements if sql.startswith("SELECT") and f'FROM "{table}"' in sql]
        assert len(reads) == 1, (table, reads)
