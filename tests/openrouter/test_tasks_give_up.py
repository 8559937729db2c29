"""When the sync task has used up its retries: a clear event says so, and the connection stays
scheduled for its next regular sync (it is not left failing silently, nor marked for attention)."""

from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from integrations.models import ConnectionState, SyncEvent, SyncRun
from integrations.services import connections_due
from openrouter.emulator import Fault
from openrouter.sync import sync_connection
from openrouter.tasks import sync_connection_task
from tests.support import EMULATOR_BASE_URL, Sleeps, connect, noon

pytestmark = pytest.mark.django_db


def run_task(emulator, connection, *, retries: int):
    """The Celery task as a worker runs it on its `retries`-th retry, its sync against the emulator."""

    def in_process(connection_id, **kwargs):
        return sync_connection(
            connection_id,
            transport=emulator.transport(),
            base_url=EMULATOR_BASE_URL,
            sleep=Sleeps(),
            now=noon(emulator.today),
            **kwargs,
        )

    with (
        mock.patch("openrouter.tasks.sync_connection", in_process),
        mock.patch("openrouter.tasks.evaluate_alerts_task"),
    ):
        return sync_connection_task.apply(args=[connection.pk], retries=retries)


def test_the_last_retry_that_fails_records_that_it_gave_up_and_the_connection_stays_scheduled(acme, emulator):
    connection = connect(acme, emulator)
    emulator.faults.add(Fault(path="/credits", status=503))  # down for longer than all the retries
    before = timezone.now()

    outcome = run_task(emulator, connection, retries=sync_connection_task.max_retries)

    assert outcome.successful() and outcome.get() == "failed"
    run = SyncRun.objects.get(connection=connection, trigger="retry")
    assert run.attempt == sync_connection_task.max_retries + 1
    event = SyncEvent.objects.get(connection=connection, code="sync_gave_up")
    assert (event.level, event.run_id) == ("error", run.pk)
    assert f"{run.attempt} attempts" in event.message
    assert "http_503" in event.message
    assert "next scheduled sync" in event.message
    assert event.detail == {"attempts": run.attempt, "last_error": "http_503"}
    connection.refresh_from_db()
    assert (connection.state, connection.attention_reason) == (ConnectionState.CONNECTED, "")
    assert before < connection.next_sync_at <= timezone.now() + timedelta(minutes=15)
    assert connection.pk in connections_due(now=connection.next_sync_at)


def test_a_retry_that_is_not_the_last_records_no_give_up(acme, emulator):
    connection = connect(acme, emulator)
    emulator.faults.add(Fault(path="/credits", status=503))

    with mock.patch.object(sync_connection_task, "retry", side_effect=RuntimeError("retried")) as retry:
        run_task(emulator, connection, retries=0)

    retry.assert_called_once()
    assert not SyncEvent.objects.filter(connection=connection, code="sync_gave_up").exists()
