"""Resolving alerts takes a bounded number of queries however many alerts clear at once, and still
says why in each alert's detail."""

from decimal import Decimal

import pytest
from django.db import connection as db
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from openrouter.alerts import evaluate_alerts
from openrouter.models import ApiKey
from tests.support import connect, open_alerts
from usage.models import DISMISSED, Alert, AlertKind, AlertState, alerts_resolve
from usage.services import alert_resolve_by_hand

pytestmark = pytest.mark.django_db


def keys_near_their_limit(connection, n: int) -> None:
    ApiKey.objects.bulk_create(
        ApiKey(
            company_id=connection.company_id,
            connection=connection,
            key_hash=f"hash{k:08d}",
            name=f"Key {k}",
            sort_name=f"key {k:08d}",
            limit=Decimal(10),
            limit_remaining=Decimal("0.5"),
        )
        for k in range(n)
    )


def queries_resolving(company, emulator, n: int) -> int:
    """Queries of the evaluation that resolves n key-limit alerts whose limits were reset."""
    connection = connect(company, emulator)
    keys_near_their_limit(connection, n)
    evaluate_alerts(connection=connection)
    assert (
        Alert.objects.filter(connection=connection, kind=AlertKind.KEY_LIMIT, state=AlertState.OPEN).count()
        == n
    )
    ApiKey.objects.filter(connection=connection).update(limit_remaining=10)
    with CaptureQueriesContext(db) as captured:
        evaluate_alerts(connection=connection)
    assert (
        not Alert.objects.filter(connection=connection, kind=AlertKind.KEY_LIMIT)
        .exclude(state=AlertState.RESOLVED)
        .exists()
    )
    return len(captured)


def test_resolving_cleared_key_limit_alerts_is_not_one_query_per_alert(acme, globex, emulator, settings):
    """Measured before: 15 queries for 5 alerts, 210 for 200."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    few = queries_resolving(acme, emulator, 5)
    many = queries_resolving(globex, emulator, 200)
    assert many <= few, (few, many)


def queries_ending_dismissals(company, user, emulator, n: int) -> int:
    """Queries of the evaluation that ends the dismissal of n key-limit alerts resolved by hand,
    once the keys' limits were reset."""
    connection = connect(company, emulator)
    keys_near_their_limit(connection, n)
    evaluate_alerts(connection=connection)
    for alert in Alert.objects.filter(connection=connection, kind=AlertKind.KEY_LIMIT):
        assert alert_resolve_by_hand(alert=alert, user=user)
    dismissed = {alert.pk: alert.detail for alert in Alert.objects.filter(connection=connection)}
    assert len(dismissed) == n and all(detail[DISMISSED] for detail in dismissed.values())
    ApiKey.objects.filter(connection=connection).update(limit_remaining=10)
    with CaptureQueriesContext(db) as captured:
        evaluate_alerts(connection=connection)
    for alert in Alert.objects.filter(connection=connection):
        # Only the mark goes: the reason it was resolved for stays.
        assert alert.state == AlertState.RESOLVED
        assert alert.detail == {k: v for k, v in dismissed[alert.pk].items() if k != DISMISSED}
        assert alert.detail["resolved_reason"] == f"Resolved by {user.email}."
    return len(captured)


def test_ending_the_dismissal_of_alerts_is_not_one_query_per_alert(acme, globex, alice, charlie, emulator):
    """Measured before: one UPDATE per alert."""
    few = queries_ending_dismissals(acme, alice, emulator, 5)
    many = queries_ending_dismissals(globex, charlie, emulator, 200)
    assert many <= few, (few, many)


def test_resolving_alerts_says_why_in_a_bounded_number_of_queries(acme, globex, emulator):
    counts = {}
    for company, n in ((acme, 5), (globex, 700)):
        alerts = open_alerts(connect(company, emulator), n)
        with CaptureQueriesContext(db) as captured:
            assert alerts_resolve(alerts, reason="Its alert rule was turned off.") == n
        counts[n] = len(captured)
        resolved = {a.pk: a for a in Alert.objects.filter(pk__in=[a.pk for a in alerts])}
        for i, alert in enumerate(alerts):
            assert resolved[alert.pk].state == AlertState.RESOLVED
            assert resolved[alert.pk].resolved_at is not None
            assert resolved[alert.pk].detail == {
                "balance": str(i),
                "resolved_reason": "Its alert rule was turned off.",
            }
    assert counts == {5: 1, 700: 3}  # one UPDATE per RESOLVE_BATCH alerts


def test_an_alert_resolved_meanwhile_keeps_its_detail_and_is_not_counted(acme, emulator):
    alerts = open_alerts(connect(acme, emulator), 3)
    by_hand = {"balance": "1", DISMISSED: True}
    Alert.objects.filter(pk=alerts[1].pk).update(
        state=AlertState.RESOLVED, resolved_at=timezone.now(), detail=by_hand
    )  # after `alerts` were read

    assert alerts_resolve(alerts, reason="The connection was disconnected.") == 2

    details = dict(Alert.objects.values_list("pk", "detail"))
    assert details[alerts[1].pk] == by_hand
    assert details[alerts[0].pk]["resolved_reason"] == "The connection was disconnected."
    assert details[alerts[2].pk]["resolved_reason"] == "The connection was disconnected."
