"""The detail page between 00:00 UTC and the first sync that reads the day just ended: that day has
ended but Doow does not hold it yet, so it is neither compared as a day without spend nor said to
have had none, and the keys' counters read before midnight are not today's spend."""

from datetime import UTC, date, datetime

import pytest
from django.db.models import F, Sum
from django.utils import timezone

from integrations.models import Connection
from openrouter import insights
from openrouter.models import ApiKey, ApiKeySnapshot
from tests.conftest import client_for
from tests.support import noon, synced_organization

pytestmark = pytest.mark.django_db

DEC_1 = date(2026, 12, 1)
AFTER_MIDNIGHT = datetime(2026, 12, 2, 0, 5, tzinfo=UTC)


def url(connection, query=""):
    return f"/c/acme/integrations/openrouter/{connection.pk}/" + (f"?{query}" if query else "")


@pytest.fixture
def synced_dec_1(acme, monkeypatch):
    """Last sync at noon on 1 Dec: it read every day through 30 Nov."""
    monkeypatch.setattr(timezone, "now", lambda: noon(DEC_1))
    connection, emulator = synced_organization(acme, DEC_1)
    assert connection.complete_through == date(2026, 11, 30)
    return connection, emulator


def test_a_range_is_compared_with_as_many_days_as_it_holds_not_as_have_ended(
    synced_dec_1, alice, monkeypatch
):
    """00:05 UTC on 2 Dec: 1 Dec has ended but no sync has read it. The last 7 days (25 Nov – 1 Dec)
    hold 6 days, compared with the 6 before, not with 7 (a fall that never happened)."""
    connection, emulator = synced_dec_1
    monkeypatch.setattr(timezone, "now", lambda: AFTER_MIDNIGHT)
    response = client_for(alice).get(url(connection, "range=7d"))
    context = response.context

    assert context["totals"]["spend_usd"] == emulator.truth.activity_total(
        date(2026, 11, 25), date(2026, 11, 30)
    )
    assert context["previous_range"] == (date(2026, 11, 19), date(2026, 11, 24))
    assert "changes compare its 6 days read so far with 19 Nov – 24 Nov 2026." in response.content.decode()


def test_this_month_on_the_2nd_after_midnight_says_its_day_is_not_read_yet_not_without_spend(
    synced_dec_1, alice, monkeypatch
):
    """ "This month" at 00:05 on 2 Dec holds no day yet: 1 Dec spent money, so no ▼ −100% and no
    "Nothing was spent"; the page says the day is not read yet."""
    connection, emulator = synced_dec_1
    monkeypatch.setattr(timezone, "now", lambda: AFTER_MIDNIGHT)
    response = client_for(alice).get(url(connection, "range=this_month"))
    page = response.content.decode()
    emulator.set_today(date(2026, 12, 2))  # what OpenRouter answers at 00:05 on 2 Dec
    assert emulator.truth.activity_total(DEC_1, DEC_1) > 0

    assert response.context["previous_range"] is None
    assert response.context["deltas"] == {}
    assert "vs previous period" not in page
    assert "Nothing was spent" not in page
    codes = {n["code"] for n in response.context["notices"]}
    assert "not_read_yet" in codes and not codes & {"no_usage", "no_reported_day", "reporting_delay"}
    assert "1 Dec 2026 has ended, but Doow holds daily figures through 30 Nov 2026 UTC only" in page
    assert "none of its ended days has been read yet, so there is no change to show." in page


def test_nothing_spent_names_only_the_days_doow_holds(synced_dec_1, alice, monkeypatch):
    """With a filter nothing matches, "Nothing was spent" ends at the last day Doow holds, not at a day
    no sync has read yet."""
    connection, _emulator = synced_dec_1
    monkeypatch.setattr(timezone, "now", lambda: AFTER_MIDNIGHT)
    response = client_for(alice).get(url(connection, "range=7d&model=no-such/model"))
    assert (
        "Nothing was spent with these filters between 25 Nov 2026 and 30 Nov 2026."
        in response.content.decode()
    )


def test_todays_spend_counts_only_the_counters_read_today(synced_dec_1, alice, monkeypatch):
    """A sync that started before midnight and finished after it read one key at 23:59 on 1 Dec: its
    counters are 1 Dec's whole day, neither in the page's "spent today" nor in its top keys, as in
    the month card (insights.today_partial)."""
    connection, _emulator = synced_dec_1
    after_midnight = datetime(2026, 12, 2, 0, 1, tzinfo=UTC)
    # The sync's snapshots: every key read after midnight but one with spend, read at 23:59 on 1 Dec.
    ApiKeySnapshot.objects.filter(connection=connection, day=DEC_1).update(day=date(2026, 12, 2))
    key = ApiKey.objects.filter(connection=connection, missing_since__isnull=True, usage_daily__gt=0).first()
    ApiKeySnapshot.objects.filter(connection=connection, key_hash=key.key_hash).update(day=DEC_1)
    Connection.objects.filter(pk=connection.pk).update(
        last_synced_at=after_midnight, data_version=F("data_version") + 1
    )
    monkeypatch.setattr(timezone, "now", lambda: after_midnight)
    connection.refresh_from_db()
    partial = client_for(alice).get(url(connection)).context["today_partial"]

    read_today = insights.today_partial(connection=connection, now=after_midnight)
    everyone = ApiKey.objects.filter(connection=connection, missing_since__isnull=True)
    assert read_today == everyone.aggregate(total=Sum("usage_daily"))["total"] - key.usage_daily
    assert partial["synced_today"]
    assert partial["spend"] == read_today
    assert partial["top"] and key.key_hash not in {k.key_hash for k in partial["top"]}
