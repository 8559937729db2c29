"""Anomaly and new-spender rules judge each day once it is read, the days a gap in syncing skipped
included (up to a week back), and a rule turned on again starts at the newest day."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse

from integrations.models import Connection
from openrouter.alerts import CATCH_UP_DAYS, evaluate_alerts
from openrouter.models import ApiKey
from tests.conftest import client_for
from tests.support import now_for, usage_rows_edited
from usage.models import Alert, AlertKind, AlertRule, UsageDaily

pytestmark = pytest.mark.django_db


@pytest.fixture
def synced(synced_with_people):
    return synced_with_people


def busiest_key(connection) -> ApiKey:
    return ApiKey.objects.filter(connection=connection).order_by("-usage").first()


def spend_on(connection, key_hash: str, day, amount) -> UsageDaily:
    """`amount` spent by the key on `day`: its row of that day, or a row like one of its others."""
    row = UsageDaily.objects.filter(connection=connection, api_key_hash=key_hash, day=day).first()
    if row is None:
        row = UsageDaily.objects.filter(connection=connection, api_key_hash=key_hash).latest("day")
        row.pk, row.day = None, day
    row.spend_usd = Decimal(amount)
    row.save()
    usage_rows_edited(connection)
    return row


def read_through(connection, day) -> Connection:
    """The connection as it is once a sync has read every day through `day`."""
    Connection.objects.filter(pk=connection.pk).update(complete_through=day)
    connection.refresh_from_db()
    return connection


def anomaly_periods(key_hash: str) -> set[str]:
    return set(
        Alert.objects.filter(kind=AlertKind.ANOMALY, subject=f"key:{key_hash}").values_list(
            "period", flat=True
        )
    )


def judged_through(connection, kind=AlertKind.ANOMALY):
    return AlertRule.objects.get(connection=connection, kind=kind).judged_through


def test_a_spike_on_a_day_read_after_a_gap_is_raised_for_that_day(synced, emulator):
    newest = synced.complete_through
    key = busiest_key(synced)
    # The syncs after the one that read newest - 3 failed: the next evaluation judged that day.
    evaluate_alerts(connection=read_through(synced, newest - timedelta(days=3)), now=now_for(emulator))
    assert judged_through(synced) == newest - timedelta(days=3)

    skipped = newest - timedelta(days=1)
    spend_on(synced, key.key_hash, skipped, 5000)
    raised = evaluate_alerts(connection=read_through(synced, newest), now=now_for(emulator))

    # The emulator's organization has spikes of its own on some days: those judged may raise too.
    assert skipped.isoformat() in anomaly_periods(key.key_hash)
    alert = next(a for a in raised if a.subject == f"key:{key.key_hash}" and a.period == skipped.isoformat())
    assert f"{skipped:%d %b}" in alert.title and alert.detail["day"] == skipped.isoformat()
    assert judged_through(synced) == newest
    assert judged_through(synced, AlertKind.NEW_SPENDER) == newest


def test_a_first_evaluation_judges_only_the_newest_day(synced, emulator):
    newest = synced.complete_through
    key = busiest_key(synced)
    spend_on(synced, key.key_hash, newest - timedelta(days=1), 5000)

    evaluate_alerts(connection=synced, now=now_for(emulator))

    assert anomaly_periods(key.key_hash) <= {newest.isoformat()}
    assert judged_through(synced) == newest


def test_after_a_long_gap_only_the_last_week_is_judged(synced, emulator):
    newest = synced.complete_through
    key = busiest_key(synced)
    evaluate_alerts(connection=read_through(synced, newest - timedelta(days=20)), now=now_for(emulator))
    too_old = newest - timedelta(days=CATCH_UP_DAYS)
    oldest_judged = newest - timedelta(days=CATCH_UP_DAYS - 1)
    spend_on(synced, key.key_hash, too_old, 5000)
    spend_on(synced, key.key_hash, oldest_judged, 5000)

    evaluate_alerts(connection=read_through(synced, newest), now=now_for(emulator))

    periods = anomaly_periods(key.key_hash)
    assert oldest_judged.isoformat() in periods
    assert min(periods) == oldest_judged.isoformat()


def test_a_judged_day_is_not_judged_again_but_the_newest_is(synced, emulator):
    newest = synced.complete_through
    key = busiest_key(synced)
    evaluate_alerts(connection=synced, now=now_for(emulator))
    # A later sync revised yesterday's spend: the newest day is judged at every evaluation.
    spend_on(synced, key.key_hash, newest, 5000)
    spend_on(synced, key.key_hash, newest - timedelta(days=1), 6000)

    evaluate_alerts(connection=synced, now=now_for(emulator) + timedelta(hours=1))

    assert anomaly_periods(key.key_hash) == {newest.isoformat()}  # not newest - 1


def test_a_new_spender_on_a_skipped_day_is_raised(synced, emulator):
    newest = synced.complete_through
    skipped = newest - timedelta(days=2)
    row = UsageDaily.objects.filter(connection=synced, day=skipped).exclude(api_key_hash="").first()
    evaluate_alerts(connection=read_through(synced, newest - timedelta(days=4)), now=now_for(emulator))
    # A key never seen before, spending on the skipped day with that day's models and workspace.
    row.pk, row.api_key_hash, row.spend_usd, row.requests = None, "brand-new-key", Decimal(40), 9
    row.save()
    usage_rows_edited(synced)

    evaluate_alerts(connection=read_through(synced, newest), now=now_for(emulator))

    alert = Alert.objects.get(kind=AlertKind.NEW_SPENDER, subject="new-key:brand-new-key")
    assert alert.period == skipped.isoformat() and f"on {skipped:%d %b}" in alert.title


def test_a_rule_turned_on_again_starts_at_the_newest_day(synced, emulator, fiona):
    newest = synced.complete_through
    key = busiest_key(synced)
    evaluate_alerts(connection=read_through(synced, newest - timedelta(days=3)), now=now_for(emulator))
    rule = AlertRule.objects.get(connection=synced, kind=AlertKind.ANOMALY)
    page = reverse("openrouter:alert-rule", args=["acme", synced.pk, rule.pk])
    client_for(fiona).post(page, {"threshold": "3.5", "notify_roles": ["admin"]})  # off
    assert AlertRule.objects.get(pk=rule.pk).enabled is False
    spend_on(synced, key.key_hash, newest - timedelta(days=1), 5000)  # while it was off

    client_for(fiona).post(page, {"threshold": "3.5", "notify_roles": ["admin"], "enabled": "on"})
    assert judged_through(synced) is None
    evaluate_alerts(connection=read_through(synced, newest), now=now_for(emulator))

    assert anomaly_periods(key.key_hash) <= {newest.isoformat()}
    assert judged_through(synced) == newest
