"""OpenRouter reports only its last 30 days: Doow records which days its syncs read, and the detail
page shows a day it never read as unknown, never as a day without spend, and compares a range with
the period before only when it holds every day of that period."""

import importlib
import json
from datetime import UTC, date, datetime, timedelta

import pytest
from django.apps import apps

from integrations import coverage
from integrations.models import Connection, SyncRun
from integrations.services import connection_disconnect
from openrouter import report
from openrouter.emulator import Emulator, EmulatorConfig, Fault
from tests.conftest import client_for
from tests.support import TODAY, connect, noon, sync

pytestmark = pytest.mark.django_db

WINDOW = (TODAY - timedelta(days=30), TODAY - timedelta(days=1))  # 25 Oct – 23 Nov 2026


@pytest.fixture(autouse=True)
def _page_clock_follows_the_emulator(monkeypatch, emulator):
    monkeypatch.setattr(report.timezone, "now", lambda: noon(emulator.today))


@pytest.fixture
def synced(acme, emulator):
    connection = connect(acme, emulator)
    sync(connection, emulator)
    connection.refresh_from_db()
    return connection


def spans_of(connection) -> list[tuple[date, date]]:
    connection.refresh_from_db()
    return coverage.parse(connection.reported_spans)


@pytest.fixture
def page(alice):
    """The detail page as Acme's admin, signed in on the page's clock (which tests move on)."""

    def get(connection, query: str = ""):
        return client_for(alice).get(
            f"/c/acme/integrations/openrouter/{connection.pk}/" + (f"?{query}" if query else "")
        )

    return get


# --- What the syncs record


def test_a_sync_records_the_window_of_days_it_read(synced, page):
    assert spans_of(synced) == [WINDOW]
    assert synced.history_from == WINDOW[0]
    header = page(synced).content.decode().split('data-testid="freshness">')[1].split("</dd>")[0]
    assert header == "since 25 Oct 2026, complete through 23 Nov UTC, today partial"


def test_daily_syncs_extend_one_span_and_a_long_pause_leaves_a_gap(synced, emulator):
    emulator.set_today(TODAY + timedelta(days=1))
    sync(synced, emulator)
    assert spans_of(synced) == [(WINDOW[0], TODAY)]
    # Not synced for 40 days: OpenRouter no longer has the days in between.
    emulator.set_today(TODAY + timedelta(days=41))
    sync(synced, emulator)
    assert spans_of(synced) == [(WINDOW[0], TODAY), (TODAY + timedelta(days=11), TODAY + timedelta(days=40))]


def test_a_sync_that_does_not_finish_records_no_day(acme, emulator):
    connection = connect(acme, emulator)
    emulator.faults.add(Fault(path="/activity", status=500, times=1000))
    result = sync(connection, emulator)
    assert result.status != "succeeded"
    assert spans_of(connection) == []


def test_usage_deleted_at_a_disconnect_takes_its_days_with_it(synced, emulator, page):
    """Reconnected after the deleted days left OpenRouter's window, they are unknown, not $0."""
    connection_disconnect(connection=synced, delete_usage=True)
    assert spans_of(synced) == [] and synced.complete_through is None
    emulator.set_today(TODAY + timedelta(days=40))
    again = connect(synced.company, emulator)
    assert again.pk == synced.pk
    assert sync(again, emulator).status == "succeeded"
    assert spans_of(again) == [(TODAY + timedelta(days=10), TODAY + timedelta(days=39))]
    response = page(again, f"from={WINDOW[0]}&to={WINDOW[1]}")
    notices = {n["code"]: n for n in response.context["notices"]}
    assert notices["days_unknown"]["title"] == "No figures for 25 Oct – 23 Nov 2026"


def test_usage_kept_at_a_disconnect_keeps_its_days(synced):
    connection_disconnect(connection=synced, delete_usage=False)
    assert spans_of(synced) == [WINDOW]


def test_a_normal_key_records_no_day(acme, emulator):
    connection = connect(acme, emulator, secret=emulator.normal_key)
    assert sync(connection, emulator).status == "succeeded"
    assert spans_of(connection) == []


def test_the_migration_rebuilds_the_days_from_the_successful_runs(synced, acme):
    migration = importlib.import_module("integrations.migrations.0004_connection_reported_spans")
    Connection.objects.filter(pk=synced.pk).update(reported_spans=[])
    for started, status in ((datetime(2026, 9, 1, 8, tzinfo=UTC), "succeeded"), (None, "failed")):
        run = SyncRun.objects.create(company=acme, connection=synced, trigger="scheduled", status=status)
        if started:
            SyncRun.objects.filter(pk=run.pk).update(started_at=started)
    # The fixture's run started today (the real clock), as did the failed one, which adds nothing.
    real_today = SyncRun.objects.filter(status="succeeded").latest("started_at").started_at.date()

    migration.reported_spans_from_runs(apps, None)

    expected = coverage.add([], date(2026, 8, 2), date(2026, 8, 31))
    expected = coverage.add(expected, real_today - timedelta(days=30), real_today - timedelta(days=1))
    assert spans_of(synced) == coverage.parse(expected)


# --- What the page shows


def test_the_default_range_right_after_connecting_shows_no_change_against_days_never_read(synced, page):
    response = page(synced)
    html = response.content.decode()

    assert response.context["deltas"] == {}
    assert "vs previous period" not in html
    assert (
        "no change is shown: Doow holds no day of the period before (25 Sep – 24 Oct 2026), as OpenRouter "
        "keeps only its last 30 days and Doow's history of this organization starts on 25 Oct 2026."
    ) in html
    # The range itself is fully known: no notice, no greyed day.
    assert "days_unknown" not in {n["code"] for n in response.context["notices"]}
    assert response.context["chart"]["unknown_days"] == []


def test_a_period_before_partly_read_names_the_days_doow_lacks(synced, page):
    response = page(synced, "range=this_month")  # 1 – 23 Nov ended: compared with 9 – 31 Oct
    assert response.context["deltas"] == {}
    assert (
        "no change is shown: the period before (9 Oct – 31 Oct 2026) holds days OpenRouter never reported "
        "to Doow (9 Oct – 24 Oct 2026), as OpenRouter keeps only"
    ) in response.content.decode()


def test_once_doow_holds_the_period_before_the_change_is_shown(synced, emulator, page):
    for _ in range(30):  # a month of daily syncs
        emulator.set_today(emulator.today + timedelta(days=1))
        sync(synced, emulator)
    response = page(synced)

    assert response.context["previous_unknown"] == ""
    assert set(response.context["deltas"]) >= {"spend_usd", "requests"}
    assert "vs previous period" in response.content.decode()


def test_a_range_holding_days_doow_never_read_shows_no_change_and_says_why(acme, page, monkeypatch):
    """Unsynced from 20 Sep to 24 Nov (longer than OpenRouter keeps activity): 20 Sep – 24 Oct are
    unknown. 15 Sep – 5 Oct holds 5 known days and 16 unknown ones, and the period before (25 Aug –
    14 Sep) is fully known: comparing them would read the unknown days as days without spend."""
    sep_20, nov_24 = date(2026, 9, 20), date(2026, 11, 24)
    emulator = Emulator(EmulatorConfig(seed=7, keys=24, today=sep_20, days=90))
    monkeypatch.setattr(report.timezone, "now", lambda: noon(sep_20))
    connection = connect(acme, emulator)
    sync(connection, emulator)
    emulator.set_today(nov_24)
    monkeypatch.setattr(report.timezone, "now", lambda: noon(nov_24))
    sync(connection, emulator)
    response = page(connection, "range=custom&from=2026-09-15&to=2026-10-05")

    assert "days_unknown" in {n["code"] for n in response.context["notices"]}
    assert response.context["totals"]["spend_usd"] == emulator.truth.activity_total(
        date(2026, 9, 15), date(2026, 9, 19)
    )
    assert response.context["previous_unknown"] == ""
    assert response.context["deltas"] == {}
    html = response.content.decode()
    assert "vs previous period" not in html
    assert (
        "no change is shown: the range holds days OpenRouter never reported to Doow (20 Sep – 5 Oct 2026), "
        "as OpenRouter keeps only its last 30 days and Doow's history of this organization starts on "
        "21 Aug 2026, with a gap where the organization went unsynced for longer than that."
    ) in html


def test_days_before_the_history_are_named_greyed_and_left_out_not_shown_as_zero(synced, page):
    response = page(synced, "range=90d")
    notices = {n["code"]: n for n in response.context["notices"]}

    assert notices["days_unknown"]["title"] == "No figures for 26 Aug – 24 Oct 2026"
    assert "history of this organization starts on 25 Oct 2026" in notices["days_unknown"]["text"]
    chart = response.context["chart"]
    assert chart["unknown_days"][0] == "2026-08-26" and chart["unknown_days"][-1] == "2026-10-24"
    assert len(chart["unknown_days"]) == 60
    html = response.content.decode()
    assert 'data-testid="chart-unknown"' in html and "Greyed with no bars: 26 Aug – 24 Oct 2026 (UTC)" in html
    # The chart script greys the same days.
    data = json.loads(html.split('<script id="chart-data" type="application/json">')[1].split("</script>")[0])
    assert data["unknown_days"] == chart["unknown_days"]


def test_the_notice_says_the_exports_hold_no_rows_for_unknown_days_and_they_do_not(synced, page, alice):
    notice = {n["code"]: n for n in page(synced, "range=90d").context["notices"]}["days_unknown"]
    assert "the exports hold no rows for them" in notice["text"]

    response = client_for(alice).get(f"/c/acme/integrations/openrouter/{synced.pk}/export.csv?range=90d")
    days = {line.split(",")[0] for line in b"".join(response.streaming_content).decode().splitlines()[1:]}
    assert days and min(days) == WINDOW[0].isoformat()


def test_a_gap_in_the_history_is_named_as_one(synced, emulator, page):
    emulator.set_today(TODAY + timedelta(days=41))
    sync(synced, emulator)
    response = page(synced, "range=90d")
    notice = {n["code"]: n for n in response.context["notices"]}["days_unknown"]

    assert notice["title"] == "No figures for 6 Oct – 24 Oct 2026, 24 Nov – 4 Dec 2026"
    assert "with a gap where the organization went unsynced" in notice["text"]


def test_a_normal_key_gets_no_unknown_days_notice(acme, emulator, page):
    connection = connect(acme, emulator, secret=emulator.normal_key)
    sync(connection, emulator)
    codes = {n["code"] for n in page(connection, "range=90d").context["notices"]}
    assert "days_unknown" not in codes and "single_key" in codes


def test_stretches_are_written_as_finance_reads_dates():
    assert report.stretches_text([]) == ""
    assert report.stretches_text([(date(2026, 11, 3), date(2026, 11, 3))]) == "3 Nov 2026"
    assert (
        report.stretches_text(
            [(date(2026, 10, 1), date(2026, 10, 5)), (date(2026, 12, 28), date(2027, 1, 3))]
        )
        == "1 Oct – 5 Oct 2026, 28 Dec 2026 – 3 Jan 2027"
    )


@pytest.mark.parametrize(
    ("section", "shown"),
    [("people", "the spend by person leaves them out"), ("reconciliation", "every line leaves them out")],
)
def test_the_people_and_reconciliation_pages_name_the_days_doow_never_read(synced, alice, section, shown):
    client = client_for(alice)
    base = f"/c/acme/integrations/openrouter/{synced.pk}/{section}/"
    response = client.get(base + "?range=90d")
    notice = {n["code"]: n for n in response.context["notices"]}["days_unknown"]
    assert notice["title"] == "No figures for 26 Aug – 24 Oct 2026"
    assert shown in notice["text"]
    assert 'data-testid="notice-days_unknown"' in response.content.decode()
    assert client.get(base + "?range=30d").context["notices"] == []


def test_days_a_sync_has_not_read_yet_are_not_called_unknown(synced, alice):
    # The last sync read through 21 Nov; 22 and 23 Nov have ended and the next sync reads them.
    read_through = TODAY - timedelta(days=3)
    Connection.objects.filter(pk=synced.pk).update(
        complete_through=read_through,
        reported_spans=coverage.add([], WINDOW[0] - timedelta(days=2), read_through),
    )
    response = client_for(alice).get(f"/c/acme/integrations/openrouter/{synced.pk}/reconciliation/?range=7d")
    assert response.context["notices"] == []
