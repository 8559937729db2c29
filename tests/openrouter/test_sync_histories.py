"""Property: over any history of syncs (organizations of any seed and size; the next sync minutes,
hours, days or months later, at any hour; keys deleted in between), every completed day in
OpenRouter's window holds exactly what OpenRouter reports for it, per listed key and account-wide to
the cent, and a day that has left the window keeps what was stored while it was in it."""

from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.db.models import Sum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integrations.models import SyncEvent
from openrouter.emulator import Emulator, EmulatorConfig
from openrouter.models import ApiKey
from openrouter.sync import sync_connection
from tests.support import EMULATOR_BASE_URL, TODAY, Sleeps, connect
from usage.models import UsageDaily

pytestmark = pytest.mark.django_db

# Time to the next sync: the same hour, later that day, the next days, past a weekend, past the
# whole 30-day window.
GAPS = st.sampled_from([0, 0, 1, 1, 2, 3, 7, 31, 45])
HOURS = st.sampled_from([0, 1, 6, 12, 18, 23])
# Before the next sync, maybe one of the listed keys is deleted in OpenRouter (picked by this number).
DELETIONS = st.one_of(st.none(), st.integers(min_value=0, max_value=50))


def per_day_and_key(rows, key: str) -> dict:
    totals: dict = defaultdict(lambda: [Decimal(0), Decimal(0), 0])
    for row in rows:
        total = totals[date.fromisoformat(row["date"]), key]
        total[0] += row["usage"]
        total[1] += row["byok_usage_inference"]
        total[2] += row["requests"]
    return {day_key: tuple(total) for day_key, total in totals.items() if any(total)}


def stored(connection, **filters) -> dict:
    rows = (
        UsageDaily.objects.filter(connection=connection, **filters)
        .values_list("day", "api_key_hash")
        .annotate(Sum("spend_usd"), Sum("byok_spend_usd"), Sum("requests"))
        .order_by()
    )
    return {
        (day, key): (spend, byok, requests)
        for day, key, spend, byok, requests in rows
        if any((spend, byok, requests))
    }


def openrouter_reports(emulator) -> tuple[set, dict, dict]:
    """The listed keys, and per (day, listed key) and per day account-wide what /activity says."""
    start, end = emulator.truth.activity_window()
    listed = {key["hash"] for key in emulator.truth.listed_keys()}
    by_key = {}
    for key in listed:
        by_key |= per_day_and_key(emulator.truth.activity_rows(start, end, api_key_hash=key), key)
    account_rows = per_day_and_key(emulator.truth.activity_rows(start, end), "")
    return listed, by_key, {day: figures for (day, _), figures in account_rows.items()}


@given(
    seed=st.integers(min_value=1, max_value=10**6),
    keys=st.integers(min_value=1, max_value=12),
    workspaces=st.integers(min_value=1, max_value=3),
    first_hour=HOURS,
    history=st.lists(st.tuples(GAPS, HOURS, DELETIONS), min_size=1, max_size=3),
)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_day_in_the_window_is_what_openrouter_reports_after_any_history(
    acme, seed, keys, workspaces, first_hour, history
):
    emulator = Emulator(EmulatorConfig(seed=seed, keys=keys, workspaces=workspaces, today=TODAY))
    acme.connections.all().delete()  # each example connects its own organization
    connection = connect(acme, emulator)
    moment = datetime.combine(TODAY, time(first_hour), tzinfo=UTC)
    kept: dict = {}  # (day, key) -> what was stored for it while the day was in the window
    for step, (gap_days, hour, deletion) in enumerate([(0, first_hour, None), *history]):
        if step:
            following = datetime.combine(moment.date() + timedelta(days=gap_days), time(hour), tzinfo=UTC)
            moment = max(following, moment + timedelta(minutes=5))
        emulator.set_now(moment)
        listed_now = sorted(emulator.listed_indexes(None, True, True))
        if deletion is not None and listed_now:
            emulator.delete_key(emulator.world.key_hash(listed_now[deletion % len(listed_now)]))
        result = sync_connection(
            connection.pk,
            transport=emulator.transport(),
            base_url=EMULATOR_BASE_URL,
            sleep=Sleeps(),
            now=moment,
        )
        assert result.status == "succeeded", result

        start, end = emulator.truth.activity_window()
        listed, by_key, account = openrouter_reports(emulator)
        in_window = stored(connection, day__gte=start, day__lte=end)
        assert {day_key: v for day_key, v in in_window.items() if day_key[1] in listed} == by_key
        account_stored: dict = defaultdict(lambda: [Decimal(0), Decimal(0), 0])
        for (day, _key), figures in in_window.items():
            for i, value in enumerate(figures):
                account_stored[day][i] += value
        assert {day: tuple(v) for day, v in account_stored.items()} == account
        assert not UsageDaily.objects.filter(connection=connection, spend_usd__lt=0).exists()
        known = ApiKey.objects.filter(connection=connection)
        assert set(known.filter(missing_since__isnull=True).values_list("key_hash", flat=True)) == listed
        assert stored(connection, day__lt=start) == {k: v for k, v in kept.items() if k[0] < start}
        kept = {day_key: v for day_key, v in kept.items() if day_key[0] < start} | in_window
    assert not SyncEvent.objects.filter(connection=connection, code="reconciliation_mismatch").exists()
