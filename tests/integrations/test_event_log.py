"""Ops' pages: the event log (newest first, filters, pages, live rows) and a run's view; the settings
cards every role sees; who may press which button."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from integrations.models import ConnectionState, EventKind, EventLevel, SyncEvent
from integrations.services import sync_event_add
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


def add_events(connection, count: int, **kwargs) -> list[SyncEvent]:
    defaults = {"kind": EventKind.SYNC, "code": "test", "level": EventLevel.INFO}
    return [
        sync_event_add(connection=connection, message=f"event {i}", **(defaults | kwargs))
        for i in range(count)
    ]


def rendered_ids(response) -> list[int]:
    return [event.pk for event in response.context["events"]]


# --- Access


@pytest.mark.parametrize(
    ("persona", "status"),
    [("admin", 200), ("finance", 403), ("ops", 200), ("outsider", 404), (None, 302)],
)
@pytest.mark.parametrize("page", ["events/", "events/newer/?after=0", "runs/{run}/"])
def test_role_matrix_of_the_health_pages(synced, personas, persona, status, page):
    path = "/c/acme/integrations/" + page.format(run=synced.runs.first().pk)
    assert client_for(personas.get(persona)).get(path).status_code == status


@pytest.mark.parametrize(
    ("persona", "status"), [("admin", 200), ("finance", 200), ("ops", 200), ("outsider", 404), (None, 302)]
)
@pytest.mark.parametrize("path", ["/c/acme/settings/", "/c/acme/integrations/cards/"])
def test_every_member_sees_the_integration_cards(synced, personas, persona, status, path):
    assert client_for(personas.get(persona)).get(path).status_code == status


@pytest.mark.parametrize(
    ("persona", "status"), [("admin", 302), ("finance", 403), ("ops", 403), ("outsider", 404), (None, 302)]
)
def test_only_the_admin_syncs_now_or_disconnects(synced, personas, persona, status, monkeypatch):
    monkeypatch.setattr("doow.celery.app.send_task", lambda *a, **k: None)
    client = client_for(personas.get(persona))
    assert client.post(f"/c/acme/integrations/{synced.pk}/sync/").status_code == status
    expected_get = 200 if persona == "admin" else status
    assert client.get(f"/c/acme/integrations/{synced.pk}/disconnect/confirm/").status_code == expected_get
    assert client.get(f"/c/acme/integrations/{synced.pk}/disconnect/").status_code == 405


def test_another_companys_run_is_not_found(synced, globex, charlie):
    assert (
        client_for(charlie).get(f"/c/globex/integrations/runs/{synced.runs.first().pk}/").status_code == 404
    )


# --- The cards


def test_cards_show_state_sync_and_freshness_and_admin_actions_only_to_the_admin(synced, alice, fiona, oscar):
    admin = client_for(alice).get("/c/acme/settings/").content.decode()
    assert "Connected" in admin and "since 25 Oct 2026, complete through 23 Nov UTC, today partial" in admin
    assert 'data-testid="sync-now"' in admin and 'data-testid="disconnect"' in admin
    assert "Usage &amp; spend" in admin and "Event log" in admin
    for user, sees_usage in ((fiona, True), (oscar, False)):
        page = client_for(user).get("/c/acme/settings/").content.decode()
        assert "Connected" in page and "<time datetime=" in page
        assert 'data-testid="sync-now"' not in page and 'data-testid="disconnect"' not in page
        assert 'data-testid="connect"' not in page
        assert ("Usage &amp; spend" in page) == sees_usage


def test_cards_poll_while_syncing_and_show_progress(synced, alice):
    synced.state = ConnectionState.SYNCING
    synced.sync_progress = {"phase": "fetching key activity", "done": 3, "total": 24}
    synced.save()
    page = client_for(alice).get("/c/acme/integrations/cards/").content.decode()
    assert 'hx-trigger="every 2s"' in page
    assert "fetching key activity (3 of 24)" in page and '<progress max="24" value="3"' in page
    synced.state = ConnectionState.CONNECTED
    synced.save()
    assert "hx-trigger" not in client_for(alice).get("/c/acme/integrations/cards/").content.decode()


def test_not_connected_card_invites_the_admin_only(acme, alice, fiona):
    assert 'data-testid="connect"' in client_for(alice).get("/c/acme/settings/").content.decode()
    page = client_for(fiona).get("/c/acme/settings/").content.decode()
    assert "Not connected" in page and 'data-testid="connect"' not in page


# --- The log


def test_newest_first_with_run_message_and_details(synced, oscar):
    response = client_for(oscar).get(EVENTS)
    ids = rendered_ids(response)
    assert ids == sorted(ids, reverse=True)
    page = response.content.decode()
    assert "Sync finished" in page and f"run {synced.runs.first().pk}" in page and "<details" in page


def test_pages_keep_the_filters(synced, oscar):
    add_events(synced, 60, level=EventLevel.WARNING, kind=EventKind.RETRY)
    client = client_for(oscar)
    first = client.get(EVENTS, {"level": "warning"})
    assert first.context["page"].paginator.count == 60
    assert 'href="?level=warning&amp;page=2"' in first.content.decode()
    second = client.get(EVENTS, {"level": "warning", "page": 2})
    assert len(second.context["events"]) == 10
    assert {e.level for e in second.context["events"]} == {"warning"}
    # Only the first page polls for newer rows.
    assert "data-live-log" in first.content.decode() and "data-live-log" not in second.content.decode()


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"level": "error"}, {"boom"}),
        ({"kind": "rate_limit"}, {"slow down"}),
        ({"level": "info", "kind": "rate_limit"}, set()),
    ],
)
def test_filter_by_level_and_kind(synced, oscar, params, expected):
    sync_event_add(connection=synced, kind=EventKind.SYNC, code="x", level=EventLevel.ERROR, message="boom")
    sync_event_add(
        connection=synced, kind=EventKind.RATE_LIMIT, code="y", level=EventLevel.WARNING, message="slow down"
    )
    response = client_for(oscar).get(EVENTS, params)
    assert {e.message for e in response.context["events"]} == expected
    if not expected:
        assert "No events match these filters" in response.content.decode()


def test_filter_by_date(synced, oscar):
    old = add_events(synced, 1)[0]
    SyncEvent.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=3))
    day = (timezone.now() - timedelta(days=3)).date().isoformat()
    assert rendered_ids(client_for(oscar).get(EVENTS, {"day": day})) == [old.pk]


def test_a_filter_that_is_not_valid_is_named_and_the_others_still_apply(synced, oscar):
    sync_event_add(connection=synced, kind=EventKind.SYNC, code="x", level=EventLevel.ERROR, message="boom")
    response = client_for(oscar).get(EVENTS, {"level": "error", "day": "2026-13-45", "kind": "<b>bogus</b>"})
    page = response.content.decode()
    assert {e.message for e in response.context["events"]} == {"boom"}  # the level still filters
    assert 'data-testid="filter-errors"' in page
    assert "day “2026-13-45” (Enter a valid date.)" in page
    assert "kind “&lt;b&gt;bogus&lt;/b&gt;”" in page and "<b>bogus</b>" not in page
    assert (
        'data-testid="filter-errors"'
        not in client_for(oscar).get(EVENTS, {"level": "error"}).content.decode()
    )


def test_filter_by_connection(synced, acme, oscar, emulator):
    other = connect(acme, emulator, secret=emulator.normal_key, name="Single key")
    events = client_for(oscar).get(EVENTS, {"connection": other.pk}).context["events"]
    assert events and {e.connection_id for e in events} == {other.pk}


def test_with_several_connections_the_log_offers_a_connection_filter(synced, acme, oscar, emulator):
    other = connect(acme, emulator, secret=emulator.normal_key, name="Single key")
    client = client_for(oscar)
    alone = client.get(EVENTS).content.decode()
    assert 'name="connection"' in alone and "All connections" in alone
    assert f'<option value="{other.pk}">Single key</option>' in alone
    # Picked (as the card's "Event log" link does): selected, the log narrowed, Clear drops it.
    response = client.get(EVENTS, {"connection": other.pk, "level": "info"})
    page = response.content.decode()
    assert f'<option value="{other.pk}" selected>Single key</option>' in page
    assert {e.connection_id for e in response.context["events"]} == {other.pk}
    assert f'href="{EVENTS}">Clear</a>' in page
    other.state = ConnectionState.DISCONNECTED
    other.save(update_fields=["state"])
    assert "Single key (disconnected)</option>" in client.get(EVENTS).content.decode()


def test_with_one_connection_the_log_offers_no_connection_filter(synced, oscar):
    page = client_for(oscar).get(EVENTS, {"connection": synced.pk}).content.decode()
    assert "All connections" not in page
    assert f'<input type="hidden" name="connection" value="{synced.pk}">' in page


def test_newer_returns_only_rows_after_the_newest_shown(synced, oscar):
    client = client_for(oscar)
    newest = client.get(EVENTS).context["newest_id"]
    assert newest == SyncEvent.objects.latest("id").pk
    empty = client.get(EVENTS + "newer/", {"after": newest})
    assert empty.content.decode().strip() == "" and empty["X-Newest-Event-Id"] == str(newest)
    fresh = add_events(synced, 2, level=EventLevel.WARNING)
    response = client.get(EVENTS + "newer/", {"after": newest})
    assert rendered_ids(response) == [fresh[1].pk, fresh[0].pk]
    assert response["X-Newest-Event-Id"] == str(fresh[1].pk)
    assert "is-new" in response.content.decode()
    # The filters apply to the live rows too.
    assert rendered_ids(client.get(EVENTS + "newer/", {"after": newest, "level": "error"})) == []


def test_the_log_never_shows_another_companys_events(synced, globex, alice, charlie, emulator):
    other = connect(globex, emulator)
    sync_event_add(connection=other, kind=EventKind.SYNC, code="x", message="globex only")
    assert "globex only" not in client_for(alice).get(EVENTS).content.decode()
    assert "globex only" not in client_for(alice).get(EVENTS + "newer/", {"after": 0}).content.decode()
    globex_events = client_for(charlie).get("/c/globex/integrations/events/").context["events"]
    assert {e.company_id for e in globex_events} == {globex.pk}


def test_the_run_view_lists_its_events_requests_rows_and_duration(synced, oscar):
    run = synced.runs.first()
    response = client_for(oscar).get(f"/c/acme/integrations/runs/{run.pk}/")
    page = response.content.decode()
    assert {e.run_id for e in response.context["events"]} == {run.pk}
    assert f'data-testid="requests-made">{run.requests_made}<' in page and run.requests_made > 0
    assert f'data-testid="rows-written">{run.rows_written}<' in page and run.rows_written > 0
    assert f"{run.duration.total_seconds():.1f} s" in page


def test_the_run_view_stacks_on_a_narrow_screen(synced, oscar):
    """Its five figures take two columns below 900px and its events stack, each cell named."""
    run = synced.runs.first()
    page = client_for(oscar).get(f"/c/acme/integrations/runs/{run.pk}/").content.decode()
    table = (
        page.split('data-testid="run-events"')[0].rsplit("<table", 1)[1]
        + page.split('data-testid="run-events"')[1]
    )
    assert 'class="table table-stack"' in table
    assert 'data-label="Message"' in table and 'data-label="Run"' in table
    assert 'role="region" aria-label="Events of this run"' in page
    css = (settings.BASE_DIR / "doow/static/doow/app.css").read_text()
    # After the .stats-5 rule, or the five columns win.
    assert css.index("@media (max-width: 900px) { .stats-5") > css.index(
        ".stats-5 { grid-template-columns: repeat(5"
    )


def test_the_log_and_run_views_make_a_bounded_number_of_queries(synced, oscar, django_assert_max_num_queries):
    client = client_for(oscar)
    # The first page of a company also stores the company in the session (written once, not per page).
    client.get(EVENTS)
    run = synced.runs.first()
    add_events(synced, 3, run=run)
    counts = []
    for _ in range(2):
        with django_assert_max_num_queries(12) as events_queries:
            assert client.get(EVENTS).status_code == 200
        with django_assert_max_num_queries(12) as run_queries:
            assert client.get(f"/c/acme/integrations/runs/{run.pk}/").status_code == 200
        counts.append((len(events_queries.captured_queries), len(run_queries.captured_queries)))
        add_events(synced, 80, run=run)
    assert counts[0] == counts[1]


def test_a_past_day_does_not_poll_for_new_events_and_today_does(synced, oscar):
    client = client_for(oscar)
    today = timezone.now().date()
    past = client.get(EVENTS, {"day": (today - timedelta(days=2)).isoformat()}).content.decode()
    current = client.get(EVENTS, {"day": today.isoformat()}).content.decode()
    assert "data-live-log" not in past
    assert "data-live-log" in current and 'aria-live="polite"' in current


def test_cards_poll_once_however_many_connections_sync(acme, alice, emulator, synced):
    from openrouter.emulator import Emulator, EmulatorConfig

    other = connect(acme, Emulator(EmulatorConfig(seed=11, keys=2)))
    type(synced).objects.filter(pk__in=[synced.pk, other.pk]).update(state=ConnectionState.SYNCING)
    page = client_for(alice).get("/c/acme/integrations/cards/").content.decode()
    assert page.count("hx-trigger=") == 1
    assert page.count('aria-label="Sync progress of') == 2


def test_a_disconnected_connection_does_not_promise_todays_data(synced, alice):
    type(synced).objects.filter(pk=synced.pk).update(state=ConnectionState.DISCONNECTED)
    page = client_for(alice).get("/c/acme/integrations/cards/").content.decode()
    assert "today partial" not in page and "no longer synced" in page
