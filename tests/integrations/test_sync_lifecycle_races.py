"""Syncs racing a disconnect, a reconnect, a dying worker or a failing broker, and the beat behind a backlog."""

import itertools
from datetime import date, timedelta
from unittest import mock

import pytest
from django.utils import timezone

from integrations import coverage
from integrations.models import Connection, ConnectionState, SyncEvent, SyncRun
from integrations.services import connection_disconnect, connections_due, sync_claim
from integrations.tasks import enqueue_due_syncs
from openrouter.services import openrouter_replace_key
from openrouter.sync import _SyncJob
from tests.conftest import client_for
from tests.support import connect, sync
from usage.models import UsageDaily

pytestmark = pytest.mark.django_db


def replace_key(connection, emulator, secret=None):
    with mock.patch("doow.celery.app.send_task"):
        return openrouter_replace_key(
            connection=Connection.objects.get(pk=connection.pk),
            secret=secret or emulator.new_management_key(),
            transport=emulator.transport(),
        )


def test_a_sync_still_running_when_the_key_is_replaced_is_not_logged_as_a_dead_worker(acme, emulator):
    """Sync A is running (alive) when an admin replaces the key; the replacement clears A's lease and
    queues sync B, which starts while A still runs. B must not tell ops that A's worker crashed."""
    connection = connect(acme, emulator)
    assert sync(connection, emulator).status == "succeeded"
    fetch_activity = _SyncJob.fetch_activity
    outcome = {}

    def replace_and_run_the_new_sync(job, **kwargs):
        if not kwargs.get("api_key_hash") and "b" not in outcome:
            replace_key(connection, emulator)
            outcome["b"] = None
            with mock.patch.object(_SyncJob, "fetch_activity", fetch_activity):
                outcome["b"] = sync(connection, emulator)  # the queued sync B, on another worker
        return fetch_activity(job, **kwargs)

    with mock.patch.object(_SyncJob, "fetch_activity", replace_and_run_the_new_sync):
        a = sync(connection, emulator)

    assert (a.status, outcome["b"].status) == ("aborted", "succeeded")
    # A was alive the whole time and ended "aborted": no event says its worker was killed or crashed.
    lost = SyncEvent.objects.filter(connection=connection, code="sync_worker_lost", run_id=a.run_id)
    assert not lost.exists(), [e.message for e in lost]


def test_a_stale_sync_finishing_after_a_disconnect_and_reconnect_leaves_the_forgotten_days_unknown(
    acme, emulator
):
    """Sync A writes its last batch; before it records its outcome, the admin disconnects deleting the
    usage (which forgets the reported days) and connects the organization again. A's outcome, not
    generation-checked, writes back the days it read before the purge: days whose rows are gone are
    then shown as reported days without spend instead of unknown."""
    connection = connect(acme, emulator)
    assert sync(connection, emulator).status == "succeeded"
    # Older history this connection had synced before (e.g. two months ago).
    old = [date(2026, 9, 1), date(2026, 9, 30)]
    Connection.objects.filter(pk=connection.pk).update(
        reported_spans=coverage.add(Connection.objects.get(pk=connection.pk).reported_spans, *old)
    )
    execute = _SyncJob.execute

    def then_disconnect_and_reconnect(job):
        execute(job)  # every write of A committed
        connection_disconnect(connection=Connection.objects.get(pk=connection.pk), delete_usage=True)
        replace_key(connection, emulator, secret=emulator.management_key)  # "Connect again"

    with mock.patch.object(_SyncJob, "execute", then_disconnect_and_reconnect):
        a = sync(connection, emulator)
    assert a.status == "succeeded"

    connection.refresh_from_db()
    # The reconnect queued a sync B; A's late outcome already claims it is connected and synced.
    state_before_b = (connection.state, connection.reported_spans)
    assert sync(connection, emulator).status == "succeeded"  # B, the sync the reconnect queued
    connection.refresh_from_db()
    september = (date(2026, 9, 1), date(2026, 9, 30))
    assert not UsageDaily.objects.filter(connection=connection, day__lte=september[1]).exists()
    # September's rows were deleted with the usage: its days must be unknown again, not "reported
    # with no spend" (which the detail page and exports show as $0 and compare periods with).
    assert coverage.gaps(connection.reported_spans, *september) == [september], (
        f"after A's late finish: {state_before_b}; after B: {connection.reported_spans}"
    )


def test_a_dead_workers_connection_is_not_shown_syncing_and_can_be_synced_at_once(
    acme, alice, emulator, settings
):
    connection = connect(acme, emulator)
    assert sync(connection, emulator).status == "succeeded"
    # The beat claims the connection for its scheduled sync (next mark = now + interval) ...
    Connection.objects.filter(pk=connection.pk).update(next_sync_at=timezone.now() - timedelta(minutes=1))
    with mock.patch("doow.celery.app.send_task"):
        assert enqueue_due_syncs() == 1
    # ... a worker claims it and is killed (OOM, hard time limit, host lost): no finish, no release.
    assert sync_claim(connection_id=connection.pk) is not None
    # The lease lapses (it outlives the hard time limit by a minute).
    Connection.objects.filter(pk=connection.pk).update(sync_lease_until=timezone.now() - timedelta(seconds=1))
    connection.refresh_from_db()
    assert not connection.is_syncing  # nothing runs any more

    page = client_for(alice).get("/c/acme/integrations/cards/").content.decode()
    card = page[page.index(f'data-connection="{connection.pk}"') :]
    card = card[: card.index("</article>")]
    # Not due again for most of an hour ...
    in_50_minutes = timezone.now() + timedelta(minutes=50)
    assert connection.pk not in connections_due(now=in_50_minutes)
    # ... and meanwhile the card must not claim a sync runs nor stop the admin from starting one.
    assert 'data-state="syncing"' not in card and 'title="A sync is running"' not in card, card


def test_a_broker_error_during_fan_out_leaves_the_unsent_connections_due_at_the_next_tick(
    acme, globex, emulator
):
    from openrouter.emulator import Emulator, EmulatorConfig

    connect(acme, emulator)
    connect(globex, Emulator(EmulatorConfig(seed=11, keys=2)))
    Connection.objects.update(state="connected", next_sync_at=timezone.now() - timedelta(minutes=1))
    calls = []

    def flaky_send_task(*args, **kwargs):
        calls.append(kwargs["args"][0])
        if len(calls) == 2:
            raise ConnectionError("broker connection reset")

    with mock.patch("doow.celery.app.send_task", flaky_send_task), pytest.raises(ConnectionError):
        enqueue_due_syncs()
    unsent = calls[1]
    # The next beat tick (5 minutes later) must pick up the connection whose task was never sent.
    assert unsent in connections_due(now=timezone.now() + timedelta(minutes=5)), (
        f"connection {unsent} was claimed but never enqueued; next_sync_at="
        f"{Connection.objects.get(pk=unsent).next_sync_at}"
    )


def test_a_scheduled_sync_still_waiting_when_the_next_tick_sends_another_has_expired(
    acme, emulator, settings
):
    """Workers lag behind (thousands of connections, a slow OpenRouter): a connection whose scheduled
    task has not even started an interval later is claimed and sent again. The earlier task has
    expired by then (a worker drops it unrun), so the backlog holds one live sync per connection
    instead of one more per interval."""
    connection = connect(acme, emulator)
    assert sync(connection, emulator).status == "succeeded"
    start = timezone.now()
    Connection.objects.filter(pk=connection.pk).update(next_sync_at=start - timedelta(minutes=1))
    interval = timedelta(minutes=settings.OPENROUTER_SYNC_INTERVAL_MINUTES)
    sent = []
    for tick in range(4):  # ticks an interval apart; no worker has started the first task yet
        now = start + tick * (interval + timedelta(minutes=5))
        with (
            mock.patch("doow.celery.app.send_task", lambda *a, now=now, **k: sent.append((now, k))),
            mock.patch("integrations.tasks.timezone.now", return_value=now),
        ):
            enqueue_due_syncs()
    assert len(sent) == 4
    for (sent_at, options), (next_sent_at, _) in itertools.pairwise(sent):
        assert options["countdown"] <= options["expires"]
        assert sent_at + timedelta(seconds=options["expires"]) <= next_sent_at


def test_a_retry_is_not_dropped_by_its_scheduled_messages_expiry(acme, emulator):
    from openrouter import tasks
    from openrouter.sync import SyncResult

    failed = SyncResult(status="failed", retry=True)
    with (
        mock.patch.object(tasks, "sync_connection", return_value=failed),
        mock.patch.object(tasks, "evaluate_alerts_task"),
        mock.patch.object(tasks.sync_connection_task, "retry", side_effect=RuntimeError("retried")) as retry,
        pytest.raises(RuntimeError, match="retried"),
    ):
        tasks.sync_connection_task.apply(args=[1], expires=60, throw=True)
    assert retry.call_args.kwargs["expires"] is None


def test_the_soft_time_limit_landing_after_the_last_write_still_records_the_sync_as_succeeded(acme, emulator):
    """The soft time limit (SIGALRM in the worker) can land anywhere; between the last write's commit
    and sync_run_finish it escapes every handler of _run_claimed: the task fails, the run stays
    "running", the connection "syncing" until the next scheduled sync, and the days just written
    are not recorded as reported."""
    from celery.exceptions import SoftTimeLimitExceeded

    connection = connect(acme, emulator)
    execute, flush = _SyncJob.execute, _SyncJob.flush_events
    done = {}

    def execute_then_mark(job):
        execute(job)
        done["written"] = True

    def flush_then_time_limit(job):
        flush(job)
        if done.get("written"):
            raise SoftTimeLimitExceeded()

    with (
        mock.patch.object(_SyncJob, "execute", execute_then_mark),
        mock.patch.object(_SyncJob, "flush_events", flush_then_time_limit),
    ):
        try:
            result = sync(connection, emulator)
        except SoftTimeLimitExceeded:
            result = None
    connection.refresh_from_db()
    run = SyncRun.objects.get(connection=connection)
    assert result is not None, (
        f"SoftTimeLimitExceeded escaped the sync: run {run.status!r}, connection {connection.state!r}, "
        f"complete_through {connection.complete_through}"
    )
    assert run.status != "running" and connection.state != ConnectionState.SYNCING
