"""The people and reconciliation pages read the usage summaries, like the detail page, and cache
their sums under the connection's data version; their figures stay those of the usage rows."""

import re
from datetime import timedelta
from decimal import Decimal
from unittest import mock

import pytest
from django.db import connection as db
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from integrations.models import Connection
from openrouter import insights
from openrouter.models import CreditsSnapshot
from tests.conftest import client_for
from tests.support import TODAY, noon
from usage.models import UsageDaily

pytestmark = pytest.mark.django_db

PAGES = ["people", "reconciliation"]


@pytest.fixture
def synced(synced_with_people, emulator):
    """A synced connection with two credit snapshots inside the activity window, so the
    reconciliation also compares credits with the activity of each day between them."""
    for days_ago, usage in ((6, Decimal(100)), (2, Decimal(140))):
        CreditsSnapshot.objects.create(
            company_id=synced_with_people.company_id,
            connection=synced_with_people,
            taken_at=noon(emulator.today - timedelta(days=days_ago)),
            total_credits=Decimal(1_000_000),
            total_usage=usage,
        )
    return synced_with_people


def page_url(name, connection, emulator):
    start, end = emulator.truth.activity_window()
    path = reverse(f"openrouter:{name}", args=["acme", connection.pk])
    return f"{path}?range=custom&from={start}&to={end}"


def view(user, url):
    """The page as `user` sees it at noon of the emulator's day, and the SQL it ran."""
    with mock.patch("django.utils.timezone.now", return_value=noon(TODAY)), CaptureQueriesContext(db) as ctx:
        response = client_for(user).get(url)
    assert response.status_code == 200
    return response.content.decode(), [query["sql"] for query in ctx.captured_queries]


def reading(table, queries):
    return [sql for sql in queries if f'FROM "{table}"' in sql]


@pytest.mark.parametrize("page", PAGES)
def test_the_page_reads_no_usage_row_while_the_summaries_are_current(alice, synced, emulator, page):
    """At 1M usage rows the raw rows' sums took 1.3–2.4 s a view; the summaries hold the same sums
    in far fewer rows."""
    assert synced.usage_summaries_stale_from is None

    html, queries = view(alice, page_url(page, synced, emulator))

    assert "$" in html
    raw = reading("usage_usagedaily", queries)
    assert raw == [], f"{len(raw)} query(ies) over the usage rows:\n" + "\n".join(sql[:300] for sql in raw)


@pytest.mark.parametrize("page", PAGES)
def test_a_repeat_view_is_served_from_the_cache(alice, synced, emulator, page):
    url = page_url(page, synced, emulator)
    _html, first = view(alice, url)
    _html, repeat = view(alice, url)

    assert reading("usage_usagedailybykey", first) or reading("usage_usagedailybymodel", first)
    assert reading("usage_usagedailybykey", repeat) == []
    assert reading("usage_usagedailybymodel", repeat) == []
    assert len(repeat) < len(first)


def test_a_cached_view_still_shows_a_key_owner_set_since(alice, fiona, synced, emulator):
    """Only the sums by key are cached: an owner set by hand moves no data version."""
    start, end = emulator.truth.activity_window()
    key = (
        UsageDaily.objects.filter(connection=synced, day__range=(start, end)).exclude(api_key_hash="").first()
    )
    insights.spend_by_person(connection=synced, start=start, end=end)

    insights.key_owner_set(connection=synced, key_hash=key.api_key_hash, user=fiona, actor=alice)

    fionas = [
        entry
        for entry in insights.spend_by_person(connection=synced, start=start, end=end)
        if entry["person"].user == fiona
    ]
    assert len(fionas) == 1 and "manual" in fionas[0]["person"].source.split(", ")


def test_the_people_page_reads_the_keys_owners_once(alice, synced, emulator):
    _html, queries = view(alice, page_url("people", synced, emulator))

    assert len(reading("openrouter_member", queries)) == 1
    assert len(reading("openrouter_keyowner", queries)) == 1


def _mark_stale(connection):
    """What a sync's write does to the connection row: summaries stale from its first day, and a
    new data version (so no figure cached before is read)."""
    first_day = (
        UsageDaily.objects.filter(connection=connection).order_by("day").values_list("day", flat=True)[0]
    )
    Connection.objects.filter(pk=connection.pk).update(
        usage_summaries_stale_from=first_day, data_version=F("data_version") + 1
    )
    connection.refresh_from_db()


def _without_csrf_tokens(html):
    return re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", html)


def test_the_figures_are_the_same_from_the_summaries_and_from_the_usage_rows(alice, synced, emulator):
    start, end = emulator.truth.activity_window()
    now = noon(emulator.today)

    def figures():
        people = [
            (entry["person"].label, entry["person"].source, entry["spend"], entry["byok"], entry["requests"])
            + (entry["keys"],)
            for entry in insights.spend_by_person(connection=synced, start=start, end=end)
        ]
        lines = [
            (line.label, line.amount, line.explanation, line.flagged)
            for line in insights.reconciliation(connection=synced, start=start, end=end, now=now)
        ]
        pages = [_without_csrf_tokens(view(alice, page_url(page, synced, emulator))[0]) for page in PAGES]
        return people, lines, pages

    from_summaries = figures()
    _mark_stale(synced)
    from_rows = figures()

    assert from_summaries == from_rows
    people, lines, _pages = from_rows
    assert any(label == "(deleted or unlisted keys)" for label, *_rest in people)
    amounts = {label.split(" (")[0]: amount for label, amount, *_rest in lines}
    assert amounts["Credits used between snapshots"] == Decimal(40)
    assert amounts["Key counters this month"] is not None
