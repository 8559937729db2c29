"""The admin's journey: connect (verify, store encrypted, enqueue the initial sync) and disconnect."""

import html
import io
import logging
import re
from unittest import mock

import pytest
from django.core.management import CommandError, call_command
from django.db import connection as db
from django.urls import reverse

from doow.models import AuditEntry
from integrations.models import Connection, ConnectionState, SyncEvent
from openrouter.emulator import Fault
from tests.conftest import client_for
from tests.support import connect, sync
from usage.models import UsageDaily

pytestmark = pytest.mark.django_db

CONNECT_URL = "/c/acme/integrations/openrouter/connect/"


def pieces(secret: str, size: int = 8):
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


def assert_no_piece_of(secret: str, text: str) -> None:
    leaked = [piece for piece in pieces(secret) if piece in text]
    assert not leaked, f"{len(leaked)} pieces of the key leaked"


def raw_row(connection_id: int):
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT secret, secret_last4, state FROM integrations_connection WHERE id = %s", [connection_id]
        )
        return cursor.fetchone()


@pytest.fixture
def send_task():
    with mock.patch("doow.celery.app.send_task") as patched:
        yield patched


def test_admin_connects_a_management_key(
    alice, emulator, emulator_server, send_task, django_capture_on_commit_callbacks
):
    client = client_for(alice)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post(CONNECT_URL, {"key": emulator.management_key, "name": "Prod org"})

    assert response.status_code == 302
    connection = Connection.objects.get(company__slug="acme")
    assert connection.name == "Prod org"
    assert connection.scope == "organization"
    assert connection.state == ConnectionState.SYNCING
    assert connection.external_account_id.startswith("org_")
    secret, last4, _state = raw_row(connection.pk)
    assert_no_piece_of(emulator.management_key, secret)
    assert last4 == emulator.management_key[-4:]
    # The initial sync is enqueued only once the transaction commits.
    assert len(callbacks) == 1
    send_task.assert_called_once_with(
        "openrouter.sync_connection", args=[connection.pk], kwargs={"trigger": "initial"}
    )
    assert SyncEvent.objects.filter(connection=connection, code="credential_verified").exists()
    assert AuditEntry.objects.filter(
        company=connection.company, action="connection.connected", actor=alice
    ).exists()
    page = client.get("/c/acme/settings/").content.decode()
    assert f"sk-or-…{emulator.management_key[-4:]}" in page
    assert_no_piece_of(emulator.management_key, page)


def test_a_normal_key_connects_with_single_key_scope_and_a_notice(
    alice, emulator, emulator_server, send_task
):
    response = client_for(alice).post(CONNECT_URL, {"key": emulator.normal_key}, follow=True)
    connection = Connection.objects.get()
    assert connection.scope == "single_key"
    assert "A normal OpenRouter API key may only expose usage for that key" in response.content.decode()


@pytest.mark.parametrize("kind", ["unknown", "revoked"])
def test_a_refused_key_is_not_stored_and_not_echoed(alice, emulator, emulator_server, kind):
    key = "sk-or-v1-" + "0" * 64 if kind == "unknown" else emulator.management_key
    if kind == "revoked":
        emulator.revoke(key)
    response = client_for(alice).post(CONNECT_URL, {"key": key})
    body = response.content.decode()
    assert response.status_code == 200
    assert "did not accept this key" in body
    assert_no_piece_of(key, body)
    assert not Connection.objects.exists()


@pytest.mark.parametrize("fault", [Fault(path="/key", status=503), Fault(path="/key", hang=True)])
def test_openrouter_unreachable_during_verification_stores_nothing(
    alice, emulator, emulator_server, settings, fault
):
    settings.OPENROUTER_TIMEOUT_SECONDS = 0.5
    emulator.faults.add(fault)
    response = client_for(alice).post(CONNECT_URL, {"key": emulator.management_key})
    assert "Could not reach OpenRouter" in response.content.decode()
    assert not Connection.objects.exists()


def test_a_connect_rolled_back_after_enqueueing_sends_no_task(
    alice, emulator, emulator_server, send_task, django_capture_on_commit_callbacks
):
    """The initial sync is sent on commit: a connect that fails after asking for it (here, right
    after) rolls back and sends nothing, so no worker looks for a connection that does not exist."""
    from integrations import services

    real_enqueue = services.connection_enqueue_sync

    def enqueue_then_fail(**kwargs):
        real_enqueue(**kwargs)
        raise RuntimeError("injected failure after enqueueing")

    with (
        mock.patch.object(services, "connection_enqueue_sync", enqueue_then_fail),
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
    ):
        client_for(alice).post(CONNECT_URL, {"key": emulator.management_key})

    assert callbacks == []
    send_task.assert_not_called()
    assert not Connection.objects.exists()
    assert not AuditEntry.objects.exists()


def test_network_error_during_verification_stores_nothing(alice, emulator, settings):
    settings.OPENROUTER_BASE_URL = "http://127.0.0.1:9/api/v1"  # nothing listens on the discard port
    response = client_for(alice).post(CONNECT_URL, {"key": emulator.management_key})
    assert "Could not reach OpenRouter" in response.content.decode()
    assert not Connection.objects.exists()


def test_the_same_organization_cannot_be_connected_twice(alice, emulator, emulator_server, send_task):
    client = client_for(alice)
    client.post(CONNECT_URL, {"key": emulator.management_key})
    response = client.post(CONNECT_URL, {"key": emulator.management_key})
    assert "already has a live connection" in response.content.decode()
    assert Connection.objects.count() == 1


def test_a_concurrent_connect_of_the_same_organization_gets_the_same_clear_error(
    alice, emulator, emulator_server, send_task
):
    """A double-clicked Connect: the second request's duplicate check runs before the first one
    commits, so the database constraint is what stops it."""
    client = client_for(alice)
    client.post(CONNECT_URL, {"key": emulator.management_key})
    with mock.patch("django.db.models.query.QuerySet.exists", return_value=False):
        response = client.post(CONNECT_URL, {"key": emulator.management_key})
    assert response.status_code == 200
    assert "already has a live connection" in response.content.decode()
    assert Connection.objects.count() == 1


def test_blank_and_malformed_keys_get_a_clear_error(alice):
    client = client_for(alice)
    assert "This field is required" in client.post(CONNECT_URL, {"key": ""}).content.decode()
    assert (
        "does not look like an OpenRouter key" in client.post(CONNECT_URL, {"key": "short"}).content.decode()
    )


def test_every_field_description_the_connect_form_points_at_exists(alice):
    """aria-describedby names ids; one with no element leaves a screen reader without the help text."""
    for page in (client_for(alice).get(CONNECT_URL), client_for(alice).post(CONNECT_URL, {"key": "short"})):
        text = page.content.decode()
        described = {i for ids in re.findall(r'aria-describedby="([^"]+)"', text) for i in ids.split()}
        assert {"id_name_helptext", "id_key_helptext"} <= described
        assert all(f'id="{i}"' in text for i in described), described


@pytest.mark.parametrize("key", ["sk-or-v1-0123456789abcdef’0123", "sk-or-v1-0123456789abcdef\x7f0123"])
def test_a_key_with_characters_no_key_has_gets_a_clear_error(alice, key):
    response = client_for(alice).post(CONNECT_URL, {"key": key})
    assert response.status_code == 200
    assert "does not look like an OpenRouter key" in response.content.decode()
    assert not Connection.objects.exists()


@pytest.mark.parametrize("persona,status", [("finance", 403), ("ops", 403), ("outsider", 404)])
def test_only_admins_of_the_company_may_connect(personas, persona, status, emulator):
    client = client_for(personas[persona])
    assert client.get(CONNECT_URL).status_code == status
    assert client.post(CONNECT_URL, {"key": emulator.management_key}).status_code == status
    assert not Connection.objects.exists()


def test_connect_without_csrf_token_is_refused(alice, emulator):
    client = client_for(alice, enforce_csrf_checks=True)
    assert client.post(CONNECT_URL, {"key": emulator.management_key}).status_code == 403


def test_the_key_never_reaches_logs(alice, emulator, emulator_server, caplog, send_task):
    caplog.set_level(logging.DEBUG)
    names = ("httpx", "httpcore", "django", "openrouter", "integrations")
    saved = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        client_for(alice).post(CONNECT_URL, {"key": emulator.management_key})
        connection = Connection.objects.get()
        sync(connection, emulator)
        emulator.revoke(emulator.management_key)
        sync(connection, emulator)
        client_for(alice).post(CONNECT_URL, {"key": "sk-or-v1-" + "9" * 64})
    finally:
        # Leave no logger at DEBUG: later tests count queries, and DEBUG logging renders reprs.
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert caplog.records, "expected log output at DEBUG"
    assert_no_piece_of(emulator.management_key, text)
    assert "Bearer sk-or" not in text


# --- disconnect


@pytest.fixture
def synced(acme, emulator):
    connection = connect(acme, emulator, name="Prod org")
    sync(connection, emulator)
    return connection


def disconnect_url(connection) -> str:
    return reverse("integrations:disconnect", args=["acme", connection.pk])


def test_disconnect_asks_for_confirmation_first(alice, synced):
    client = client_for(alice)
    page = client.get(reverse("integrations:disconnect-confirm", args=["acme", synced.pk]))
    assert page.status_code == 200
    assert f'action="{disconnect_url(synced)}"' in page.content.decode()
    assert (
        "Revoke it in OpenRouter" in page.content.decode()
        or "revoke it in OpenRouter" in page.content.decode()
    )
    unconfirmed = client.post(disconnect_url(synced), {})
    assert unconfirmed.status_code == 200
    assert raw_row(synced.pk)[0].startswith("enc:v1:")


def test_a_get_of_the_disconnect_url_is_405_and_changes_nothing(alice, synced):
    response = client_for(alice).get(disconnect_url(synced))
    assert response.status_code == 405
    assert raw_row(synced.pk)[0].startswith("enc:v1:")
    assert raw_row(synced.pk)[2] != "disconnected"


def test_disconnect_deletes_the_key_at_once_and_keeps_usage(alice, synced):
    rows_before = UsageDaily.objects.filter(connection=synced).count()
    assert rows_before

    response = client_for(alice).post(disconnect_url(synced), {"confirm": "on"}, follow=True)

    assert raw_row(synced.pk) == ("", "", "disconnected")
    assert "Revoke the key in OpenRouter" in response.content.decode()
    assert UsageDaily.objects.filter(connection=synced).count() == rows_before
    assert SyncEvent.objects.filter(connection=synced, code="disconnected").exists()
    assert AuditEntry.objects.filter(action="connection.disconnected", actor=alice).exists()
    synced.refresh_from_db()
    assert synced.generation == 1


def test_disconnect_can_also_delete_usage_data(alice, synced):
    client_for(alice).post(disconnect_url(synced), {"confirm": "on", "delete_usage": "on"})
    assert not UsageDaily.objects.filter(connection=synced).exists()


def test_next_scheduled_sync_after_disconnect_makes_no_request(alice, synced, emulator):
    client_for(alice).post(disconnect_url(synced), {"confirm": "on"})
    emulator.request_log.clear()
    assert sync(synced, emulator).status == "skipped"
    assert len(emulator.request_log) == 0


@pytest.mark.parametrize("persona,status", [("finance", 403), ("ops", 403), ("outsider", 404)])
def test_only_admins_of_the_company_may_disconnect(personas, synced, persona, status):
    client = client_for(personas[persona])
    confirm_url = reverse("integrations:disconnect-confirm", args=["acme", synced.pk])
    assert client.get(confirm_url).status_code == status
    assert client.post(disconnect_url(synced), {"confirm": "on"}).status_code == status
    assert raw_row(synced.pk)[2] != "disconnected"


def test_disconnect_without_csrf_token_is_refused(alice, synced):
    response = client_for(alice, enforce_csrf_checks=True).post(disconnect_url(synced), {"confirm": "on"})
    assert response.status_code == 403
    assert raw_row(synced.pk)[2] != "disconnected"


# --- management commands


def test_connect_command_reads_the_key_from_a_file(acme, emulator, emulator_server, tmp_path, send_task):
    key_file = tmp_path / "key"
    key_file.write_text(emulator.management_key + "\n")
    out = io.StringIO()
    call_command(
        "openrouter_connect", "--company", "acme", "--key-file", str(key_file), "--name", "CLI", stdout=out
    )
    assert out.getvalue().startswith("Connected CLI")
    assert_no_piece_of(emulator.management_key, out.getvalue())
    assert Connection.objects.get().name == "CLI"


def test_connect_command_reads_stdin_and_fails_clearly(acme, emulator, emulator_server, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("sk-or-v1-" + "1" * 64))
    with pytest.raises(CommandError, match="did not accept this key"):
        call_command("openrouter_connect", "--company", "acme", "--key-stdin")
    with pytest.raises(CommandError, match="No company"):
        call_command("openrouter_connect", "--company", "nope", "--key-stdin")


def test_disconnect_command(acme, synced):
    # A connection id that matches none disconnects none (0 once counted as "not given").
    with pytest.raises(CommandError, match="No live OpenRouter connection"):
        call_command("openrouter_disconnect", "--company", "acme", "--connection", "0")
    assert raw_row(synced.pk)[2] != "disconnected"
    out = io.StringIO()
    call_command("openrouter_disconnect", "--company", "acme", stdout=out)
    assert "stored key deleted" in out.getvalue()
    assert raw_row(synced.pk) == ("", "", "disconnected")
    with pytest.raises(CommandError, match="No live OpenRouter connection"):
        call_command("openrouter_disconnect", "--company", "acme")


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        (Fault(path="/key", retry_after=3600), "OpenRouter is limiting requests right now"),
        (Fault(path="/key", status=400), "OpenRouter's answer to the key check could not be used (http_400)"),
        (
            Fault(path="/key", non_json=True),
            "OpenRouter's answer to the key check could not be used (malformed)",
        ),
    ],
    ids=["rate-limited", "rejected", "not-json"],
)
def test_an_answer_that_cannot_be_used_says_so_not_that_openrouter_is_unreachable(
    alice, emulator, emulator_server, fault, said
):
    emulator.faults.add(fault)
    body = client_for(alice).post(CONNECT_URL, {"key": emulator.management_key}).content.decode()
    assert said in html.unescape(body) and "Nothing was stored" in body
    assert "Could not reach" not in body
    assert_no_piece_of(emulator.management_key, body)
    assert not Connection.objects.exists()


class Terminal(io.StringIO):
    """Standard input as a person at a terminal types it."""

    def isatty(self) -> bool:
        return True


def test_disconnect_command_deletes_usage_only_once_confirmed(acme, synced, monkeypatch):
    from usage.models import UsageDaily

    rows = UsageDaily.objects.filter(connection=synced).count()
    assert rows
    # No terminal (a script, CI): refused, nothing changed.
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(CommandError, match=f"deletes {rows} usage rows .* pass --yes. Nothing was changed"):
        call_command("openrouter_disconnect", "--company", "acme", "--delete-usage")
    # At a terminal, anything but the connection id is a no.
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    with pytest.raises(CommandError, match="Not confirmed"):
        call_command("openrouter_disconnect", "--company", "acme", "--delete-usage")
    assert raw_row(synced.pk)[2] != "disconnected"
    assert UsageDaily.objects.filter(connection=synced).count() == rows

    monkeypatch.setattr("sys.stdin", Terminal(f"{synced.pk}\n"))
    out = io.StringIO()
    call_command("openrouter_disconnect", "--company", "acme", "--delete-usage", stdout=out)

    assert f"{rows} usage rows deleted" in out.getvalue()
    assert not UsageDaily.objects.filter(connection=synced).exists()


def test_disconnect_command_deletes_usage_without_asking_when_told_to(acme, synced):
    from usage.models import UsageDaily

    call_command(
        "openrouter_disconnect", "--company", "acme", "--delete-usage", "--yes", stdout=io.StringIO()
    )

    assert raw_row(synced.pk) == ("", "", "disconnected")
    assert not UsageDaily.objects.filter(connection=synced).exists()
