"""The Celery app's configuration: limits that keep Redis from re-delivering a running task, and the
beat schedule."""

import logging
import time
from types import SimpleNamespace

import pytest
from celery.fixups.django import DjangoWorkerFixup
from celery.schedules import crontab
from django.conf import settings
from django.db import connection, transaction

from doow.celery import app, close_old_database_connections


def test_celery_runs_in_utc_and_acknowledges_late():
    assert app.conf.timezone == "UTC"
    assert app.conf.enable_utc is True
    # Late acks: a worker that dies mid-task leaves the message for another worker.
    assert app.conf.task_acks_late is True
    assert app.conf.worker_prefetch_multiplier == 1


def test_time_limits_come_from_settings_and_the_soft_one_fires_first():
    assert app.conf.task_soft_time_limit == settings.CELERY_TASK_SOFT_TIME_LIMIT
    assert app.conf.task_time_limit == settings.CELERY_TASK_TIME_LIMIT
    assert 0 < app.conf.task_soft_time_limit < app.conf.task_time_limit


def test_a_sync_lease_outlives_the_hard_time_limit():
    """A live task never loses its single-flight lease to another sync; a killed one's lapses."""
    from integrations.services import sync_lease_seconds

    assert sync_lease_seconds() > app.conf.task_time_limit


def test_a_retry_and_a_run_end_before_the_broker_redelivers():
    # With late acks, Redis re-delivers a message still unacked after the visibility timeout:
    # the longest retry countdown plus the hard limit must fit inside it, or a task runs twice.
    assert (
        settings.CELERY_RETRY_DELAY_CAP + settings.CELERY_TASK_TIME_LIMIT < settings.CELERY_VISIBILITY_TIMEOUT
    )


def test_the_broker_gets_the_visibility_timeout_when_it_is_redis():
    options = app.conf.broker_transport_options
    if app.conf.broker_url.startswith("filesystem://"):
        # The embedded default keeps its queue in the local folder and has no visibility timeout.
        assert options["data_folder_in"] == options["data_folder_out"]
    else:
        assert options["visibility_timeout"] == settings.CELERY_VISIBILITY_TIMEOUT


def test_the_embedded_broker_names_a_host_so_kombu_does_not_warn(caplog, tmp_path):
    from kombu import Connection

    folders = {
        "data_folder_in": str(tmp_path),
        "data_folder_out": str(tmp_path),
        "processed_folder": str(tmp_path),
        "control_folder": str(tmp_path),  # exchange bindings; kombu's default is ./control
    }
    with (
        caplog.at_level(logging.WARNING, logger="kombu"),
        Connection(settings.EMBEDDED_BROKER_URL, transport_options=folders) as broker,
    ):
        queue = broker.SimpleQueue("embedded-broker-check")
        queue.put({"sent": True})
        message = queue.get(timeout=5)
        message.ack()
        queue.close()
        broker.clone().release()  # what a worker's producer pool does, and where kombu warned
    assert message.payload == {"sent": True}
    assert not [record for record in caplog.records if record.name.startswith("kombu")]


def test_beat_schedule_has_exactly_the_periodic_jobs():
    schedule = app.conf.beat_schedule
    assert set(schedule) == {
        "enqueue-due-syncs",
        "refresh-openrouter-models",
        "evaluate-stalled-alerts",
        "clear-expired-sessions",
        "prune-event-log",
    }

    due_syncs = schedule["enqueue-due-syncs"]
    assert due_syncs["task"] == "integrations.enqueue_due_syncs"
    assert due_syncs["schedule"] == min(settings.OPENROUTER_SYNC_INTERVAL_MINUTES * 60, 300)
    # A tick that waited in the queue longer than its own interval is dropped, not run late.
    assert due_syncs["options"]["expires"] < due_syncs["schedule"]

    models = schedule["refresh-openrouter-models"]
    assert models["task"] == "openrouter.refresh_models"
    assert models["schedule"] == crontab(minute=17, hour=0)

    stalled = schedule["evaluate-stalled-alerts"]
    assert stalled["task"] == "openrouter.evaluate_stalled_alerts"
    assert stalled["schedule"] == crontab(minute=29)

    sessions = schedule["clear-expired-sessions"]
    assert sessions["task"] == "doow.clear_expired_sessions"
    assert sessions["schedule"] == crontab(minute=41, hour=3)

    prune = schedule["prune-event-log"]
    assert prune["task"] == "integrations.prune_event_log"
    assert prune["schedule"] == crontab(minute=53, hour=3)


def test_every_scheduled_task_is_registered():
    # What a worker does on start: import every installed app's tasks module.
    app.autodiscover_tasks(force=True)
    for entry in app.conf.beat_schedule.values():
        assert entry["task"] in app.tasks, entry["task"]


def _task(*, eager: bool):
    return SimpleNamespace(request=SimpleNamespace(is_eager=eager))


def _run_like_a_worker(fixup: DjangoWorkerFixup, task) -> None:
    """The task_prerun and task_postrun receivers a worker runs around a task, and a query between."""
    fixup.on_task_prerun(sender=task)
    close_old_database_connections(sender=task)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    fixup.on_task_postrun(sender=task)
    close_old_database_connections(sender=task)


@pytest.fixture
def kept_connection(monkeypatch):
    """A fresh connection kept for a minute, as DATABASE_CONN_MAX_AGE keeps PostgreSQL's."""
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 60)
    connection.close()
    connection.ensure_connection()
    return connection.connection


@pytest.mark.django_db(transaction=True)
def test_a_worker_keeps_its_database_connection_from_task_to_task(kept_connection):
    # Celery's Django fixup (what `celery worker` installs, configured from our settings) used to
    # close it around every task: a new PostgreSQL backend per sync.
    fixup = DjangoWorkerFixup(app)
    for _ in range(5):
        _run_like_a_worker(fixup, _task(eager=False))
    assert connection.connection is kept_connection


@pytest.mark.django_db(transaction=True)
def test_a_worker_replaces_a_connection_older_than_conn_max_age(kept_connection):
    connection.close_at = time.monotonic() - 1
    _run_like_a_worker(DjangoWorkerFixup(app), _task(eager=False))
    assert connection.connection is not None
    assert connection.connection is not kept_connection


@pytest.mark.django_db(transaction=True)
def test_an_eager_task_leaves_the_callers_connection_and_transaction_alone(kept_connection):
    connection.close_at = time.monotonic() - 1  # obsolete: a worker's task would drop it
    with transaction.atomic():
        close_old_database_connections(sender=_task(eager=True))
        assert connection.in_atomic_block
        assert connection.connection is kept_connection
