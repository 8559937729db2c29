"""Alert evaluation: raising again after clearing, hostile key names, failed emails, recipients,
thresholds of zero, alert history outliving budgets and rules, one rule per kind, bounded queries."""

import logging
from datetime import timedelta
from decimal import Decimal
from unittest import mock

import pytest
from django.core import mail
from django.core.cache import cache
from django.core.mail import BadHeaderError
from django.db import IntegrityError, transaction
from django.db import connection as db
from django.db.migrations.executor import MigrationExecutor
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from integrations.models import SyncEvent, SyncRun
from integrations.services import connection_disconnect
from openrouter import alerts, insights
from openrouter.alerts import budget_create, default_rules_ensure, evaluate_alerts
from openrouter.emulator import Fault
from openrouter.models import ApiKey, CreditsSnapshot
from tests.conftest import client_for
from tests.support import now_for, sync, usage_rows_edited
from usage.models import UNATTRIBUTED_LABEL, Alert, AlertKind, AlertRule, AlertState, Budget, UsageDaily

pytestmark = pytest.mark.django_db


@pytest.fixture
def synced(synced_with_people):
    return synced_with_people


def credits_left(connection, dollars) -> None:
    credits = CreditsSnapshot.objects.get(connection=connection)
    CreditsSnapshot.objects.filter(pk=credits.pk).update(total_credits=credits.total_usage + Decimal(dollars))


def credit_alert_handled_by(user, action: str, connection, emulator):
    """A low-credit alert raised at the emulator's noon, then acknowledged or resolved by `user`
    through the Alerts page. Returns the alert and when it was raised."""
    now = now_for(emulator)
    credits_left(connection, 3)
    evaluate_alerts(connection=connection, now=now)
    alert = Alert.objects.get(kind=AlertKind.CREDIT_LOW)
    client_for(user).post(reverse("usage:alert-update", args=["acme", alert.pk]), {"action": action})
    return alert, now


def credits_recover_then_run_low_again(connection, now) -> None:
    """The balance recovers (evaluated an hour later), then drops below the threshold again."""
    credits_left(connection, 1000)
    evaluate_alerts(connection=connection, now=now + timedelta(hours=1))
    credits_left(connection, 2)


def connection_budget(connection, monthly_usd):
    return budget_create(
        connection=connection, scope="connection", target="", target_label="", monthly_usd=monthly_usd
    )


def unresolved(**filters):
    return Alert.objects.filter(**filters).exclude(state=AlertState.RESOLVED)


# --- An alert that cleared is raised again when its condition holds again in the same period


def test_a_budget_alert_that_cleared_is_raised_and_emailed_again_when_spend_catches_up(synced, emulator):
    now = now_for(emulator)
    spent = insights.forecast(connection=synced, now=now).month_to_date
    connection_budget(synced, (spent / Decimal("0.85")).quantize(Decimal("0.01")))
    evaluate_alerts(connection=synced, now=now)
    assert unresolved(kind=AlertKind.BUDGET_80).count() == 1

    connection_budget(synced, (spent * 4).quantize(Decimal("0.01")))  # finance raises the budget
    evaluate_alerts(connection=synced, now=now)
    assert not unresolved(kind=AlertKind.BUDGET_80).exists()

    row = UsageDaily.objects.filter(connection=synced, day__gte=emulator.today.replace(day=1)).first()
    UsageDaily.objects.filter(pk=row.pk).update(spend_usd=row.spend_usd + spent * Decimal("2.5"))
    usage_rows_edited(synced)
    mail.outbox.clear()
    raised = evaluate_alerts(connection=synced, now=now)

    assert [a.kind for a in raised if a.kind == AlertKind.BUDGET_80] == [AlertKind.BUDGET_80]
    alert = Alert.objects.get(kind=AlertKind.BUDGET_80)
    assert alert.state == AlertState.OPEN
    assert f"${(spent * 4).quantize(Decimal('0.01'))}" in alert.title  # the new budget, not the old one
    assert [m.subject for m in mail.outbox if "80%" in m.subject] == [f"[Doow] {alert.title}"]


def test_a_budget_reached_closes_its_80_percent_alert_of_the_month_and_it_stays_closed(synced, emulator):
    """Both stayed open: the month's 80% alert beside its 100% one."""
    now = now_for(emulator)
    spent = insights.forecast(connection=synced, now=now).month_to_date
    budget = connection_budget(synced, (spent / Decimal("0.85")).quantize(Decimal("0.01")))
    evaluate_alerts(connection=synced, now=now)
    eighty = Alert.objects.get(kind=AlertKind.BUDGET_80)
    assert eighty.state == AlertState.OPEN

    row = UsageDaily.objects.filter(connection=synced, day__gte=emulator.today.replace(day=1)).first()
    UsageDaily.objects.filter(pk=row.pk).update(spend_usd=row.spend_usd + spent)  # past the budget
    usage_rows_edited(synced)
    raised = evaluate_alerts(connection=synced, now=now)

    assert [a.kind for a in raised if a.rule.budget_id] == [AlertKind.BUDGET_100]
    eighty.refresh_from_db()
    assert eighty.state == AlertState.RESOLVED
    assert eighty.detail["resolved_reason"] == "Superseded: the budget was reached in the same month."
    mail.outbox.clear()
    for hours in (1, 2):  # evaluated again after every sync: the 80% alert is not reopened
        raised = evaluate_alerts(connection=synced, now=now + timedelta(hours=hours))
        assert not [a for a in raised if a.rule.budget_id]
    assert [a.kind for a in unresolved(rule__budget=budget)] == [AlertKind.BUDGET_100]
    assert Alert.objects.get(pk=eighty.pk).state == AlertState.RESOLVED
    assert not [m for m in mail.outbox if "80%" in m.subject]


def test_a_budget_passed_at_once_raises_only_its_100_percent_alert(synced, emulator):
    now = now_for(emulator)
    spent = insights.forecast(connection=synced, now=now).month_to_date
    connection_budget(synced, (spent / 2).quantize(Decimal("0.01")))

    raised = evaluate_alerts(connection=synced, now=now)

    assert [a.kind for a in raised if a.rule.budget_id] == [AlertKind.BUDGET_100]
    assert not Alert.objects.filter(kind=AlertKind.BUDGET_80).exists()
    assert not [m for m in mail.outbox if "80%" in m.subject]


def test_the_80_percent_alert_stays_when_the_budget_reached_rule_is_off(synced, emulator):
    now = now_for(emulator)
    spent = insights.forecast(connection=synced, now=now).month_to_date
    budget = connection_budget(synced, (spent / 2).quantize(Decimal("0.01")))
    AlertRule.objects.filter(budget=budget, kind=AlertKind.BUDGET_100).update(enabled=False)

    evaluate_alerts(connection=synced, now=now)

    assert [a.kind for a in unresolved(rule__budget=budget)] == [AlertKind.BUDGET_80]


def test_credit_low_is_raised_again_when_the_balance_drops_again_the_same_day(synced, emulator):
    now = now_for(emulator)
    credits_left(synced, 3)
    evaluate_alerts(connection=synced, now=now)
    credits_left(synced, 1000)
    evaluate_alerts(connection=synced, now=now + timedelta(hours=1))
    assert not unresolved(kind=AlertKind.CREDIT_LOW).exists()
    credits_left(synced, 2)
    mail.outbox.clear()

    raised = evaluate_alerts(connection=synced, now=now + timedelta(hours=2))

    assert AlertKind.CREDIT_LOW in {a.kind for a in raised}
    assert unresolved(kind=AlertKind.CREDIT_LOW).count() == 1
    assert [m for m in mail.outbox if "Credit balance below" in m.subject]


def test_alert_titles_and_emails_show_money_to_the_cent(synced, emulator):
    default_rules_ensure(connection=synced)
    AlertRule.objects.filter(connection=synced, kind=AlertKind.CREDIT_LOW).update(threshold=Decimal("1000"))
    credits_left(synced, 3)

    evaluate_alerts(connection=synced, now=now_for(emulator))

    alert = Alert.objects.get(kind=AlertKind.CREDIT_LOW)
    assert alert.title == "Credit balance below $1,000.00"
    assert "OpenRouter credits remaining: $3.00" in alert.message
    assert [m for m in mail.outbox if m.subject.endswith("Credit balance below $1,000.00")]


def test_a_reopened_alert_is_open_unacknowledged_and_listed_as_newly_raised(synced, emulator, fiona):
    alert, now = credit_alert_handled_by(fiona, "acknowledge", synced, emulator)
    credits_recover_then_run_low_again(synced, now)
    later = now + timedelta(hours=2)

    evaluate_alerts(connection=synced, now=later)

    alert.refresh_from_db()
    assert alert.state == AlertState.OPEN
    assert (alert.acknowledged_by, alert.acknowledged_at, alert.resolved_at) == (None, None, None)
    assert alert.created_at == later  # the Alerts page sorts and dates alerts by created_at
    assert "$2.00" in alert.message
    assert SyncEvent.objects.filter(connection=synced, code="alert_credit_low").count() == 2


def test_an_open_or_acknowledged_alert_is_not_emailed_again(synced, emulator, fiona):
    now = now_for(emulator)
    credits_left(synced, 3)
    evaluate_alerts(connection=synced, now=now)
    evaluate_alerts(connection=synced, now=now + timedelta(hours=1))
    assert len([m for m in mail.outbox if "Credit balance below" in m.subject]) == 1
    alert = Alert.objects.get(kind=AlertKind.CREDIT_LOW)
    client_for(fiona).post(reverse("usage:alert-update", args=["acme", alert.pk]), {"action": "acknowledge"})
    mail.outbox.clear()

    assert evaluate_alerts(connection=synced, now=now + timedelta(hours=2)) == []

    assert not [m for m in mail.outbox if "Credit balance below" in m.subject]
    assert Alert.objects.get(pk=alert.pk).state == AlertState.ACKNOWLEDGED


def test_an_alert_resolved_by_hand_is_not_reopened_while_its_condition_still_holds(synced, emulator, fiona):
    alert, now = credit_alert_handled_by(fiona, "resolve", synced, emulator)
    mail.outbox.clear()

    raised = evaluate_alerts(connection=synced, now=now + timedelta(hours=1))  # the balance is still low

    assert AlertKind.CREDIT_LOW not in {a.kind for a in raised}
    alert.refresh_from_db()
    assert alert.state == AlertState.RESOLVED
    assert alert.detail["resolved_reason"] == "Resolved by fiona@acme.test."
    assert not [m for m in mail.outbox if "Credit balance below" in m.subject]


def test_an_alert_resolved_by_hand_is_raised_again_once_its_condition_cleared_and_holds_again(
    synced, emulator, fiona
):
    alert, now = credit_alert_handled_by(fiona, "resolve", synced, emulator)
    credits_recover_then_run_low_again(synced, now)

    raised = evaluate_alerts(connection=synced, now=now + timedelta(hours=2))

    assert AlertKind.CREDIT_LOW in {a.kind for a in raised}
    assert Alert.objects.get(pk=alert.pk).state == AlertState.OPEN


# --- Key names are set in OpenRouter by anyone holding a key


def test_a_key_name_with_a_newline_does_not_break_alert_evaluation(synced, emulator):
    now = now_for(emulator)
    evaluate_alerts(connection=synced, now=now)
    mail.outbox.clear()
    key = ApiKey.objects.filter(connection=synced, disabled=False, missing_since__isnull=True).first()
    ApiKey.objects.filter(pk=key.pk).update(
        name="prod\nBcc: attacker@evil.test", limit=Decimal(100), limit_remaining=Decimal(1)
    )
    credits_left(synced, 3)  # a second condition, judged after the key limit in the same evaluation

    evaluate_alerts(connection=synced, now=now)

    limit_alert = Alert.objects.get(kind=AlertKind.KEY_LIMIT)
    assert limit_alert.title == "Key prod Bcc: attacker@evil.test: limit almost used"
    assert limit_alert.emailed_to == ["alice@acme.test", "fiona@acme.test"]
    assert Alert.objects.get(kind=AlertKind.CREDIT_LOW).emailed_to
    recipients = {r for m in mail.outbox for r in [*m.to, *m.bcc]}
    assert "attacker@evil.test" not in recipients


def test_a_failed_alert_email_does_not_stop_the_other_alerts(synced, emulator, caplog):
    key = ApiKey.objects.filter(connection=synced, disabled=False, missing_since__isnull=True).first()
    ApiKey.objects.filter(pk=key.pk).update(limit=Decimal(100), limit_remaining=Decimal(1))
    credits_left(synced, 3)
    real_send_mail = mail.send_mail

    def send_mail(**kwargs):
        if "limit almost used" in kwargs["subject"]:
            raise BadHeaderError("refused")
        return real_send_mail(**kwargs)

    with mock.patch("openrouter.alerts.send_mail", side_effect=send_mail), caplog.at_level(logging.WARNING):
        kinds = {a.kind for a in evaluate_alerts(connection=synced, now=now_for(emulator))}

    assert {AlertKind.KEY_LIMIT, AlertKind.CREDIT_LOW} <= kinds
    limit_alert = Alert.objects.get(kind=AlertKind.KEY_LIMIT)
    assert limit_alert.emailed_to == []
    assert Alert.objects.get(kind=AlertKind.CREDIT_LOW).emailed_to
    assert f"alert {limit_alert.pk}" in caplog.text and "BadHeaderError" in caplog.text
    assert synced.secret not in caplog.text
    assert SyncEvent.objects.filter(connection=synced, code="alert_email_failed").count() == 1


def test_an_alert_whose_email_failed_is_emailed_on_the_next_evaluation_while_open(synced, emulator):
    now = now_for(emulator)
    credits_left(synced, 3)
    with mock.patch("openrouter.alerts.send_mail", side_effect=ConnectionRefusedError):
        evaluate_alerts(connection=synced, now=now)
    alert = Alert.objects.get(kind=AlertKind.CREDIT_LOW)
    assert alert.emailed_to == [] and not mail.outbox

    with mock.patch("openrouter.alerts.send_mail", side_effect=ConnectionRefusedError):
        evaluate_alerts(connection=synced, now=now + timedelta(hours=1))
    evaluate_alerts(connection=synced, now=now + timedelta(hours=2))
    evaluate_alerts(connection=synced, now=now + timedelta(hours=3))

    alert.refresh_from_db()
    assert alert.emailed_to == ["alice@acme.test", "fiona@acme.test"]
    assert len([m for m in mail.outbox if "Credit balance below" in m.subject]) == 1
    # The event log says so once, not after every failed retry.
    events = SyncEvent.objects.filter(connection=synced, code="alert_email_failed")
    assert [e.detail["alert"] for e in events].count(alert.pk) == 1


def test_an_acknowledged_alert_whose_email_failed_is_not_emailed_later(synced, emulator, fiona):
    now = now_for(emulator)
    credits_left(synced, 3)
    with mock.patch("openrouter.alerts.send_mail", side_effect=ConnectionRefusedError):
        evaluate_alerts(connection=synced, now=now)
    alert = Alert.objects.get(kind=AlertKind.CREDIT_LOW)
    client_for(fiona).post(reverse("usage:alert-update", args=["acme", alert.pk]), {"action": "acknowledge"})

    evaluate_alerts(connection=synced, now=now + timedelta(hours=1))

    assert not [m for m in mail.outbox if "Credit balance below" in m.subject]


# --- Recipients


def test_alert_emails_skip_deactivated_users(synced, emulator, fiona):
    type(fiona).objects.filter(pk=fiona.pk).update(is_active=False)
    connection_budget(synced, Decimal(1))

    evaluate_alerts(connection=synced, now=now_for(emulator))

    recipients = {r for m in mail.outbox for r in m.to}
    assert recipients == {"alice@acme.test"}
    assert Alert.objects.get(kind=AlertKind.BUDGET_100).emailed_to == ["alice@acme.test"]


# --- A threshold of zero means zero


def test_a_sync_failing_threshold_of_zero_hours_alerts_at_once(synced, emulator):
    evaluate_alerts(connection=synced)
    AlertRule.objects.filter(connection=synced, kind=AlertKind.SYNC_FAILING).update(threshold=Decimal(0))
    an_hour_ago = timezone.now() - timedelta(hours=1)
    type(synced).objects.filter(pk=synced.pk).update(last_synced_at=an_hour_ago - timedelta(hours=1))
    run = SyncRun.objects.create(
        company=synced.company, connection=synced, trigger="scheduled", status="failed"
    )
    SyncRun.objects.filter(pk=run.pk).update(started_at=an_hour_ago)
    synced.refresh_from_db()

    raised = [a for a in evaluate_alerts(connection=synced) if a.kind == AlertKind.SYNC_FAILING]

    assert [a.title for a in raised] == ["Sync failing for more than 0 hours"]


def test_a_new_spender_minimum_of_zero_is_not_replaced_by_five_dollars(synced, emulator):
    AlertRule.objects.filter(connection=synced, kind=AlertKind.NEW_SPENDER).delete()
    default_rules_ensure(connection=synced)
    AlertRule.objects.filter(connection=synced, kind=AlertKind.NEW_SPENDER).update(threshold=Decimal(0))
    rule = AlertRule.objects.get(connection=synced, kind=AlertKind.NEW_SPENDER)
    with mock.patch.object(alerts, "new_spenders", return_value=[]) as judged:
        list(alerts._new_spenders(rule, alerts._Reads(synced, now_for(emulator))))
    assert {call.kwargs["minimum"] for call in judged.call_args_list} == {Decimal(0)}


# --- Alert history outlives budgets and rules; no alert stays open with nothing watching it


def test_deleting_a_budget_keeps_its_alerts_and_resolves_the_open_ones(synced, emulator, fiona):
    # 80% used and projected to exceed: two alerts open (a budget reached would supersede the 80% one).
    now = now_for(emulator)
    spent = insights.forecast(connection=synced, now=now).month_to_date
    budget = connection_budget(synced, (spent / Decimal("0.85")).quantize(Decimal("0.01")))
    evaluate_alerts(connection=synced, now=now)
    kinds = [AlertKind.BUDGET_80, AlertKind.BUDGET_PROJECTED]
    titles = set(unresolved(kind__in=kinds).values_list("title", flat=True))
    assert len(titles) == 2

    client_for(fiona).post(reverse("openrouter:budget-delete", args=["acme", synced.pk, budget.pk]))

    assert not Budget.objects.exists()
    alerts = Alert.objects.filter(kind__in=kinds)
    assert set(alerts.values_list("title", flat=True)) == titles
    assert {(a.rule_id, a.state) for a in alerts} == {(None, AlertState.RESOLVED)}
    assert all(a.resolved_at and a.detail["resolved_reason"] == "Its budget was deleted." for a in alerts)
    page = client_for(fiona).get(reverse("usage:alerts", args=["acme"]) + "?state=all")
    assert page.status_code == 200
    for title in titles:
        assert title in page.content.decode()
    assert "Its budget was deleted." in page.content.decode()


def test_alerts_of_a_deleted_budget_stay_resolved_on_later_evaluations(synced, emulator, fiona):
    budget = connection_budget(synced, Decimal(1))
    evaluate_alerts(connection=synced, now=now_for(emulator))
    budget.delete()

    assert evaluate_alerts(connection=synced, now=now_for(emulator)) == []
    assert not unresolved(kind__in=[AlertKind.BUDGET_80, AlertKind.BUDGET_100]).exists()


def test_disabling_a_rule_resolves_its_open_alerts(synced, emulator):
    now = now_for(emulator)
    credits_left(synced, 3)
    evaluate_alerts(connection=synced, now=now)
    AlertRule.objects.filter(connection=synced, kind=AlertKind.CREDIT_LOW).update(enabled=False)

    evaluate_alerts(connection=synced, now=now + timedelta(hours=1))  # the balance is still low

    alert = Alert.objects.get(kind=AlertKind.CREDIT_LOW)
    assert alert.state == AlertState.RESOLVED
    assert alert.detail["resolved_reason"] == "Its alert rule was turned off."
    assert unresolved(kind=AlertKind.CREDIT_RUNWAY).exists()  # other rules' alerts are untouched


def test_evaluating_a_disconnected_connection_resolves_its_open_alerts(synced, emulator, fiona):
    now = now_for(emulator)
    credits_left(synced, 3)
    evaluate_alerts(connection=synced, now=now)
    acknowledged = Alert.objects.get(kind=AlertKind.CREDIT_RUNWAY)
    client_for(fiona).post(
        reverse("usage:alert-update", args=["acme", acknowledged.pk]), {"action": "acknowledge"}
    )
    connection_disconnect(connection=synced)
    rules = AlertRule.objects.count()

    assert evaluate_alerts(connection=synced, now=now + timedelta(days=5)) == []

    assert not unresolved(connection=synced).exists()
    reasons = {a.detail["resolved_reason"] for a in Alert.objects.filter(connection=synced)}
    assert reasons == {"The connection was disconnected."}
    assert AlertRule.objects.count() == rules


def test_disconnecting_resolves_the_connections_open_alerts_at_once(synced, emulator):
    """No sync evaluates a disconnected connection again: the disconnect itself closes its alerts."""
    credits_left(synced, 3)
    evaluate_alerts(connection=synced, now=now_for(emulator))
    assert unresolved(connection=synced).exists()

    connection_disconnect(connection=synced)

    assert not unresolved(connection=synced).exists()
    assert {a.detail["resolved_reason"] for a in Alert.objects.filter(connection=synced)} == {
        "The connection was disconnected."
    }


# --- One rule per kind (per connection, or per budget)


def test_concurrent_default_rule_creation_does_not_duplicate_rules_or_alerts(synced, emulator):
    """Two evaluations (the post-sync task and a budgets page) that both read "no rules yet"."""
    real_bulk_create = AlertRule.objects.bulk_create
    calls = []

    def interleaved(objs, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            default_rules_ensure(connection=synced)  # the other process, same snapshot of the rules
        return real_bulk_create(objs, *args, **kwargs)

    AlertRule.objects.filter(connection=synced).delete()
    with mock.patch.object(AlertRule.objects, "bulk_create", side_effect=interleaved):
        default_rules_ensure(connection=synced)
    credits_left(synced, 3)
    mail.outbox.clear()
    evaluate_alerts(connection=synced, now=now_for(emulator))

    assert AlertRule.objects.filter(connection=synced, kind=AlertKind.CREDIT_LOW).count() == 1
    assert len([m for m in mail.outbox if "Credit balance below" in m.subject]) == 1


def test_the_database_refuses_a_second_rule_of_a_kind(synced, emulator):
    default_rules_ensure(connection=synced)
    budget = connection_budget(synced, Decimal(100))
    fields = {"company_id": synced.company_id, "connection": synced}
    with pytest.raises(IntegrityError), transaction.atomic():
        AlertRule.objects.create(kind=AlertKind.CREDIT_LOW, **fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        AlertRule.objects.create(kind=AlertKind.BUDGET_80, budget=budget, **fields)
    other = budget_create(
        connection=synced, scope="workspace", target="ws", target_label="WS", monthly_usd=Decimal(5)
    )
    assert AlertRule.objects.filter(kind=AlertKind.BUDGET_80).count() == 2
    assert {r.budget for r in AlertRule.objects.filter(kind=AlertKind.BUDGET_80)} == {budget, other}


@pytest.mark.django_db(transaction=True)
def test_the_migration_merges_duplicate_rules_into_the_oldest(acme, emulator):
    before, after = ("usage", "0006_alert_rule_set_null"), ("usage", "0008_one_alert_rule_per_kind")
    executor = MigrationExecutor(db)
    executor.migrate([before])
    try:
        _merge_duplicate_rules(acme, executor, before, after)
    finally:
        # A transactional test leaves the schema as it ends: back to the latest migrations, or the
        # tests after it in this process meet the tables of 0008 (a sync failed on 0012's table).
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())


def _merge_duplicate_rules(acme, executor, before, after) -> None:
    apps = executor.loader.project_state([before]).apps
    Rule, OldAlert = apps.get_model("usage", "AlertRule"), apps.get_model("usage", "Alert")
    Connection = apps.get_model("integrations", "Connection")
    connection = Connection.objects.create(company_id=acme.pk, provider="openrouter", name="x")
    fields = {"company_id": acme.pk, "connection_id": connection.pk}
    oldest, twin, other = (
        Rule.objects.create(kind=k, **fields) for k in ("credit_low", "credit_low", "anomaly")
    )

    def alert(rule, period, state="open"):
        return OldAlert.objects.create(
            rule=rule, kind=rule.kind, period=period, state=state, title=period, **fields
        )

    kept = alert(oldest, "2026-11-20")
    duplicate = alert(twin, "2026-11-20")  # both raised for the same day: one was a duplicate
    moved = alert(twin, "2026-11-21", state="resolved")

    executor.loader.build_graph()
    executor.migrate([after])

    assert set(AlertRule.objects.values_list("pk", flat=True)) == {oldest.pk, other.pk}
    assert set(Alert.objects.values_list("pk", "rule_id")) == {(kept.pk, oldest.pk), (moved.pk, oldest.pk)}
    assert not Alert.objects.filter(pk=duplicate.pk).exists()


# --- Evaluation reads all budgets' spend in a bounded number of queries


def test_alert_evaluation_queries_do_not_grow_with_budgets(synced, emulator, django_assert_max_num_queries):
    now = now_for(emulator)
    keys = list(ApiKey.objects.filter(connection=synced).order_by("key_hash"))
    workspaces = sorted(set(ApiKey.objects.filter(connection=synced).values_list("workspace_id", flat=True)))

    def budgets_for(key_list, workspace_list):
        connection_budget(synced, Decimal(10**6))
        for key in key_list:
            budget_create(
                connection=synced, scope="key", target=key.key_hash, target_label=key.name, monthly_usd=10**6
            )
        for workspace in workspace_list:
            budget_create(
                connection=synced, scope="workspace", target=workspace, target_label="", monthly_usd=10**6
            )
        evaluate_alerts(connection=synced, now=now)  # raises what there is to raise
        cache.clear()

    budgets_for(keys[:1], workspaces[:1])
    with CaptureQueriesContext(db) as few:
        evaluate_alerts(connection=synced, now=now)
    budgets_for(keys[:22], workspaces)
    assert Budget.objects.count() >= 23

    with django_assert_max_num_queries(len(few)):
        evaluate_alerts(connection=synced, now=now)


# --- Alert emails link to where the alert is handled and to the figures behind it


def test_alert_emails_link_to_the_alerts_page_and_the_figures_behind_them(synced, emulator, settings):
    settings.DOOW_PUBLIC_URL = "https://doow.example.com"
    mail.outbox.clear()
    credits_left(synced, 3)
    connection_budget(synced, 1)
    evaluate_alerts(connection=synced, now=now_for(emulator))
    bodies = {m.subject: m.body for m in mail.outbox}
    credit = next(body for subject, body in bodies.items() if "Credit balance below" in subject)
    budget = next(body for subject, body in bodies.items() if "budget" in subject)
    alerts_link = "Acknowledge or resolve it: https://doow.example.com/c/acme/alerts/"
    assert alerts_link in credit and alerts_link in budget
    assert f"The figures: https://doow.example.com/c/acme/integrations/openrouter/{synced.pk}/\n" in credit
    assert (
        f"The budget and its forecast: https://doow.example.com/c/acme/integrations/openrouter/{synced.pk}/budgets/"
        in budget
    )


def test_an_alert_emailed_to_ops_too_says_whom_its_figures_open_for(synced, emulator, settings):
    settings.DOOW_PUBLIC_URL = "https://doow.example.com"
    default_rules_ensure(connection=synced)
    AlertRule.objects.filter(connection=synced, kind=AlertKind.CREDIT_LOW).update(
        notify_roles=["finance", "ops"]
    )
    mail.outbox.clear()
    credits_left(synced, 3)
    evaluate_alerts(connection=synced, now=now_for(emulator))
    (email,) = [m for m in mail.outbox if "Credit balance below" in m.subject]
    link = f"https://doow.example.com/c/acme/integrations/openrouter/{synced.pk}/"
    assert f"The figures (opens for Admin and Finance): {link}\n" in email.body


def test_without_a_public_url_alert_emails_carry_no_link(synced, emulator, settings):
    settings.DOOW_PUBLIC_URL = ""
    mail.outbox.clear()
    credits_left(synced, 3)
    evaluate_alerts(connection=synced, now=now_for(emulator))
    (email,) = [m for m in mail.outbox if "Credit balance below" in m.subject]
    assert "http" not in email.body and email.body.endswith(f"Connection: {synced.name}\n")


# --- A condition that holds from one day to the next is one alert (found by an alert audit)


@pytest.mark.parametrize("action", ["acknowledge", "resolve"])
def test_low_credits_that_stay_low_are_one_alert_whatever_finance_did_with_it(
    synced, emulator, fiona, action
):
    alert, now = credit_alert_handled_by(fiona, action, synced, emulator)
    mail.outbox.clear()

    for day in range(1, 4):  # the first syncs after each UTC midnight
        raised = evaluate_alerts(connection=synced, now=now + timedelta(days=day, minutes=5))
        assert AlertKind.CREDIT_LOW not in {a.kind for a in raised}

    assert list(Alert.objects.filter(kind=AlertKind.CREDIT_LOW).values_list("pk", flat=True)) == [alert.pk]
    assert not [m for m in mail.outbox if "Credit balance below" in m.subject]
    # Once the balance has recovered and dropped again, it is a new alert.
    credits_recover_then_run_low_again(synced, now + timedelta(days=4))
    raised = evaluate_alerts(connection=synced, now=now + timedelta(days=5))
    assert [a.kind for a in raised if a.kind == AlertKind.CREDIT_LOW] == [AlertKind.CREDIT_LOW]
    assert Alert.objects.filter(kind=AlertKind.CREDIT_LOW).count() == 2


def test_a_key_limit_almost_used_is_one_alert_until_it_clears(synced, emulator):
    now = now_for(emulator)
    key = ApiKey.objects.filter(connection=synced, disabled=False, missing_since__isnull=True).first()
    ApiKey.objects.filter(pk=key.pk).update(limit=Decimal(100), limit_remaining=Decimal(4), limit_reset="")
    evaluate_alerts(connection=synced, now=now)
    mail.outbox.clear()

    for day in range(1, 4):
        evaluate_alerts(connection=synced, now=now + timedelta(days=day))

    assert Alert.objects.filter(kind=AlertKind.KEY_LIMIT).count() == 1
    assert Alert.objects.get(kind=AlertKind.KEY_LIMIT).state == AlertState.OPEN
    assert not [m for m in mail.outbox if "limit" in m.subject]


def test_a_first_spend_of_usage_no_listed_key_accounts_for_is_named(synced, emulator):
    day = synced.complete_through
    UsageDaily.objects.filter(connection=synced, api_key_hash="", day__lt=day).delete()
    row = UsageDaily.objects.filter(connection=synced, day=day).exclude(api_key_hash="").first()
    UsageDaily.objects.create(
        company_id=synced.company_id,
        connection=synced,
        day=day,
        workspace_id=row.workspace_id,
        api_key_hash="",
        model=row.model,
        model_permaslug=row.model_permaslug,
        provider_name=row.provider_name,
        spend_usd=Decimal(25),
        requests=3,
    )
    usage_rows_edited(synced)

    evaluate_alerts(connection=synced, now=now_for(emulator))

    alert = Alert.objects.get(kind=AlertKind.NEW_SPENDER, subject="new-key:")
    assert alert.title.startswith(f"New key {UNATTRIBUTED_LABEL} spent $25.00")


def test_a_budget_alert_is_not_taken_for_cleared_while_no_sync_has_read_yesterday(synced, emulator):
    """After midnight, until a sync reads yesterday, the month to date lacks it: a failed sync's
    evaluation must neither resolve the 80% alert nor have the next good sync email it again."""
    now = now_for(emulator)
    spent = insights.forecast(connection=synced, now=now).month_to_date
    connection_budget(synced, (spent / Decimal("0.81")).quantize(Decimal("0.01")))
    evaluate_alerts(connection=synced, now=now)
    alert = Alert.objects.get(kind=AlertKind.BUDGET_80)
    mail.outbox.clear()

    emulator.set_today(emulator.today + timedelta(days=1))
    emulator.faults.add(Fault(path=None, status=500))  # OpenRouter is down at 00:30
    assert sync(synced, emulator).status in ("failed", "partial")
    synced.refresh_from_db()
    after_midnight = now + timedelta(hours=12, minutes=30)
    evaluate_alerts(connection=synced, now=after_midnight)
    assert Alert.objects.get(pk=alert.pk).state == AlertState.OPEN

    emulator.faults.clear()
    assert sync(synced, emulator).status == "succeeded"
    synced.refresh_from_db()
    evaluate_alerts(connection=synced, now=after_midnight + timedelta(hours=1))
    assert Alert.objects.get(pk=alert.pk).state == AlertState.OPEN
    assert not [m for m in mail.outbox if "80%" in m.subject]
