"""Budgets and alerts, people and reconciliation on emulator data."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from integrations.models import SyncEvent, SyncRun
from openrouter import insights
from openrouter.alerts import budget_create, evaluate_alerts
from openrouter.models import ApiKey, CreditsSnapshot, KeyOwner, Member
from tests.conftest import client_for
from tests.support import now_for, sync, usage_rows_edited
from usage.backtest import backtest_month
from usage.models import Alert, AlertKind, AlertRule, AlertState, UsageDaily

pytestmark = pytest.mark.django_db


@pytest.fixture
def synced(synced_with_people):
    return synced_with_people


def test_budget_alerts_fire_once_per_month_and_email_admin_and_finance(synced, emulator):
    forecast = insights.forecast(connection=synced, now=now_for(emulator))
    assert forecast.month_to_date > 0
    budget_create(
        connection=synced,
        scope="connection",
        target="",
        target_label="",
        monthly_usd=forecast.month_to_date * Decimal("0.9"),
    )

    raised = evaluate_alerts(connection=synced, now=now_for(emulator))
    again = evaluate_alerts(connection=synced, now=now_for(emulator))

    kinds = {alert.kind for alert in raised}
    assert AlertKind.BUDGET_100 in kinds
    assert AlertKind.BUDGET_80 not in kinds  # superseded by "reached": one budget alert per month
    assert AlertKind.BUDGET_PROJECTED not in kinds  # already over: "reached" says it
    assert again == []
    budget_mails = [m for m in mail.outbox if "budget" in m.subject]
    assert len(budget_mails) == 1
    assert sorted(budget_mails[0].to) == ["alice@acme.test", "fiona@acme.test"]
    assert SyncEvent.objects.filter(connection=synced, kind="alert", code="alert_budget_100").count() == 1


def test_a_connection_budget_alert_names_the_connection_once(synced, emulator, fiona):
    """A budget set on the page for the whole connection (its label is "Whole connection") once
    raised "Whole connection Whole connection: …"."""
    client_for(fiona).post(
        reverse("openrouter:budgets", args=["acme", synced.pk]),
        {"scope": "connection", "target": "", "monthly_usd": "1"},
    )

    raised = evaluate_alerts(connection=synced, now=now_for(emulator))

    titles = {alert.title for alert in raised if alert.kind == AlertKind.BUDGET_100}
    assert titles == {"Whole connection: monthly budget of $1.00 reached"}


def test_projected_overrun_alert(synced, emulator):
    forecast = insights.forecast(connection=synced, now=now_for(emulator))
    budget_create(
        connection=synced,
        scope="connection",
        target="",
        target_label="",
        monthly_usd=(forecast.month_to_date + forecast.expected) / 2,
    )
    kinds = {alert.kind for alert in evaluate_alerts(connection=synced, now=now_for(emulator))}
    assert AlertKind.BUDGET_PROJECTED in kinds
    assert AlertKind.BUDGET_100 not in kinds


def test_workspace_and_key_budgets_measure_only_their_slice(synced, emulator):
    key = ApiKey.objects.filter(connection=synced).order_by("-usage_monthly").first()
    key_budget = budget_create(
        connection=synced,
        scope="key",
        target=key.key_hash,
        target_label=key.name,
        monthly_usd=Decimal(1000000),
    )
    whole_budget = budget_create(
        connection=synced, scope="connection", target="", target_label="", monthly_usd=Decimal(1000000)
    )
    statuses = {s.budget.pk: s for s in insights.budget_statuses(connection=synced, now=now_for(emulator))}
    assert 0 < statuses[key_budget.pk].spent < statuses[whole_budget.pk].spent
    # A key's month to date equals its own month counter (completed days by activity + today's partial).
    assert abs(statuses[key_budget.pk].spent - key.usage_monthly) <= Decimal("0.01")


def test_credit_low_and_runway_alerts(synced, emulator):
    credits = CreditsSnapshot.objects.get(connection=synced)
    CreditsSnapshot.objects.filter(pk=credits.pk).update(total_credits=credits.total_usage + Decimal(3))
    kinds = {alert.kind for alert in evaluate_alerts(connection=synced, now=now_for(emulator))}
    assert AlertKind.CREDIT_LOW in kinds
    assert AlertKind.CREDIT_RUNWAY in kinds
    # Topping up resolves them on the next evaluation.
    CreditsSnapshot.objects.filter(pk=credits.pk).update(total_credits=credits.total_usage + Decimal(100000))
    evaluate_alerts(connection=synced, now=now_for(emulator))
    assert not Alert.objects.filter(kind=AlertKind.CREDIT_LOW).exclude(state=AlertState.RESOLVED).exists()


def test_key_limit_almost_used(synced, emulator):
    key = ApiKey.objects.filter(connection=synced, disabled=False).first()
    ApiKey.objects.filter(pk=key.pk).update(limit=Decimal(100), limit_remaining=Decimal(4))
    alerts = [
        a for a in evaluate_alerts(connection=synced, now=now_for(emulator)) if a.kind == AlertKind.KEY_LIMIT
    ]
    assert [a.subject for a in alerts] == [key.key_hash]


def test_sync_failing_for_hours(synced, emulator):
    long_ago = timezone.now() - timedelta(hours=8)
    type(synced).objects.filter(pk=synced.pk).update(last_synced_at=long_ago - timedelta(hours=1))
    run = SyncRun.objects.create(
        company=synced.company, connection=synced, trigger="scheduled", status="failed"
    )
    SyncRun.objects.filter(pk=run.pk).update(started_at=long_ago)
    synced.refresh_from_db()
    kinds = {alert.kind for alert in evaluate_alerts(connection=synced)}
    assert AlertKind.SYNC_FAILING in kinds


def test_a_spend_spike_raises_an_anomaly_naming_key_model_day_and_size(synced, emulator):
    day = synced.complete_through
    key = ApiKey.objects.filter(connection=synced).order_by("-usage").first()
    row = UsageDaily.objects.filter(connection=synced, api_key_hash=key.key_hash, day=day).first()
    if row is None:
        row = UsageDaily.objects.filter(connection=synced, api_key_hash=key.key_hash).latest("day")
        UsageDaily.objects.filter(pk=row.pk).update(day=day)
    UsageDaily.objects.filter(pk=row.pk).update(spend_usd=Decimal(5000))
    usage_rows_edited(synced)

    anomalies = [
        a for a in evaluate_alerts(connection=synced, now=now_for(emulator)) if a.kind == AlertKind.ANOMALY
    ]

    subjects = {a.subject for a in anomalies}
    assert f"key:{key.key_hash}" in subjects
    assert f"model:{row.model_permaslug}" in subjects
    key_alert = next(a for a in anomalies if a.subject == f"key:{key.key_hash}")
    assert key.name in key_alert.title and f"{day:%d %b}" in key_alert.title
    assert "usual" in key_alert.message and Decimal(key_alert.detail["amount"]) >= 5000
    assert SyncEvent.objects.filter(kind="alert", code="alert_anomaly").exists()


def test_the_emulator_organization_raises_no_anomaly_by_itself(synced, emulator):
    raised = evaluate_alerts(connection=synced, now=now_for(emulator))
    assert not [a for a in raised if a.kind == AlertKind.ANOMALY]


def test_alert_rules_exist_by_default(synced, emulator):
    evaluate_alerts(connection=synced, now=now_for(emulator))
    kinds = set(AlertRule.objects.filter(connection=synced).values_list("kind", flat=True))
    assert {"credit_low", "credit_runway", "key_limit", "sync_failing", "anomaly", "new_spender"} <= kinds


# --- people


def test_keys_map_to_members_and_doow_users_and_manual_mappings_win(synced, emulator, acme, alice, fiona):
    member = Member.objects.filter(connection=synced).first()
    Member.objects.filter(pk=member.pk).update(email="fiona@acme.test")
    keys_of_member = list(ApiKey.objects.filter(connection=synced, creator_user_id=member.user_id))
    assert keys_of_member
    people = insights.key_people(connection=synced)
    assert people[keys_of_member[0].key_hash].user == fiona

    insights.key_owner_set(connection=synced, key_hash=keys_of_member[0].key_hash, user=alice, actor=alice)
    sync(synced, emulator)  # mappings survive syncs
    people = insights.key_people(connection=synced)
    assert people[keys_of_member[0].key_hash].user == alice
    assert people[keys_of_member[0].key_hash].source == "manual"
    assert KeyOwner.objects.count() == 1

    start, end = emulator.truth.activity_window()
    by_person = insights.spend_by_person(connection=synced, start=start, end=end)
    assert sum(entry["spend"] for entry in by_person) == sum(
        UsageDaily.objects.filter(connection=synced).values_list("spend_usd", flat=True)
    )
    assert any(entry["person"].label == "(deleted or unlisted keys)" for entry in by_person)


def test_owner_must_belong_to_the_company(synced, charlie):
    key = ApiKey.objects.filter(connection=synced).first()
    with pytest.raises(ValueError):
        insights.key_owner_set(connection=synced, key_hash=key.key_hash, user=charlie, actor=None)


# --- reconciliation


def test_reconciliation_explains_every_figure(synced, emulator):
    start, end = emulator.truth.activity_window()
    lines = insights.reconciliation(connection=synced, start=start, end=end, now=now_for(emulator))
    by_label = {line.label.split(" (")[0]: line for line in lines}
    account = by_label["OpenRouter account-wide activity"].amount
    keys = by_label["Sum over listed API keys"].amount
    remainder = by_label["Unattributed remainder"].amount
    assert account == emulator.truth.activity_total(start, end)
    assert keys + remainder == account
    assert remainder > 0
    assert not any(line.flagged for line in lines), [line.label for line in lines if line.flagged]


def test_reconciliation_flags_what_cannot_be_explained(synced, emulator):
    ApiKey.objects.filter(connection=synced).update(usage_monthly=Decimal(999999))
    start, end = emulator.truth.activity_window()
    lines = insights.reconciliation(connection=synced, start=start, end=end, now=now_for(emulator))
    assert any(line.flagged for line in lines)


def test_forecast_backtest_command_refuses_bad_arguments_clearly():
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="whole numbers separated by commas, not '1,x'"):
        call_command("forecast_backtest", "--seeds", "1,x")
    with pytest.raises(CommandError, match="--keys must be at least 1"):
        call_command("forecast_backtest", "--keys", "0")


def test_forecast_backtest_on_emulator_data():
    from openrouter.emulator import Emulator, EmulatorConfig
    from openrouter.management.commands.forecast_backtest import emulator_daily_spend
    from tests.support import TODAY

    emulator = Emulator(EmulatorConfig(seed=1, keys=60, days=120, today=TODAY))
    daily = emulator_daily_spend(emulator, TODAY - timedelta(days=119), TODAY - timedelta(days=1))
    result = backtest_month(daily=daily, year=2026, month=10)
    assert result.actual > 0
    assert result.mean_abs_pct_error < 0.25
    assert result.final_week_abs_pct_error < 0.1
