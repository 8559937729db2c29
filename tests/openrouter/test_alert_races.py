"""Alert evaluation racing a disconnect or another evaluation of the same connection."""

from decimal import Decimal
from unittest import mock

import pytest
from django.core import mail
from django.core.mail import send_mail as real_send_mail

from integrations.models import Connection
from integrations.services import connection_disconnect
from openrouter import alerts
from openrouter.alerts import evaluate_alerts
from openrouter.models import CreditsSnapshot
from tests.support import now_for
from usage.models import Alert, AlertKind, AlertState

pytestmark = pytest.mark.django_db


def credits_left(connection, dollars) -> None:
    credits = CreditsSnapshot.objects.get(connection=connection)
    CreditsSnapshot.objects.filter(pk=credits.pk).update(total_credits=credits.total_usage + Decimal(dollars))


def test_an_evaluation_running_when_the_connection_is_disconnected_raises_no_alert(
    synced_with_people, emulator
):
    """evaluate_alerts_task reads the connection, then the admin disconnects (which resolves the open
    alerts and says nothing watches them any more), then the evaluation raises and emails an alert for
    the disconnected connection. Nothing evaluates a disconnected connection again, so it stays open."""
    connection = synced_with_people
    credits_left(connection, 3)
    check = alerts._check
    state = {"disconnected": False}

    def disconnect_meanwhile(rule, reads):
        if not state["disconnected"]:
            state["disconnected"] = True
            connection_disconnect(connection=Connection.objects.get(pk=connection.pk))  # the web request
            mail.outbox.clear()
        return check(rule, reads)

    in_flight = Connection.objects.get(pk=connection.pk)  # as evaluate_alerts_task read it
    with mock.patch.object(alerts, "_check", disconnect_meanwhile):
        evaluate_alerts(connection=in_flight, now=now_for(emulator))

    assert Connection.objects.get(pk=connection.pk).state == "disconnected"
    still_open = Alert.objects.filter(connection=connection).exclude(state=AlertState.RESOLVED)
    assert not still_open.exists(), [a.title for a in still_open]
    assert not mail.outbox, [m.subject for m in mail.outbox]


def test_two_overlapping_evaluations_email_one_alert_once(synced_with_people, emulator):
    """E1 creates the alert (committed) and is sending its email when E2 (the next sync's evaluation,
    or the hourly one) reads it as open and never emailed: E2 emails it as well."""
    connection = synced_with_people
    credits_left(connection, 3)
    now = now_for(emulator)
    calls = []

    def slow_smtp(**kwargs):
        calls.append(kwargs["subject"])
        if len(calls) == 1:  # while E1's SMTP conversation is in flight, E2 runs on another worker
            evaluate_alerts(connection=Connection.objects.get(pk=connection.pk), now=now)
        return real_send_mail(**kwargs)

    mail.outbox.clear()
    with mock.patch.object(alerts, "send_mail", slow_smtp):
        evaluate_alerts(connection=Connection.objects.get(pk=connection.pk), now=now)

    assert Alert.objects.filter(connection=connection, kind=AlertKind.CREDIT_LOW).count() == 1
    sent = [m.subject for m in mail.outbox if "Credit balance below" in m.subject]
    assert len(sent) == 1, sent
