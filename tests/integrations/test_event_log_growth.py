"""The event log and the runs only grow: pages are bounded however long the log, old entries are
pruned after the retention period, and the lookups a sync or a page makes are indexed."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection as db
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from integrations import paging
from integrations.models import EventKind, EventLevel, SyncEvent, SyncRun
from integrations.services import event_log_prune, sync_event_add
from integrations.tasks import prune_event_log
from openrouter.models import CreditsSnapshot
from tests.conftest import client_for
from tests.support import connect, sync

pytestmark = pytest.mark.django_db

EVENTS = "/c/acme/integrations/events/"


@pytest.fixture
def synced(acme, emulator):
    connection = connect(acme, emulator, name="Acme production")
    sync(connection, emulator)
    connection.refresh_from_db()
    return connection


def add_events(connection, count: int) -> list[SyncEvent]:
    return [
        sync_event_add(
            connection=connection,
            kind=EventKind.SYNC,
            code="test",
            level=EventLevel.INFO,
            message=f"event {i}",
        )
        for i in range(count)
    ]


def dated(model, rows, when: datetime) -> None:
    field = "created_at" if model is SyncEvent else "started_at"
    model.objects.filter(pk__in=[row.pk for row in rows]).update(**{field: when})


# --- Pages bounded however long the log


def test_a_far_page_of_a_long_log_reads_no_further_than_the_newest_events(synced, oscar, monkeypatch):
    monkeypatch.setattr(paging, "NEWEST_ROWS", 100)
    add_events(synced, 130)
    newest = SyncEvent.objects.order_by("-id").values_list("pk", flat=True)[:100]

    with CaptureQueriesContext(db) as queries:
        response = client_for(oscar).get(EVENTS, {"page": "999999"})

    assert response.status_code == 200
    page = response.context["page"]
    # The last page of the newest 100, not of every event.
    assert (page.number, page.paginator.num_pages) == (2, 2)
    assert [e.pk for e in response.context["events"]] == list(newest[50:100])
    assert "the newest 100 events; pick a day to see older ones" in response.content.decode()
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts and all("LIMIT 101" in sql for sql in counts), counts


def test_a_log_within_the_bound_is_counted_whole(synced, oscar):
    add_events(synced, 60)
    response = client_for(oscar).get(EVENTS)
    total = SyncEvent.objects.filter(company=synced.company).count()
    assert f"{total} events</span>" in response.content.decode()
    assert "pick a day to see older ones" not in response.content.decode()


def test_the_day_filter_keeps_that_utc_day_whole_and_nothing_else(synced, oscar):
    day = timezone.now().date() - timedelta(days=3)
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    before, first, last, after = add_events(synced, 4)
    dated(SyncEvent, [before], midnight - timedelta(microseconds=1))
    dated(SyncEvent, [first], midnight)
    dated(SyncEvent, [last], midnight + timedelta(days=1, microseconds=-1))
    dated(SyncEvent, [after], midnight + timedelta(days=1))

    response = client_for(oscar).get(EVENTS, {"day": day.isoformat()})

    assert [e.pk for e in response.context["events"]] == [last.pk, first.pk]


# --- Retention


def test_events_and_runs_older_than_the_retention_are_pruned_and_each_connections_newest_run_kept(
    synced, globex, emulator
):
    from openrouter.emulator import Emulator, EmulatorConfig

    other = Emulator(EmulatorConfig(seed=11, keys=2))
    idle = connect(globex, other)
    sync(idle, other)
    now = timezone.now()
    # Everything so far happened 200 days ago; then the first connection synced again today.
    old_events = list(SyncEvent.objects.all())
    dated(SyncEvent, old_events, now - timedelta(days=200))
    dated(SyncRun, SyncRun.objects.all(), now - timedelta(days=200))
    sync(synced, emulator)
    first_run, newest_run = SyncRun.objects.filter(connection=synced).order_by("pk")
    idle_run = SyncRun.objects.get(connection=idle)
    young_events = set(
        SyncEvent.objects.exclude(pk__in=[e.pk for e in old_events]).values_list("pk", flat=True)
    )
    assert young_events

    events, runs = event_log_prune(older_than=timedelta(days=180), now=now)

    assert (events, runs) == (len(old_events), 1)
    assert set(SyncEvent.objects.values_list("pk", flat=True)) == young_events
    # The idle connection's only run is old, but its header still shows its last sync.
    assert set(SyncRun.objects.values_list("pk", flat=True)) == {newest_run.pk, idle_run.pk}
    assert event_log_prune(older_than=timedelta(days=180), now=now) == (0, 0)


def test_the_daily_job_prunes_with_the_configured_retention_and_zero_keeps_everything(synced, settings):
    old = list(SyncEvent.objects.all())
    dated(SyncEvent, old, timezone.now() - timedelta(days=40))
    young = add_events(synced, 2)

    settings.EVENT_LOG_RETENTION_DAYS = 0
    assert prune_event_log() == 0 and SyncEvent.objects.count() == len(old) + 2
    settings.EVENT_LOG_RETENTION_DAYS = 30
    assert prune_event_log() == len(old)
    assert set(SyncEvent.objects.values_list("pk", flat=True)) == {e.pk for e in young}


# --- Indexed lookups (audited on PostgreSQL with 1.44M credit snapshots: a stalled connection's
# latest balance took 193 ms through the taken_at index; a test's few rows cannot show a plan)


def index_columns(model) -> list[tuple[list[str], bool]]:
    """Each index of the model's table in the database: its columns and whether it is partial."""
    with db.cursor() as cursor:
        constraints = db.introspection.get_constraints(cursor, model._meta.db_table)
    partial = {index.name for index in model._meta.indexes if index.condition is not None}
    return [(c["columns"], name in partial) for name, c in constraints.items() if c["index"]]


def test_a_connections_latest_balance_has_an_index_leading_with_the_connection():
    assert (["connection_id", "taken_at"], False) in index_columns(CreditsSnapshot)


def test_the_runs_left_running_have_a_partial_index_of_their_own():
    assert (["connection_id"], True) in index_columns(SyncRun)


def test_a_days_events_have_an_index_on_company_and_time():
    assert (["company_id", "created_at"], False) in index_columns(SyncEvent)
