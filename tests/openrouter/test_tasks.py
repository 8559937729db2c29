"""Scheduling, retries, single flight and disconnect-during-sync, with real threads where it matters."""

import time
from datetime import timedelta
from unittest import mock

import pytest
from celery import signals
from celery.exceptions import Retry
from django.conf import settings
from django.utils import timezone

from integrations import tasks as integrations_tasks
from integrations.models import Connection, SyncRun
from integrations.services import connection_disconnect, connections_due
from integrations.tasks import enqueue_due_syncs
from openrouter import client as openrouter_client
from openrouter.emulator import Fault
from openrouter.models import ApiKey
from openrouter.sync import SyncResult
from openrouter.tasks import (
    evaluate_alerts_task,
    evaluate_stalled_alerts_task,
    load_http_client,
    retry_countdown,
    sync_connection_task,
)
from tests.support import connect, stored_total, sync, thread_with_own_connection
from usage.models import Alert, UsageDaily


def test_retry_countdown_honours_retry_after_and_stays_below_the_visibility_timeout():
    cap = settings.CELERY_RETRY_DELAY_CAP
    assert 7 <= retry_countdown(retries=0, retry_after=7) <= cap
    assert retry_countdown(retries=0, retry_after=86400) == cap
    for retries in range(8):
        assert 15 <= retry_countdown(retries=retries, retry_after=None) <= cap
    assert cap + settings.CELERY_TASK_TIME_LIMIT < settings.CELERY_VISIBILITY_TIMEOUT
    assert settings.CELERY_TASK_SOFT_TIME_LIMIT < settings.CELERY_TASK_TIME_LIMIT


def test_the_worker_builds_the_tls_context_before_it_forks_its_pool():
    receivers = [ref() for _key, ref in signals.worker_init.receivers]
    assert load_http_client in receivers  # worker_init runs in the main process, before the fork
    openrouter_client._ssl_context.cache_clear()
    load_http_client()
    assert openrouter_client._ssl_context.cache_info().currsize == 1


@pytest.mark.parametrize(
    "result,retried",
    [
        (SyncResult(status="failed", retry=True, retry_after=7), True),
        (SyncResult(status="partial", retry=True), True),
        (SyncResult(status="failed", retry=False), False),
        (SyncResult(status="deferred"), False),
        (SyncResult(status="succeeded"), False),
    ],
)
def test_the_task_retries_only_transient_failures(result, retried):
    with (
        mock.patch("openrouter.tasks.sync_connection", return_value=result),
        mock.patch("openrouter.tasks.evaluate_alerts_task") as evaluate,
        mock.patch.object(sync_connection_task, "retry", side_effect=Retry()) as retry,
    ):
        if retried:
            with pytest.raises(Retry):
                sync_connection_task(1)
            countdown = retry.call_args.kwargs["countdown"]
            assert (result.retry_after or 15) <= countdown <= settings.CELERY_RETRY_DELAY_CAP
        else:
            assert sync_connection_task(1) == result.status
            retry.assert_not_called()
    # Alerts are evaluated after every sync that ran.
    evaluate.delay.assert_called_once_with(1)


@pytest.mark.django_db
@pytest.mark.parametrize(("min_keys", "warmed"), [(1, True), (10_000, False)])
def test_a_sync_of_a_large_organization_warms_its_detail_page(acme, emulator, settings, min_keys, warmed):
    settings.REPORT_WARM_MIN_KEYS = min_keys
    connection = connect(acme, emulator)
    done = sync(connection, emulator)  # the task runs this sync (the emulator is in-process here)
    assert done.keys_seen == ApiKey.objects.filter(connection=connection).count() > 1
    with (
        mock.patch("openrouter.tasks.sync_connection", return_value=done),
        mock.patch("openrouter.tasks.evaluate_alerts_task"),
        mock.patch("openrouter.tasks.warm_reports_task") as warm,
    ):
        sync_connection_task(connection.pk)
    assert warm.delay.called is warmed


@pytest.mark.django_db
def test_warming_computes_the_default_view_so_the_first_reader_reads_no_usage_row(
    acme, alice, emulator, django_assert_max_num_queries
):
    from openrouter import report
    from openrouter.tasks import warm_reports_task
    from tests.conftest import client_for
    from tests.support import noon

    connection = connect(acme, emulator)
    sync(connection, emulator)
    with mock.patch.object(report.timezone, "now", lambda: noon(emulator.today)):
        assert warm_reports_task(connection.pk) is True
        with django_assert_max_num_queries(40) as captured:
            page = client_for(alice).get(f"/c/acme/integrations/openrouter/{connection.pk}/")
    assert page.status_code == 200
    assert page.context["totals"]["spend_usd"] > 0
    assert not [q for q in captured.captured_queries if "usage_usagedaily" in q["sql"]]
    with (
        mock.patch.object(report.timezone, "now", lambda: noon(emulator.today)),
        django_assert_max_num_queries(40) as captured,
    ):
        people = client_for(alice).get(f"/c/acme/integrations/openrouter/{connection.pk}/people/")
    assert people.status_code == 200 and people.context["by_person"]
    assert not [q for q in captured.captured_queries if "usage_usagedaily" in q["sql"]]


@pytest.mark.django_db
def test_beat_fans_out_one_task_per_due_connection_once(acme, globex, emulator):
    from openrouter.emulator import Emulator, EmulatorConfig

    first = connect(acme, emulator)
    second = connect(globex, Emulator(EmulatorConfig(seed=11, keys=2)))
    Connection.objects.update(state="connected", next_sync_at=timezone.now() - timedelta(minutes=1))
    with mock.patch("doow.celery.app.send_task") as send_task:
        enqueue_due_syncs()
        enqueue_due_syncs()  # a doubled beat tick enqueues nothing more
    sent = sorted(call.kwargs["args"][0] for call in send_task.call_args_list)
    assert sent == sorted([first.pk, second.pk])
    assert all(0 <= call.kwargs["countdown"] <= 300 for call in send_task.call_args_list)


@pytest.mark.django_db
def test_disconnected_connections_are_never_due(acme, emulator):
    connection = connect(acme, emulator)
    connection_disconnect(connection=connection)
    with mock.patch("doow.celery.app.send_task") as send_task:
        enqueue_due_syncs()
    send_task.assert_not_called()


@pytest.mark.django_db
def test_a_lease_left_by_a_killed_worker_lapses_and_the_next_run_completes(acme, emulator):
    connection = connect(acme, emulator)
    # A worker claimed the connection, wrote part of the keys and was killed.
    Connection.objects.filter(pk=connection.pk).update(
        sync_lease_until=timezone.now() + timedelta(minutes=5), sync_lease_token="dead-worker"
    )
    assert sync(connection, emulator).status == "skipped"
    skipped = SyncRun.objects.get(connection=connection, status="skipped")
    assert skipped.finished_at == skipped.started_at  # took no time, and did not end before it began

    Connection.objects.filter(pk=connection.pk).update(sync_lease_until=timezone.now() - timedelta(seconds=1))
    assert sync(connection, emulator).status == "succeeded"
    start, end = emulator.truth.activity_window()
    assert stored_total(connection) == emulator.truth.activity_total(start, end)


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_syncs_make_one_set_of_requests(acme, emulator):
    connection = connect(acme, emulator)
    emulator.faults.add(Fault(path="/credits", latency=0.5))
    emulator.request_log.clear()
    results = []
    threads = [
        thread_with_own_connection(lambda: results.append(sync(connection, emulator))) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(r.status for r in results) == ["skipped", "succeeded"]
    assert len(emulator.request_log.matching("/credits")) == 1
    per_key = [e for e in emulator.request_log.matching("/activity") if "api_key_hash" in e.query]
    assert (
        len(per_key)
        == len({e.query["api_key_hash"] for e in per_key})
        == len(list(emulator.truth.listed_keys()))
    )
    connection.refresh_from_db()
    assert connection.sync_lease_until is None


@pytest.mark.django_db(transaction=True)
def test_disconnect_during_a_sync_stops_all_further_writes(acme, emulator):
    connection = connect(acme, emulator)
    emulator.faults.add(Fault(path="/activity", latency=0.2))
    outcome = {}
    worker = thread_with_own_connection(lambda: outcome.setdefault("result", sync(connection, emulator)))
    worker.start()
    deadline = time.monotonic() + 30
    while not emulator.request_log.matching("/activity") and time.monotonic() < deadline:
        time.sleep(0.02)

    connection_disconnect(connection=connection)
    rows_at_disconnect = UsageDaily.objects.filter(connection=connection).count()
    worker.join(timeout=60)

    assert outcome["result"].status == "aborted"
    assert UsageDaily.objects.filter(connection=connection).count() == rows_at_disconnect
    connection.refresh_from_db()
    assert (connection.secret, connection.secret_last4, connection.state) == ("", "", "disconnected")
    run = SyncRun.objects.get(pk=outcome["result"].run_id)
    assert run.error_summary == "aborted_disconnected"


@pytest.mark.django_db
def test_an_overlapping_beat_tick_does_not_enqueue_what_another_tick_claimed(acme, emulator):
    connection = connect(acme, emulator)
    Connection.objects.filter(pk=connection.pk).update(
        state="connected", next_sync_at=timezone.now() - timedelta(minutes=1)
    )
    due_before_the_first_tick_claimed = [connection.pk]
    with mock.patch("doow.celery.app.send_task") as send_task:
        assert enqueue_due_syncs() == 1
        # A second tick that listed the due connections before the first one claimed them.
        with mock.patch.object(
            integrations_tasks, "connections_due", lambda now: due_before_the_first_tick_claimed
        ):
            assert enqueue_due_syncs() == 0
    assert [call.kwargs["args"] for call in send_task.call_args_list] == [[connection.pk]]


@pytest.mark.parametrize("connection_id", [987_654, 2**63])
def test_tasks_for_a_connection_that_no_longer_exists_do_nothing(db, connection_id):
    # A task queued before its connection's company was deleted (or any id at all) finds no row.
    from openrouter.tasks import evaluate_alerts_task, warm_reports_task

    assert sync_connection_task.run(connection_id, trigger="manual") == "skipped"
    assert evaluate_alerts_task.run(connection_id) == 0
    assert warm_reports_task.run(connection_id) is False
    assert not SyncRun.objects.exists()


def test_a_refused_key_raises_the_sync_failing_alert_though_no_sync_runs_any_more(
    acme, alice, fiona, emulator, mailoutbox
):
    """A 401 marks the connection needs-attention, which no beat tick syncs again: the hourly
    evaluation of stalled connections raises its "sync failing" alert once the hours have passed."""
    connection = connect(acme, emulator)
    sync(connection, emulator)
    emulator.revoke(emulator.management_key)
    assert sync(connection, emulator).status == "failed"
    connection.refresh_from_db()
    assert connection.state == "needs_attention" and connection.pk not in connections_due()
    failed_at = SyncRun.objects.filter(connection=connection, status="failed").get().started_at

    with mock.patch("openrouter.tasks.evaluate_alerts_task.delay", evaluate_alerts_task):
        with mock.patch("django.utils.timezone.now", return_value=failed_at + timedelta(hours=1)):
            assert evaluate_stalled_alerts_task() == 1
        assert not Alert.objects.filter(kind="sync_failing").exists()
        with mock.patch("django.utils.timezone.now", return_value=failed_at + timedelta(hours=7)):
            evaluate_stalled_alerts_task()

    assert Alert.objects.get(kind="sync_failing").title == "Sync failing for more than 6 hours"
    assert [m for m in mailoutbox if "Sync failing" in m.subject]
