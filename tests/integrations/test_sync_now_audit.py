"""Manual "sync now" (R26): one audit row with actor, company and IP, and no secret in it."""

import json
from datetime import timedelta
from unittest import mock

import pytest
from django.urls import reverse
from django.utils import timezone
from kombu.exceptions import OperationalError

from doow.models import AuditEntry
from integrations.models import SYNC_QUEUED_SHOWN_FOR, Connection, SyncEvent
from integrations.services import connection_disconnect, sync_claim, sync_release
from tests.conftest import client_for
from tests.support import connect, sync

pytestmark = pytest.mark.django_db


def pieces(secret: str, size: int = 8):
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


@pytest.fixture
def send_task():
    with mock.patch("doow.celery.app.send_task") as patched:
        yield patched


def sync_now_url(connection) -> str:
    return reverse("integrations:sync-now", args=["acme", connection.pk])


def test_sync_now_writes_exactly_one_audit_row(acme, alice, emulator, send_task):
    connection = connect(acme, emulator, name="Prod org")
    before = set(AuditEntry.objects.values_list("pk", flat=True))

    response = client_for(alice).post(sync_now_url(connection))

    assert response.status_code == 302
    new_rows = AuditEntry.objects.exclude(pk__in=before)
    assert new_rows.count() == 1
    row = new_rows.get()
    assert row.action == "connection.sync_requested"
    assert row.actor == alice
    assert row.company == acme
    assert row.ip_address == "127.0.0.1"
    assert row.target == f"openrouter:{connection.pk}"
    assert row.created_at is not None
    text = json.dumps(row.detail) + row.target
    assert not [piece for piece in pieces(emulator.management_key) if piece in text]
    assert connection.secret.split(":")[3][:16] not in text


def test_a_refused_sync_now_writes_no_audit_row(acme, alice, oscar, emulator, send_task):
    connection = connect(acme, emulator)
    # Ops may not sync; a disconnected connection cannot be synced.
    assert client_for(oscar).post(sync_now_url(connection)).status_code == 403
    connection_disconnect(connection=connection, actor=alice)
    before = AuditEntry.objects.count()
    client_for(alice).post(sync_now_url(connection))
    assert AuditEntry.objects.count() == before
    assert not AuditEntry.objects.filter(action="connection.sync_requested").exists()


def test_sync_now_while_a_sync_runs_queues_nothing_and_says_so(
    acme, alice, emulator, send_task, django_capture_on_commit_callbacks
):
    connection = connect(acme, emulator, name="Prod org")
    token = sync_claim(connection_id=connection.pk)
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(alice).post(sync_now_url(connection), follow=True)
    assert "Prod org is syncing now" in response.content.decode()
    assert not send_task.called
    assert not AuditEntry.objects.filter(action="connection.sync_requested").exists()
    assert not SyncEvent.objects.filter(connection=connection, code="sync_requested").exists()

    sync_release(connection_id=connection.pk, token=token)
    with django_capture_on_commit_callbacks(execute=True):
        client_for(alice).post(sync_now_url(connection))
    assert send_task.call_count == 1


def cards(user) -> str:
    return client_for(user).get(reverse("integrations:cards", args=["acme"])).content.decode()


def test_a_queued_sync_shows_on_its_card_which_polls_until_a_worker_starts_it(
    acme, alice, emulator, send_task, django_capture_on_commit_callbacks
):
    connection = connect(acme, emulator, name="Prod org")
    sync(connection, emulator)  # the initial sync is over: the card shows the connection at rest
    assert 'data-testid="sync-queued"' not in cards(alice) and "hx-trigger" not in cards(alice)

    with django_capture_on_commit_callbacks(execute=True):
        client_for(alice).post(sync_now_url(connection))

    shown = cards(alice)
    assert 'data-testid="sync-queued"' in shown and "waiting for a worker to start it" in shown
    assert 'hx-trigger="every 2s"' in shown  # the card refreshes itself
    assert 'disabled title="A sync is queued"' in shown
    with django_capture_on_commit_callbacks(execute=True):
        again = client_for(alice).post(sync_now_url(connection), follow=True).content.decode()
    assert "A sync of Prod org is already queued" in again
    assert send_task.call_count == 1

    token = sync_claim(connection_id=connection.pk)  # a worker starts it
    assert 'data-testid="sync-queued"' not in cards(alice) and 'data-testid="sync-progress"' in cards(alice)
    sync_release(connection_id=connection.pk, token=token)


def test_a_sync_no_worker_started_is_called_queued_for_a_while_only(acme, alice, emulator, send_task):
    connection = connect(acme, emulator, name="Prod org")
    sync(connection, emulator)
    requested = timezone.now() - SYNC_QUEUED_SHOWN_FOR - timedelta(seconds=1)
    Connection.objects.filter(pk=connection.pk).update(sync_requested_at=requested)
    assert 'data-testid="sync-queued"' not in cards(alice) and "hx-trigger" not in cards(alice)


@pytest.mark.django_db(transaction=True)
def test_sync_now_while_the_task_queue_is_down_says_so_and_can_be_asked_again(acme, alice, emulator):
    connection = connect(acme, emulator, name="Prod org")
    with mock.patch("doow.celery.app.send_task", side_effect=OperationalError("connection refused")):
        page = client_for(alice).post(sync_now_url(connection), follow=True)

    assert page.status_code == 200
    assert "could not be queued: the task queue is not answering" in page.content.decode()
    connection.refresh_from_db()
    assert connection.sync_requested_at is None and connection.sync_queued_since is None
    event = SyncEvent.objects.get(connection=connection, code="sync_not_queued")
    assert event.level == "warning" and "next scheduled sync" in event.message

    with mock.patch("doow.celery.app.send_task") as send_task:  # the queue is back
        again = client_for(alice).post(sync_now_url(connection), follow=True).content.decode()
    assert "Sync of Prod org queued." in again and send_task.call_count == 1


def test_a_key_connected_while_the_task_queue_is_down_is_kept_and_says_its_sync_waits(
    acme, emulator, django_capture_on_commit_callbacks
):
    with (
        mock.patch("doow.celery.app.send_task", side_effect=OperationalError("connection refused")),
        django_capture_on_commit_callbacks(execute=True),
    ):
        connection = connect(acme, emulator, name="Prod org")

    connection.refresh_from_db()
    assert connection.is_live and connection.secret and connection.sync_requested_at is None
    assert SyncEvent.objects.filter(connection=connection, code="sync_not_queued").exists()
