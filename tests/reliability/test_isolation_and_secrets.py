"""Tenant isolation over every URL that takes an id, and a scan of a whole session (database dump,
logs, every rendered page) for the key or any 8-character piece of it."""

import logging
import sys
from unittest import mock

import httpx
import pytest
from django.apps import apps
from django.core.signals import got_request_exception
from django.db import connection as db
from django.views.debug import ExceptionReporter

from doow.access import ADMINS
from integrations.models import Connection, SyncRun
from tests.conftest import client_for
from tests.support import connect, sync
from tests.url_walker import company_routes, fetch

pytestmark = pytest.mark.django_db


def real_ids(connection, run) -> dict:
    return {"connection_id": connection.pk, "run_id": run.pk, "fmt": "csv"}


@pytest.fixture
def acme_connection(acme, emulator):
    connection = connect(acme, emulator)
    sync(connection, emulator)
    return connection


def test_every_url_with_an_id_is_404_for_another_companys_admin(personas, acme_connection, globex, emulator):
    run = SyncRun.objects.filter(connection=acme_connection).first()
    charlie = client_for(personas["outsider"])
    routes_with_ids = [route for route in company_routes() if route.dummy_kwargs]
    assert len(routes_with_ids) >= 5
    for route in routes_with_ids:
        ids = real_ids(acme_connection, run)
        # Acme's ids under Acme's slug: not a member.
        assert fetch(charlie, route.url("acme", **ids)).status_code == 404, route
        # Acme's ids under Charlie's own company: the object is not his company's.
        assert fetch(charlie, route.url("globex", **ids)).status_code == 404, route
    acme_connection.refresh_from_db()
    assert acme_connection.state == "connected"
    assert acme_connection.secret


def test_finance_and_ops_get_403_for_every_admin_action(personas, acme_connection):
    run = SyncRun.objects.filter(connection=acme_connection).first()
    admin_routes = [route for route in company_routes() if route.allowed_roles == ADMINS]
    assert {route.name for route in admin_routes} >= {
        "openrouter:connect",
        "integrations:disconnect",
        "integrations:sync-now",
    }
    for persona in ("finance", "ops"):
        client = client_for(personas[persona])
        for route in admin_routes:
            url = route.url("acme", **real_ids(acme_connection, run))
            get, post = client.get(url).status_code, client.post(url, {"confirm": "on"}).status_code
            # 403 for the method the view takes; 405 at most for the one it does not.
            assert sorted((get, post)) in ([403, 403], [403, 405]), (persona, route, get, post)
    acme_connection.refresh_from_db()
    assert acme_connection.state == "connected"


def pieces(secret: str) -> set[str]:
    return {secret[i : i + 8] for i in range(len(secret) - 7)}


def database_dump() -> str:
    chunks = []
    with db.cursor() as cursor:
        for model in apps.get_models():
            cursor.execute(f"SELECT * FROM {db.ops.quote_name(model._meta.db_table)}")  # noqa: S608
            chunks.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(chunks)


def test_a_full_session_never_shows_the_key(personas, emulator, emulator_server, caplog, django_user_model):
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    key, new_key = emulator.management_key, emulator.new_management_key()
    seen: list[str] = []
    try:
        admin = client_for(personas["admin"])
        seen.append(
            admin.post("/c/acme/integrations/openrouter/connect/", {"key": key}, follow=True).content.decode()
        )
        connection = Connection.objects.get()
        sync(connection, emulator)
        # The key is rotated, and the new one synced with: neither may show anywhere.
        seen.append(
            admin.post(
                f"/c/acme/integrations/openrouter/{connection.pk}/key/", {"key": new_key}, follow=True
            ).content.decode()
        )
        connection.refresh_from_db()
        assert connection.secret_last4 == new_key[-4:]
        sync(connection, emulator)
        run = SyncRun.objects.filter(connection=connection).first()
        for persona in ("admin", "finance", "ops"):
            client = client_for(personas[persona])
            seen.append(client.get("/c/acme/settings/").content.decode())
            for route in company_routes():
                response = fetch(client, route.url("acme", **real_ids(connection, run)))
                if response.streaming:
                    seen.append(b"".join(response.streaming_content).decode())
                else:
                    seen.append(response.content.decode())
        staff = django_user_model.objects.create_superuser(email="root@doow.test", password="x" * 20)
        root = client_for(staff)
        for path in (
            "/admin/integrations/connection/",
            f"/admin/integrations/connection/{connection.pk}/change/",
            "/admin/integrations/syncevent/",
            "/admin/doow/auditentry/",
        ):
            response = root.get(path)
            assert response.status_code == 200, path
            seen.append(response.content.decode())
        seen.append(database_dump())
        seen.append(
            admin.post(
                f"/c/acme/integrations/{connection.pk}/disconnect/", {"confirm": "on"}, follow=True
            ).content.decode()
        )
        seen.append(database_dump())
    finally:
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)
    seen.extend(record.getMessage() for record in caplog.records)
    everything = "\n".join(seen)
    assert f"sk-or-…{new_key[-4:]}" in everything  # the masked form is what people see
    for secret in (key, new_key):
        leaked = [piece for piece in pieces(secret) if piece in everything]
        assert not leaked, f"{len(leaked)} 8-character pieces of a key were found"


def _fail(*args, **kwargs):
    raise RuntimeError("injected failure")


@pytest.mark.parametrize(
    "failing",
    [
        "openrouter.provider.OpenRouterClient.get_key",  # while verifying with OpenRouter
        "integrations.crypto.os.urandom",  # while encrypting
        "integrations.services.audit_record",  # in the storing transaction
    ],
)
def test_an_error_report_of_a_failed_connect_never_shows_the_key(
    personas, emulator, emulator_server, settings, failing
):
    """What Django mails to ADMINS (or an error tracker renders) for a 500 while connecting: every
    frame's variables, the request's POST data and settings, as text and HTML."""
    settings.DEBUG = False
    key = emulator.management_key
    reports: list[str] = []

    def report(sender, request, **kwargs):
        reporter = ExceptionReporter(request, *sys.exc_info(), is_email=True)
        reports.extend([reporter.get_traceback_text(), reporter.get_traceback_html()])

    got_request_exception.connect(report)
    try:
        with mock.patch(failing, _fail), pytest.raises(RuntimeError):
            client_for(personas["admin"]).post("/c/acme/integrations/openrouter/connect/", {"key": key})
    finally:
        got_request_exception.disconnect(report)
    everything = "\n".join(reports)
    assert "injected failure" in everything and "secret" in everything  # frames and their variables
    leaked = [piece for piece in pieces(key) if piece in everything]
    assert not leaked, f"{len(leaked)} 8-character pieces of the key were found"


def test_an_error_report_hides_a_key_held_by_a_variable_nobody_marked_sensitive(emulator, settings):
    settings.DEBUG = False
    key = emulator.management_key

    def careless(headers):
        raise RuntimeError("injected failure")

    try:
        careless({"note": f"copied {key} from the settings page"})
    except RuntimeError:
        reporter = ExceptionReporter(None, *sys.exc_info(), is_email=True)
        everything = reporter.get_traceback_text() + reporter.get_traceback_html()
    assert "injected failure" in everything and "headers" in everything
    assert not [piece for piece in pieces(key) if piece in everything]


@pytest.mark.parametrize("status", [401, 400])
@pytest.mark.parametrize(
    "quoted",
    [lambda key: f"Bearer {key}", lambda key: key[12:40], lambda key: f"…{key[-9:]}"],
    ids=["the header", "a middle piece", "its tail"],
)
def test_a_server_quoting_the_key_back_gets_no_piece_of_it_stored_or_shown(
    acme, oscar, emulator, status, quoted
):
    """A proxy or gateway in front of OpenRouter may quote the credential in its error message."""
    key = emulator.management_key

    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            status, json={"error": {"code": status, "message": f"Key refused: {quoted(key)}"}}
        )

    connection = connect(acme, emulator)
    sync(connection, emulator, transport=httpx.MockTransport(echo))

    connection.refresh_from_db()
    stored = [connection.attention_reason]
    stored += [f"{event.message} {event.detail}" for event in connection.events.all()]
    stored += [run.error_summary for run in SyncRun.objects.filter(connection=connection)]
    page = client_for(oscar).get("/c/acme/integrations/events/").content.decode()
    assert "Key refused: " in page and "[redacted]" in page
    assert not [piece for piece in pieces(key) if piece in page or any(piece in text for text in stored)]
