"""Helpers shared by tests: connect and sync against the in-process emulator at a fixed 'today'."""

import threading
from datetime import UTC, date, datetime, time

from django.db import connections
from django.db.models import Sum

from openrouter.services import openrouter_connect
from openrouter.sync import sync_connection

TODAY = date(2026, 11, 24)
EMULATOR_BASE_URL = "http://emulator/api/v1"


class Sleeps(list):
    """A stand-in for time.sleep that records waits instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def noon(day: date) -> datetime:
    return datetime.combine(day, time(12, 0), tzinfo=UTC)


def now_for(emulator) -> datetime:
    """Noon of the emulator's today: the moment alert and insight tests evaluate at."""
    return noon(emulator.today)


def connect(company, emulator, *, secret=None, name="", actor=None):
    connection = openrouter_connect(
        company=company,
        secret=secret or emulator.management_key,
        name=name,
        actor=actor,
        transport=emulator.transport(),
    ).connection
    return connection


def sync(connection, emulator, *, sleep=None, trigger="manual", transport=None, **kwargs):
    return sync_connection(
        connection.pk,
        trigger=trigger,
        transport=transport or emulator.transport(),
        base_url=EMULATOR_BASE_URL,
        sleep=sleep if sleep is not None else Sleeps(),
        now=noon(emulator.today),
        **kwargs,
    )


def usage_snapshot(connection) -> list[tuple]:
    """Every usage row of a connection, as comparable tuples."""
    from usage.models import UsageDaily

    return list(
        UsageDaily.objects.filter(connection=connection)
        .order_by("day", "workspace_id", "api_key_hash", "model_permaslug", "provider_name")
        .values_list(
            "day",
            "workspace_id",
            "api_key_hash",
            "model_permaslug",
            "provider_name",
            "requests",
            "prompt_tokens",
            "completion_tokens",
            "reasoning_tokens",
            "cached_tokens",
            "spend_usd",
            "byok_spend_usd",
        )
    )


def synced_organization(company, today: date, **config):
    """The emulator's organization (seed 7, 24 keys) as OpenRouter holds it on `today`, connected and
    synced once at noon of that day: (connection, emulator)."""
    from openrouter.emulator import Emulator, EmulatorConfig

    emulator = Emulator(EmulatorConfig(**{"seed": 7, "keys": 24, **config}, today=today))
    connection = connect(company, emulator)
    sync(connection, emulator)
    connection.refresh_from_db()
    return connection, emulator


def stored_total(connection, field="spend_usd", **filters):
    from usage.models import UsageDaily

    return (
        UsageDaily.objects.filter(connection=connection, **filters).aggregate(total=Sum(field))["total"] or 0
    )


def usage_rows_edited(connection) -> None:
    """After a test edits usage rows directly: what an operator runs after changing rows by other
    means than a sync (manage.py usage_summaries_rebuild), so reports see the edit."""
    from usage.services import usage_summaries_recompute

    usage_summaries_recompute(connection_id=connection.pk)
    connection.refresh_from_db()


def thread_with_own_connection(target) -> threading.Thread:
    """A thread running `target` that closes its database connection when done, as a Celery worker
    does after a task. Otherwise the connection stays open after the test (seen in
    pg_stat_activity), and PostgreSQL cannot drop a test database a session is still connected to."""

    def run():
        try:
            target()
        finally:
            connections.close_all()

    return threading.Thread(target=run)


def objects_behind_every_id(company, emulator) -> dict:
    """A synced connection of `company` with a budget, an alert rule, an open alert and a sync run:
    a real row for every kind of id the company's URLs take, by the URL parameter's name."""
    from integrations.models import SyncRun
    from openrouter.alerts import budget_create
    from usage.models import Alert, AlertRule, BudgetScope

    connection = connect(company, emulator)
    sync(connection, emulator)
    budget = budget_create(
        connection=connection, scope=BudgetScope.CONNECTION, target="", target_label="", monthly_usd=100
    )
    rule = AlertRule.objects.filter(connection=connection).first()
    alert = Alert.objects.create(
        company=company,
        connection=connection,
        rule=rule,
        kind=rule.kind,
        period="2026-11",
        title="t",
        message="m",
    )
    return {
        "connection_id": connection,
        "budget_id": budget,
        "rule_id": rule,
        "alert_id": alert,
        "run_id": SyncRun.objects.filter(connection=connection).first(),
    }


def open_alerts(connection, n: int):
    """`n` open credit-low alerts of the connection, one rule's, each its own subject."""
    from usage.models import Alert, AlertKind, AlertRule

    rule = AlertRule.objects.create(
        company_id=connection.company_id, connection=connection, kind=AlertKind.CREDIT_LOW
    )
    return Alert.objects.bulk_create(
        Alert(
            company_id=connection.company_id,
            connection=connection,
            rule=rule,
            kind=rule.kind,
            subject=f"s{i}",
            period="2026-11",
            title=f"Alert {i}",
            message="m",
            detail={"balance": str(i)},
        )
        for i in range(n)
    )
