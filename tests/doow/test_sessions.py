"""A session is read with its user in one statement (doow.sessions, doow.auth): what signs a session
in or out with Django's own store does the same here, and the session's data, not the column beside
it, says whose session it is."""

import importlib
from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.models import Session as DjangoSession
from django.db import connection as db_connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from doow.models import Session, User
from doow.sessions import SessionStore
from tests.conftest import PASSWORD, client_for

pytestmark = pytest.mark.django_db

SETTINGS_PAGE = "/c/acme/settings/"


def signed_in_as(client: Client):
    response = client.get(SETTINGS_PAGE)
    if response.status_code == 302:
        assert response["Location"].startswith(reverse("login"))
        return None
    assert response.status_code == 200
    return response.wsgi_request.user


def user_reads(queries) -> list[str]:
    return [query["sql"] for query in queries if 'FROM "doow_user"' in query["sql"]]


def test_signing_in_keeps_the_users_id_beside_the_session_and_signing_out_drops_it(alice):
    client = Client()
    response = client.post(reverse("login"), {"username": alice.email, "password": PASSWORD})
    assert response.status_code == 302
    session = Session.objects.get()
    assert session.user_id == alice.pk
    assert session.get_decoded()[SESSION_KEY] == str(alice.pk)
    assert signed_in_as(client) == alice

    client.post(reverse("logout"))
    assert not Session.objects.filter(user=alice).exists()
    assert signed_in_as(client) is None


def test_a_page_reads_the_user_with_the_session_in_one_statement(alice):
    client = client_for(alice)
    with CaptureQueriesContext(db_connection) as queries:
        assert signed_in_as(client) == alice
    session_reads = [query["sql"] for query in queries if 'FROM "doow_session"' in query["sql"]]
    assert len(session_reads) == 1
    assert 'LEFT JOIN "doow_user"' in session_reads[0]
    assert user_reads(queries) == []


@pytest.mark.parametrize("column", ["empty", "another user", "a user that does not exist"])
def test_the_sessions_data_says_whose_session_it_is_whatever_the_column_holds(alice, fiona, column):
    client = client_for(alice)
    user_id = {"empty": None, "another user": fiona.pk, "a user that does not exist": fiona.pk + 1000}[column]
    Session.objects.update(user_id=user_id)
    with CaptureQueriesContext(db_connection) as queries:
        assert signed_in_as(client) == alice
    assert len(user_reads(queries)) == 1  # read by its id, as Django's own store does


def test_a_changed_password_signs_the_other_sessions_out(alice):
    client = client_for(alice)
    assert signed_in_as(client) == alice
    alice.set_password("a-new-long-passphrase-42")
    alice.save()
    assert signed_in_as(client) is None


def test_a_deactivated_user_is_signed_out_and_a_deleted_ones_sessions_go_with_them(alice, fiona):
    alice_client, fiona_client = client_for(alice), client_for(fiona)
    User.objects.filter(pk=alice.pk).update(is_active=False)
    assert signed_in_as(alice_client) is None

    assert Session.objects.filter(user=fiona).count() == 1
    fiona.delete()
    assert not Session.objects.filter(user_id=fiona.pk).exists()
    assert signed_in_as(fiona_client) is None


def test_the_upgrade_moves_live_sessions_with_their_user_and_drops_expired_ones(alice):
    codec = SessionStore()  # as the sessions were written before the upgrade
    now = timezone.now()
    DjangoSession.objects.bulk_create(
        [
            DjangoSession(
                "live-signed-in", codec.encode({SESSION_KEY: str(alice.pk)}), now + timedelta(days=1)
            ),
            DjangoSession("live-anonymous", codec.encode({"company_slug": "acme"}), now + timedelta(days=1)),
            DjangoSession("expired", codec.encode({SESSION_KEY: str(alice.pk)}), now - timedelta(seconds=1)),
            DjangoSession("unreadable", "not a signed session", now + timedelta(days=1)),
        ]
    )
    migration = importlib.import_module("doow.migrations.0002_session_with_user")
    migration.move_live_sessions(apps, None)

    moved = {s.session_key: (s.user_id, s.get_decoded()) for s in Session.objects.all()}
    assert moved == {
        "live-signed-in": (alice.pk, {SESSION_KEY: str(alice.pk)}),
        "live-anonymous": (None, {"company_slug": "acme"}),
        "unreadable": (None, {}),
    }
    assert not DjangoSession.objects.exists()
