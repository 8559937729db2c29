"""Replace key: a new key of the same organization takes the old one's place on the same connection, so
its history, budgets and owners stay; a disconnected connection is connected again the same way."""

import io
from unittest import mock

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from doow.models import AuditEntry
from integrations.models import Connection, ConnectionState, SyncEvent, SyncRun
from integrations.services import connection_disconnect, connection_mark_attention, connection_secret
from openrouter.alerts import budget_create
from openrouter.emulator import Emulator, EmulatorConfig
from openrouter.emulator.log import key_fingerprint
from openrouter.services import openrouter_replace_key
from openrouter.sync import _SyncJob
from tests.conftest import client_for
from tests.support import TODAY, connect, sync, usage_snapshot
from usage.models import Budget

pytestmark = pytest.mark.django_db


@pytest.fixture
def send_task():
    with mock.patch("doow.celery.app.send_task") as patched:
        yield patched


@pytest.fixture
def synced(acme, emulator):
    connection = connect(acme, emulator, name="Prod org")
    assert sync(connection, emulator).status == "succeeded"
    return connection


def replace_url(connection) -> str:
    return reverse("openrouter:replace-key", args=["acme", connection.pk])


def leaked_pieces(secret: str, text: str) -> list[str]:
    return [secret[i : i + 8] for i in range(len(secret) - 7) if secret[i : i + 8] in text]


def test_pasting_the_key_in_use_again_checks_it_and_does_not_say_to_revoke_it(
    alice, synced, emulator, emulator_server, send_task, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(alice).post(replace_url(synced), {"key": emulator.management_key}, follow=True)

    page = response.content.decode()
    assert "Prod org already uses this key (sk-or-…" in page and "a sync has started" in page
    assert "Revoke" not in page
    assert not leaked_pieces(emulator.management_key, page)
    assert connection_secret(Connection.objects.get(pk=synced.pk)) == emulator.management_key


def test_the_key_fields_description_is_there_for_the_field_pointing_at_it(alice, synced):
    page = client_for(alice).get(replace_url(synced)).content.decode()
    assert 'aria-describedby="id_key_helptext"' in page and 'id="id_key_helptext"' in page


def test_a_revoked_key_is_replaced_in_place_and_the_connection_keeps_its_history(
    alice, synced, emulator, emulator_server, send_task, django_capture_on_commit_callbacks
):
    budget_create(connection=synced, scope="connection", target="", target_label="", monthly_usd=100)
    history = usage_snapshot(synced)
    emulator.revoke(emulator.management_key)
    sync(synced, emulator)
    synced.refresh_from_db()
    assert synced.state == ConnectionState.NEEDS_ATTENTION
    assert "Replace key" in synced.attention_reason
    generation = synced.generation
    new_key = emulator.new_management_key()

    client = client_for(alice)
    assert "Replace the key of Prod org" in client.get(replace_url(synced)).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(replace_url(synced), {"key": new_key}, follow=True)

    page = response.content.decode()
    assert f"Prod org has its new key (sk-or-…{new_key[-4:]}) and a sync has started." in page
    assert not leaked_pieces(new_key, page)
    connection = Connection.objects.get()  # the same connection: no second one
    assert connection.pk == synced.pk
    assert connection.state == ConnectionState.SYNCING and connection.attention_reason == ""
    assert connection.generation == generation + 1
    assert connection.secret_last4 == new_key[-4:]
    assert connection_secret(connection) == new_key
    assert not leaked_pieces(new_key, connection.secret)
    send_task.assert_called_once_with(
        "openrouter.sync_connection", args=[connection.pk], kwargs={"trigger": "manual"}
    )
    event = SyncEvent.objects.get(connection=connection, code="credential_replaced")
    assert (
        event.message
        == f"Key replaced by {alice.email}: sk-or-…{new_key[-4:]} now reads {connection.account_label}."
    )
    assert (
        AuditEntry.objects.filter(
            action="connection.key_replaced", actor=alice, company=connection.company
        ).count()
        == 1
    )

    assert sync(connection, emulator).status == "succeeded"
    connection.refresh_from_db()
    assert connection.state == ConnectionState.CONNECTED
    assert usage_snapshot(connection) == history
    assert Budget.objects.filter(connection=connection).count() == 1
    assert {entry.key_id for entry in emulator.request_log[-5:]} == {key_fingerprint(new_key)}


def test_a_key_of_another_organization_a_normal_key_or_a_refused_key_changes_nothing(
    alice, synced, emulator, emulator_server, settings
):
    other = Emulator(EmulatorConfig(seed=99, keys=3, today=TODAY))
    client = client_for(alice)
    before = Connection.objects.values().get()
    with other.serve() as other_server:
        settings.OPENROUTER_BASE_URL = other_server.base_url
        page = client.post(replace_url(synced), {"key": other.management_key}).content.decode()
    settings.OPENROUTER_BASE_URL = emulator_server.base_url
    assert f"That key belongs to {other.world.organization_id}, not to {synced.account_label}" in page
    assert "Nothing was changed." in page
    page = client.post(replace_url(synced), {"key": emulator.normal_key}).content.decode()
    assert "its key must be a management key of it" in page
    page = client.post(replace_url(synced), {"key": "sk-or-v1-" + "0" * 64}).content.decode()
    assert "OpenRouter did not accept this key" in page
    for key in (other.management_key, emulator.normal_key):
        assert not leaked_pieces(key, page)
    assert Connection.objects.values().get() == before
    assert not SyncEvent.objects.filter(code="credential_replaced").exists()
    assert not AuditEntry.objects.filter(
        action__in=["connection.key_replaced", "connection.reconnected"]
    ).exists()


def test_a_disconnected_connection_is_connected_again_with_its_history(
    alice, synced, emulator, emulator_server, send_task
):
    history = usage_snapshot(synced)
    connection_disconnect(connection=synced, actor=alice)
    client = client_for(alice)
    settings_page = client.get("/c/acme/settings/").content.decode()
    assert 'data-testid="connect-again"' in settings_page
    assert "Connect Prod org again" in client.get(replace_url(synced)).content.decode()

    page = client.post(replace_url(synced), {"key": emulator.management_key}, follow=True).content.decode()

    assert "Prod org is connected again" in page
    connection = Connection.objects.get()
    assert connection.state == ConnectionState.SYNCING and connection.disconnected_at is None
    assert connection_secret(connection) == emulator.management_key
    assert AuditEntry.objects.filter(action="connection.reconnected", actor=alice).count() == 1
    assert sync(connection, emulator).status == "succeeded"
    assert usage_snapshot(connection) == history


def test_connecting_again_is_refused_while_another_connection_reads_the_organization(
    alice, acme, synced, emulator, emulator_server
):
    connection_disconnect(connection=synced, actor=alice)
    # A second connection to the organization, as one made before connecting reused the disconnected one.
    Connection.objects.create(
        company=acme,
        provider="openrouter",
        name="Newer",
        state=ConnectionState.CONNECTED,
        scope=synced.scope,
        external_account_id=synced.external_account_id,
        account_label=synced.account_label,
    )
    page = client_for(alice).post(replace_url(synced), {"key": emulator.management_key}).content.decode()
    assert "already has a live connection" in page and "Nothing was changed." in page
    synced.refresh_from_db()
    assert synced.state == ConnectionState.DISCONNECTED and synced.secret == ""


def test_connecting_a_disconnected_organization_again_continues_its_connection(
    alice, synced, emulator, emulator_server, send_task
):
    """The admin who disconnected, then pastes a key of the same organization into the Connect form,
    gets the same connection back with its history, not a second one beside it."""
    history = usage_snapshot(synced)
    connection_disconnect(connection=synced, actor=alice)
    new_key = emulator.new_management_key()
    response = client_for(alice).post(
        "/c/acme/integrations/openrouter/connect/", {"key": new_key, "name": ""}, follow=True
    )
    page = response.content.decode()
    assert "Prod org is connected again and a sync has started." in page and "initial sync" not in page
    assert "This organization was connected before (disconnected " in page
    assert "its usage history, budgets and key owners go on" in page
    connection = Connection.objects.get()
    assert connection.pk == synced.pk and connection.name == "Prod org"
    assert connection.state == ConnectionState.SYNCING and connection_secret(connection) == new_key
    assert AuditEntry.objects.filter(action="connection.reconnected", actor=alice).count() == 1
    assert sync(connection, emulator).status == "succeeded"
    assert usage_snapshot(connection) == history


def test_a_single_key_connection_takes_only_its_own_key_back(alice, acme, emulator, emulator_server):
    connection = connect(acme, emulator, secret=emulator.normal_key)
    connection_disconnect(connection=connection, actor=alice)
    client = client_for(alice)
    page = client.post(replace_url(connection), {"key": emulator.management_key}).content.decode()
    assert "another key cannot stand in for" in page
    assert "OpenRouter API key" in page and "management key" not in page.split("<form")[1]
    client.post(replace_url(connection), {"key": emulator.normal_key})
    connection.refresh_from_db()
    assert connection.state == ConnectionState.SYNCING
    assert connection_secret(connection) == emulator.normal_key


def test_disconnecting_says_where_in_openrouter_the_key_is_revoked(alice, acme, emulator):
    normal = connect(acme, emulator, secret=emulator.normal_key, name="One key")
    organization = connect(acme, emulator, name="Prod org")
    client = client_for(alice)
    for connection, where in ((normal, "Settings → API Keys"), (organization, "Settings → Management keys")):
        confirm = reverse("integrations:disconnect-confirm", args=["acme", connection.pk])
        assert f"revoke it in OpenRouter ({where})" in client.get(confirm).content.decode()
        disconnect = reverse("integrations:disconnect", args=["acme", connection.pk])
        done = client.post(disconnect, {"confirm": "on"}, follow=True).content.decode()
        assert f"Revoke the key in OpenRouter ({where}) too." in done


def test_a_sync_that_read_the_replaced_key_does_not_flag_the_new_one(
    alice, synced, emulator, emulator_server
):
    in_flight = Connection.objects.get()  # as a sync loaded it, before the key was replaced
    client_for(alice).post(replace_url(synced), {"key": emulator.new_management_key()})
    flagged = connection_mark_attention(
        connection=in_flight,
        reason="OpenRouter refused the stored key (401)",
        code="credential_refused",
        kind="credential",
    )
    synced.refresh_from_db()
    assert synced.state == ConnectionState.SYNCING and synced.attention_reason == ""
    assert flagged is False and not SyncEvent.objects.filter(code="credential_refused").exists()


def test_a_sync_whose_key_is_replaced_and_revoked_while_it_runs_ends_aborted_and_logs_no_refusal(
    acme, emulator, settings
):
    """The admin replaces the key and revokes the old one in OpenRouter, as Replace key asks, while a
    sync reads with the old one: its 401 is the old key's, so the sync ends aborted and the event log
    holds no "key refused" error, which, right after the replacement, would read as the new key's."""
    # Each key page is written before the next request, so nothing is left to write when the 401
    # comes (a write would find the key replaced and abort the sync before the 401 is looked at).
    settings.OPENROUTER_WRITE_BATCH_KEYS = 1
    connection = connect(acme, emulator, name="Prod org")
    old_key = emulator.management_key
    fetch_activity = _SyncJob.fetch_activity

    def replace_before_the_account_activity(job, **kwargs):
        if not kwargs.get("api_key_hash"):
            with mock.patch("doow.celery.app.send_task"):
                openrouter_replace_key(
                    connection=connection,
                    secret=emulator.new_management_key(),
                    transport=emulator.transport(),
                )
            emulator.revoke(old_key)
        return fetch_activity(job, **kwargs)

    with mock.patch.object(_SyncJob, "fetch_activity", replace_before_the_account_activity):
        result = sync(connection, emulator)

    assert result.status == "aborted"
    run = SyncRun.objects.get(pk=result.run_id)
    assert (run.status, run.error_summary) == ("aborted", "aborted_disconnected")
    assert not SyncEvent.objects.filter(connection=connection, level="error").exists()
    connection.refresh_from_db()
    assert (connection.state, connection.attention_reason) == ("syncing", "")


def test_the_connect_command_replaces_a_connections_key(
    synced, emulator, emulator_server, tmp_path, send_task
):
    new_key = emulator.new_management_key()
    key_file = tmp_path / "key"
    key_file.write_text(new_key + "\n")
    out = io.StringIO()
    call_command(
        "openrouter_connect",
        "--company",
        "acme",
        "--connection",
        str(synced.pk),
        "--key-file",
        key_file,
        stdout=out,
    )
    assert out.getvalue().strip() == (
        f"Replaced the key of Prod org (id {synced.pk}) of acme: key sk-or-…{new_key[-4:]}; sync queued."
    )
    assert connection_secret(Connection.objects.get()) == new_key
    # --name renames the connection with the same replacement; without it the name stays.
    renamed = emulator.new_management_key()
    key_file.write_text(renamed)
    call_command(
        "openrouter_connect", "--company", "acme", "--connection", str(synced.pk), "--key-file", key_file,
        "--name", "Production org", stdout=out,
    )  # fmt: skip
    assert Connection.objects.get().name == "Production org"
    assert connection_secret(Connection.objects.get()) == renamed
    with pytest.raises(CommandError, match="has no OpenRouter connection with id 999"):
        call_command("openrouter_connect", "--company", "acme", "--connection", "999", "--key-file", key_file)
    key_file.write_text(emulator.normal_key)
    with pytest.raises(CommandError, match="must be a management key"):
        call_command(
            "openrouter_connect", "--company", "acme", "--connection", str(synced.pk), "--key-file", key_file
        )
    assert connection_secret(Connection.objects.get()) == renamed  # the refused key changed nothing


def test_the_connect_command_says_when_it_connected_a_disconnected_organization_again(
    alice, synced, emulator, emulator_server, tmp_path, send_task
):
    connection_disconnect(connection=synced, actor=alice)
    new_key = emulator.new_management_key()
    key_file = tmp_path / "key"
    key_file.write_text(new_key)
    out = io.StringIO()
    call_command("openrouter_connect", "--company", "acme", "--key-file", key_file, stdout=out)
    assert out.getvalue().startswith(
        f"Connected again Prod org (id {synced.pk}) to acme: organization scope, key sk-or-…{new_key[-4:]}; "
        "sync queued. Note: This organization was connected before"
    )
    assert Connection.objects.get().pk == synced.pk


def test_connecting_a_disconnected_organization_again_under_a_new_name_renames_it(
    alice, acme, synced, emulator
):
    connection_disconnect(connection=synced, actor=alice)
    connection = connect(acme, emulator, name="  Production org  ")
    connection.refresh_from_db()
    assert connection.pk == synced.pk and connection.name == "Production org"
    assert connection.state == ConnectionState.SYNCING
