"""A month's last day is only known after midnight: its budget alerts are raised in the new month."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.db.models import Sum

from openrouter.alerts import budget_create, evaluate_alerts
from openrouter.formatting import usd
from tests.support import synced_organization
from usage.models import Alert, AlertKind, AlertState, Budget, UsageDaily

pytestmark = pytest.mark.django_db

DEC_1 = date(2026, 12, 1)
DEC_1_MORNING = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


@pytest.fixture
def synced_on_december_1(acme, alice, fiona):
    """The first sync of December has just read 30 November, the last day of the month."""
    connection, _emulator = synced_organization(acme, DEC_1)
    assert connection.complete_through == date(2026, 11, 30)
    return connection


def spent(connection, first: date, last: date) -> Decimal:
    rows = UsageDaily.objects.filter(connection=connection, day__gte=first, day__lte=last)
    return rows.aggregate(total=Sum("spend_usd"))["total"] or Decimal(0)


def budget_crossed_on_the_last_day(connection) -> Decimal:
    """A budget, set in early November, that November stayed under until its last day, which took it
    over."""
    through_29 = spent(connection, date(2026, 11, 1), date(2026, 11, 29))
    november = spent(connection, date(2026, 11, 1), date(2026, 11, 30))
    assert november > through_29 > 0
    amount = ((through_29 + november) / 2).quantize(Decimal("0.01"))
    budget = budget_create(
        connection=connection, scope="connection", target="", target_label="", monthly_usd=amount
    )
    Budget.objects.filter(pk=budget.pk).update(created_at=datetime(2026, 11, 1, 9, 0, tzinfo=UTC))
    return november


def test_an_overrun_on_the_months_last_day_is_alerted_once_that_day_is_read(synced_on_december_1):
    connection = synced_on_december_1
    november = budget_crossed_on_the_last_day(connection)

    raised = evaluate_alerts(connection=connection, now=DEC_1_MORNING)

    reached = [a for a in raised if a.kind == AlertKind.BUDGET_100]
    budget = Decimal(reached[0].detail["budget"])
    assert [(a.period, a.title) for a in reached] == [
        ("2026-11", f"Whole connection: monthly budget of {usd(budget)} reached in November 2026")
    ]
    assert reached[0].message == f"Spent {usd(november)} in November 2026, over the {usd(budget)} budget."
    assert Decimal(reached[0].detail["spent"]) == november
    november_kinds = {a.kind for a in raised if a.period == "2026-11"}
    # A month that has ended is not projected: its figure is final; "reached" supersedes its 80%.
    assert november_kinds == {AlertKind.BUDGET_100}


def test_the_ended_months_alert_is_raised_once_and_resolves_when_the_month_is_closed(synced_on_december_1):
    connection = synced_on_december_1
    budget_crossed_on_the_last_day(connection)
    evaluate_alerts(connection=connection, now=DEC_1_MORNING)

    again = evaluate_alerts(connection=connection, now=datetime(2026, 12, 3, 6, 0, tzinfo=UTC))
    november = Alert.objects.get(connection=connection, kind=AlertKind.BUDGET_100, period="2026-11")
    assert again == [] and november.state == AlertState.OPEN

    evaluate_alerts(connection=connection, now=datetime(2026, 12, 9, 6, 0, tzinfo=UTC))
    november.refresh_from_db()
    assert november.state == AlertState.RESOLVED


def test_a_budget_set_after_the_month_ended_raises_nothing_for_that_month(synced_on_december_1):
    connection = synced_on_december_1
    november = spent(connection, date(2026, 11, 1), date(2026, 11, 30))
    budget = budget_create(
        connection=connection,
        scope="connection",
        target="",
        target_label="",
        monthly_usd=(november / 4).quantize(Decimal("0.01")),
    )
    Budget.objects.filter(pk=budget.pk).update(created_at=DEC_1_MORNING)

    raised = evaluate_alerts(connection=connection, now=DEC_1_MORNING)

    assert not [a for a in raised if a.period == "2026-11"]


def test_the_ended_month_is_checked_against_its_own_budget_after_the_amount_changed(synced_on_december_1):
    """The admin raises the budget for December on its first morning: November overran the amount it
    had, and is still told so."""
    connection = synced_on_december_1
    november = budget_crossed_on_the_last_day(connection)
    budget = Budget.objects.get(connection=connection)
    november_amount = budget.monthly_usd
    for raised_to in (november * 10, november * 20):  # changed twice in December: November's stays
        budget_create(
            connection=connection,
            scope="connection",
            target="",
            target_label="",
            monthly_usd=raised_to.quantize(Decimal("0.01")),
            now=DEC_1_MORNING,
        )

    raised = evaluate_alerts(connection=connection, now=DEC_1_MORNING)

    reached = [a for a in raised if a.kind == AlertKind.BUDGET_100]
    assert [(a.period, Decimal(a.detail["budget"])) for a in reached] == [("2026-11", november_amount)]
    assert usd(november_amount) in reached[0].title
    budget.refresh_from_db()
    assert budget.monthly_usd == (november * 20).quantize(Decimal("0.01"))
    assert (budget.previous_monthly_usd, budget.monthly_usd_since) == (november_amount, DEC_1)
