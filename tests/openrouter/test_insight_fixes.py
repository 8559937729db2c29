"""Month to date across midnight, deleted keys' forecasts, reconciliation over short ranges, alert
rule thresholds, one row per person, budgets in bounded queries, negative baselines."""

import threading
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from django.contrib.messages import get_messages
from django.core.cache import cache
from django.db import connection as db
from django.db.models import F, Sum
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from openrouter import insights
from openrouter.alerts import budget_create, default_rules_ensure, evaluate_alerts
from openrouter.models import ApiKey, ApiKeySnapshot, CreditsSnapshot, Member
from tests.conftest import client_for
from tests.support import (
    TODAY,
    connect,
    noon,
    sync,
    synced_organization,
    thread_with_own_connection,
    usage_rows_edited,
)
from usage.anomalies import detect_spike
from usage.forecast import month_end_forecast
from usage.models import AlertKind, AlertRule, UsageDaily

pytestmark = pytest.mark.django_db

NOV_30 = date(2026, 11, 30)
DEC_1_AFTER_MIDNIGHT = datetime(2026, 12, 1, 0, 30, tzinfo=UTC)


@pytest.fixture
def synced(acme, emulator, alice, fiona):
    connection = connect(acme, emulator)
    sync(connection, emulator)
    connection.refresh_from_db()
    return connection


@pytest.fixture
def synced_on_november_30(acme, alice, fiona):
    """The last sync of the month ran on 30 Nov; no sync has run in December yet."""
    return synced_organization(acme, NOV_30)[0]


def url(name, connection, *args):
    return reverse(f"openrouter:{name}", args=["acme", connection.pk, *args])


def listed(connection):
    return ApiKey.objects.filter(connection=connection, missing_since__isnull=True)


# --- Key counters read on an earlier day are not today's spend


def test_month_to_date_on_the_first_leaves_out_the_last_months_key_counters(synced_on_november_30):
    connection = synced_on_november_30
    key = listed(connection).first()
    ApiKey.objects.filter(pk=key.pk).update(usage_daily=Decimal(40))  # a late sync on 30 Nov read $40
    november_partial = listed(connection).aggregate(total=Sum("usage_daily"))["total"]
    # Computed (and cached) on 30 Nov, when those counters were today's.
    assert insights.forecast(connection=connection, now=noon(NOV_30)).month_to_date > november_partial

    december = insights.forecast(connection=connection, now=DEC_1_AFTER_MIDNIGHT)

    assert december.month_to_date == 0
    assert insights.today_partial(connection=connection, now=DEC_1_AFTER_MIDNIGHT) == 0


def test_no_december_budget_alert_fires_on_novembers_key_counters(synced_on_november_30):
    connection = synced_on_november_30
    key = listed(connection).first()
    ApiKey.objects.filter(pk=key.pk).update(usage_daily=Decimal(40))
    november_partial = listed(connection).aggregate(total=Sum("usage_daily"))["total"]
    budget_create(
        connection=connection,
        scope="connection",
        target="",
        target_label="",
        monthly_usd=(november_partial * Decimal("1.1")).quantize(Decimal("0.01")),
    )

    raised = evaluate_alerts(connection=connection, now=DEC_1_AFTER_MIDNIGHT)

    # November's own alerts are raised now that its spend is final (test_month_end_alerts.py).
    december = [a for a in raised if a.period == "2026-12"]
    assert not [a.title for a in december if a.kind in (AlertKind.BUDGET_80, AlertKind.BUDGET_100)]


DEC_1 = date(2026, 12, 1)


@pytest.fixture
def synced_at_noon_on_december_1(acme, alice, fiona):
    """The last sync ran at noon on 1 Dec: it read every day through 30 Nov and 1 Dec's counters."""
    return synced_organization(acme, DEC_1)[0]


@pytest.mark.parametrize("by", [None, "workspace", "key"])
def test_the_day_that_just_ended_counts_in_the_month_until_its_activity_is_read(
    synced_at_noon_on_december_1, by
):
    """00:05 on 2 Dec, before the day's first sync: 1 Dec is in no activity row yet, and today's
    counters are not read yet. Its spend as the last sync of 1 Dec read it still counts."""
    connection = synced_at_noon_on_december_1
    assert connection.complete_through == NOV_30
    after_midnight = datetime(2026, 12, 2, 0, 5, tzinfo=UTC)
    read_on_dec_1 = ApiKeySnapshot.objects.filter(connection=connection, day=DEC_1)
    keys = {k.key_hash: k.workspace_id for k in ApiKey.objects.filter(connection=connection)}
    spent = defaultdict(Decimal)
    for snapshot in read_on_dec_1:
        target = {None: "", "workspace": keys[snapshot.key_hash], "key": snapshot.key_hash}[by]
        spent[target] += snapshot.usage_daily
    assert sum(spent.values()) > 0

    forecasts = insights.forecasts(connection=connection, by=by, targets=list(spent), now=after_midnight)

    cents = {target: amount.quantize(Decimal("0.01"), ROUND_HALF_UP) for target, amount in spent.items()}
    assert {target: f.month_to_date for target, f in forecasts.items()} == cents
    # Once a sync has read 1 Dec's activity, the rows replace the counters' figure.
    connection.complete_through = DEC_1
    UsageDaily.objects.create(
        company=connection.company, connection=connection, day=DEC_1, spend_usd=Decimal("1234.5")
    )
    usage_rows_edited(connection)
    whole = insights.forecasts(connection=connection, now=after_midnight)[""]
    assert whole.month_to_date == Decimal("1234.5")


def test_todays_partial_counts_only_the_keys_whose_counters_were_read_today(synced, emulator):
    now = noon(emulator.today)
    everything = insights.today_partial(connection=synced, now=now)
    assert everything == listed(synced).aggregate(total=Sum("usage_daily"))["total"] > 0
    # One key was last read yesterday (its page came before a failure, say): its counters are yesterday's.
    key = listed(synced).filter(usage_daily__gt=0).first()
    ApiKeySnapshot.objects.filter(connection=synced, key_hash=key.key_hash, day=emulator.today).update(
        day=emulator.today - timedelta(days=1)
    )
    type(synced).objects.filter(pk=synced.pk).update(data_version=F("data_version") + 1)
    synced.refresh_from_db()

    assert insights.today_partial(connection=synced, now=now) == everything - key.usage_daily


def test_the_connections_month_to_date_counts_every_keys_spend_today(synced, emulator):
    """The whole connection's forecast adds today's counters of every key read today, as its
    workspaces' and keys' forecasts and "Today so far" do (it once took one key's)."""
    now = noon(emulator.today)
    today = insights.today_partial(connection=synced, now=now)
    assert listed(synced).filter(usage_daily__gt=0).count() > 1
    completed = UsageDaily.objects.filter(
        connection=synced, day__gte=emulator.today.replace(day=1), day__lt=emulator.today
    ).aggregate(total=Sum("spend_usd"))["total"] or Decimal(0)

    whole = insights.forecast(connection=synced, now=now)
    workspaces = insights.forecasts(
        connection=synced,
        by="workspace",
        targets=listed(synced).values_list("workspace_id", flat=True),
        now=now,
    )

    assert whole.month_to_date == (completed + today).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    assert abs(sum(f.month_to_date for f in workspaces.values()) - whole.month_to_date) <= Decimal(
        "0.01"
    ) * len(workspaces)


def test_reconciliation_after_midnight_before_a_sync_does_not_compare_yesterdays_counters(
    synced_on_november_30,
):
    connection = synced_on_november_30
    lines = insights.reconciliation(
        connection=connection, start=date(2026, 11, 1), end=NOV_30, now=DEC_1_AFTER_MIDNIGHT
    )

    counters = next(line for line in lines if line.label.startswith("Key counters this month"))
    assert not counters.flagged
    assert counters.amount is None
    assert "last sync on 30 Nov 2026" in counters.explanation
    assert not [line.label for line in lines if line.flagged]


def test_reconciliation_compares_the_key_counters_read_today_and_says_which_were_left_out(synced, emulator):
    start, end = emulator.truth.activity_window()
    key = listed(synced).filter(usage_monthly__gt=0).first()
    ApiKeySnapshot.objects.filter(connection=synced, key_hash=key.key_hash, day=emulator.today).delete()
    lines = insights.reconciliation(connection=synced, start=start, end=end, now=noon(emulator.today))

    counters = next(line for line in lines if line.label.startswith("Key counters this month"))
    assert not counters.flagged
    assert counters.amount == listed(synced).exclude(pk=key.pk).aggregate(total=Sum("usage_monthly"))["total"]
    assert "1 listed key(s) not read today are left out" in counters.explanation


# --- A deleted key spends no more


def test_a_deleted_key_is_projected_to_end_the_month_at_its_month_to_date(synced, emulator):
    now = noon(emulator.today)
    key = listed(synced).order_by("-usage_monthly").first()
    assert insights.forecast(connection=synced, now=now, key=key.key_hash).daily_rate > 0
    ApiKey.objects.filter(pk=key.pk).update(missing_since=now - timedelta(hours=3))

    forecast = insights.forecast(connection=synced, now=now, key=key.key_hash)

    assert forecast.daily_rate == 0
    assert forecast.month_to_date > 0
    assert forecast.expected == forecast.low == forecast.high == forecast.month_to_date


def test_a_deleted_key_raises_no_projected_overrun_alert(synced, emulator):
    now = noon(emulator.today)
    key = listed(synced).order_by("-usage_monthly").first()
    ApiKey.objects.filter(pk=key.pk).update(missing_since=now - timedelta(hours=3))
    month_to_date = insights.forecast(connection=synced, now=now, key=key.key_hash).month_to_date
    budget_create(
        connection=synced,
        scope="key",
        target=key.key_hash,
        target_label=key.name,
        monthly_usd=month_to_date + Decimal("0.5"),
    )

    raised = evaluate_alerts(connection=synced, now=now)

    assert not [a.title for a in raised if a.kind == AlertKind.BUDGET_PROJECTED]


def test_a_workspace_whose_keys_were_all_deleted_is_projected_to_spend_nothing_more(synced, emulator):
    now = noon(emulator.today)
    workspace = listed(synced).exclude(workspace_id="").values_list("workspace_id", flat=True).first()
    assert insights.forecast(connection=synced, now=now, workspace=workspace).daily_rate > 0
    ApiKey.objects.filter(connection=synced, workspace_id=workspace).update(missing_since=now)

    forecast = insights.forecast(connection=synced, now=now, workspace=workspace)

    assert forecast.daily_rate == 0 and forecast.expected == forecast.month_to_date


def test_a_connection_keeps_its_run_rate_while_one_key_is_listed_and_ends_with_its_last(synced, emulator):
    now = noon(emulator.today)
    keep = listed(synced).order_by("key_hash").last()
    ApiKey.objects.filter(connection=synced).exclude(pk=keep.pk).update(missing_since=now)
    assert insights.forecast(connection=synced, now=now).daily_rate > 0

    ApiKey.objects.filter(pk=keep.pk).update(missing_since=now)
    forecast = insights.forecast(connection=synced, now=now)

    assert forecast.daily_rate == 0 and forecast.expected == forecast.month_to_date


# --- Credits drawn between snapshots against the activity of the same span


def hourly_credit_snapshots(connection, first_day: date, last_day: date) -> None:
    """One snapshot per hourly sync (at :05), total_usage growing evenly through each day: credits and
    activity tell the same story."""
    daily = dict(
        UsageDaily.objects.filter(connection=connection, day__gte=first_day, day__lte=last_day)
        .values("day")
        .annotate(total=Sum("spend_usd"))
        .values_list("day", "total")
        .order_by()
    )
    CreditsSnapshot.objects.filter(connection=connection).delete()
    day, cumulative = first_day, Decimal(1000)
    while day <= last_day:
        spend = daily.get(day, Decimal(0))
        for hour in range(24):
            CreditsSnapshot.objects.create(
                company_id=connection.company_id,
                connection=connection,
                taken_at=datetime.combine(day, time(hour, 5), tzinfo=UTC),
                total_credits=Decimal(1_000_000),
                total_usage=cumulative + spend * Decimal(hour * 60 + 5) / Decimal(1440),
            )
        cumulative += spend
        day += timedelta(days=1)


def credits_line(lines):
    return next(line for line in lines if line.label.startswith("Credits used between snapshots"))


@pytest.mark.parametrize("days", [1, 2, 3, 7])
def test_hourly_credit_snapshots_that_match_the_activity_are_not_flagged(synced, emulator, days):
    UsageDaily.objects.filter(connection=synced).update(spend_usd=F("spend_usd") * 100)  # ~$100 a day
    usage_rows_edited(synced)
    start, end = emulator.today - timedelta(days=days), emulator.today - timedelta(days=1)
    hourly_credit_snapshots(synced, start - timedelta(days=1), end)

    line = credits_line(
        insights.reconciliation(connection=synced, start=start, end=end, now=noon(emulator.today))
    )

    assert line.amount > 0
    assert not line.flagged, line.explanation
    assert "prorated" in line.explanation


def test_credits_drawn_well_beyond_the_activity_of_a_short_range_are_still_flagged(synced, emulator):
    UsageDaily.objects.filter(connection=synced).update(spend_usd=F("spend_usd") * 100)
    usage_rows_edited(synced)
    start, end = emulator.today - timedelta(days=2), emulator.today - timedelta(days=1)
    hourly_credit_snapshots(synced, start - timedelta(days=1), end)
    last = CreditsSnapshot.objects.filter(connection=synced).latest("taken_at")
    CreditsSnapshot.objects.filter(pk=last.pk).update(total_usage=last.total_usage + Decimal(100))

    line = credits_line(
        insights.reconciliation(connection=synced, start=start, end=end, now=noon(emulator.today))
    )

    assert line.flagged


# --- Alert rule thresholds are validated by kind


def rule_of(connection, kind):
    default_rules_ensure(connection=connection)
    return AlertRule.objects.get(connection=connection, kind=kind, budget__isnull=True)


@pytest.mark.parametrize(
    ("kind", "threshold"),
    [
        (AlertKind.KEY_LIMIT, "10"),
        (AlertKind.KEY_LIMIT, "0"),
        (AlertKind.CREDIT_RUNWAY, "0"),
        (AlertKind.SYNC_FAILING, "0"),
        (AlertKind.SYNC_FAILING, "10000"),
        (AlertKind.ANOMALY, "0"),
        (AlertKind.NEW_SPENDER, "-1"),
        (AlertKind.CREDIT_LOW, "-5"),
    ],
)
def test_an_out_of_range_alert_threshold_is_rejected_with_a_clear_error(fiona, synced, kind, threshold):
    rule = rule_of(synced, kind)
    before = rule.threshold

    response = client_for(fiona).post(
        url("alert-rule", synced, rule.pk),
        {"threshold": threshold, "notify_roles": ["admin"], "enabled": "on"},
    )

    rule.refresh_from_db()
    assert rule.threshold == before
    errors = [str(m) for m in get_messages(response.wsgi_request)]
    assert any("was not saved" in m and "out of range" in m for m in errors), errors


def test_a_key_limit_threshold_above_one_is_rejected(fiona, synced):
    rule = rule_of(synced, AlertKind.KEY_LIMIT)

    response = client_for(fiona).post(
        url("alert-rule", synced, rule.pk), {"threshold": "10", "notify_roles": ["admin"], "enabled": "on"}
    )

    rule.refresh_from_db()
    assert rule.threshold != Decimal(10)
    errors = [str(m) for m in get_messages(response.wsgi_request)]
    assert any("at most 1 (0.1 means 10%)" in m for m in errors), errors


@pytest.mark.parametrize(
    ("kind", "threshold"),
    [
        (AlertKind.KEY_LIMIT, "1"),
        (AlertKind.KEY_LIMIT, "0.05"),
        (AlertKind.CREDIT_RUNWAY, "3"),
        (AlertKind.SYNC_FAILING, "12"),
        (AlertKind.ANOMALY, "4.5"),
        (AlertKind.NEW_SPENDER, "0"),
        (AlertKind.CREDIT_LOW, "0"),
    ],
)
def test_an_alert_threshold_in_range_is_saved(fiona, synced, kind, threshold):
    rule = rule_of(synced, kind)

    client_for(fiona).post(url("alert-rule", synced, rule.pk), {"threshold": threshold, "enabled": "on"})

    rule.refresh_from_db()
    assert rule.threshold == Decimal(threshold)


def test_a_refused_alert_rule_keeps_what_was_typed_beside_the_error(fiona, synced):
    rule = rule_of(synced, AlertKind.CREDIT_LOW)
    client_for(fiona).post(url("alert-rule", synced, rule.pk), {"threshold": "10", "notify_roles": ["admin"]})

    response = client_for(fiona).post(
        url("alert-rule", synced, rule.pk), {"threshold": "12abc", "notify_roles": ["ops"], "enabled": "on"}
    )

    assert response.status_code == 200
    page = response.content.decode()
    row = next(r for r in page.split("<tr") if f'form="rule-{rule.pk}" name="threshold"' in r)
    assert 'value="12abc"' in row and 'aria-invalid="true"' in row
    assert 'value="ops" checked' in row and 'value="admin" checked' not in row
    assert 'name="enabled" checked' in row
    assert "Enter a number." in row and "was not saved" in page
    # Shown at the rule's address, the page's budget form still saves budgets.
    assert f'<form method="post" action="{url("budgets", synced)}"' in page
    rule.refresh_from_db()  # as the first post saved it
    assert (rule.enabled, rule.threshold, rule.notify_roles) == (False, Decimal(10), ["admin"])
    # The other rules show what is saved.
    other = rule_of(synced, AlertKind.CREDIT_RUNWAY)
    other_row = next(r for r in page.split("<tr") if f'form="rule-{other.pk}" name="threshold"' in r)
    assert "errorlist" not in other_row


def test_a_budget_for_an_unknown_scope_says_so(fiona, synced):
    response = client_for(fiona).post(url("budgets", synced), {"scope": "bogus", "monthly_usd": "77.50"})

    page = response.content.decode()
    assert "Select a valid choice" in page and 'value="77.50"' in page
    assert not synced.budgets.exists()


@pytest.mark.parametrize("user", [str(2**63), str(10**40)])
def test_a_key_owner_beyond_any_id_is_refused_clearly(alice, synced, user):
    key = ApiKey.objects.filter(connection=synced).first()

    response = client_for(alice).post(url("key-owner", synced), {"key_hash": key.key_hash, "user": user})

    assert response.status_code == 400
    assert "Pick the key's owner from the list of members." in response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_budgets_submitted_at_once_make_one_budget_and_no_error(fiona, synced):
    """On SQLite too, where a transaction that read before writing failed at once ("database is
    locked") when another wrote first: each waits its turn."""
    rule_of(synced, AlertKind.CREDIT_LOW)
    ready, statuses = threading.Barrier(4), []

    def submit():
        client = client_for(fiona)
        ready.wait()
        statuses.append(
            client.post(url("budgets", synced), {"scope": "connection", "monthly_usd": "10"}).status_code
        )

    threads = [thread_with_own_connection(submit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [302] * 4
    assert synced.budgets.count() == 1
    assert AlertRule.objects.filter(connection=synced, budget__isnull=False).count() == 3


# --- One row per person


def test_spend_by_person_gives_one_row_per_person_whatever_the_email_case(synced, emulator, alice, fiona):
    member = Member.objects.filter(connection=synced).first()
    Member.objects.filter(pk=member.pk).update(email="Fiona@Acme.test")  # OpenRouter keeps the case typed
    own = ApiKey.objects.filter(connection=synced, creator_user_id=member.user_id).first()
    other = ApiKey.objects.filter(connection=synced).exclude(creator_user_id=member.user_id).first()
    assert insights.key_people(connection=synced)[own.key_hash].user == fiona
    insights.key_owner_set(connection=synced, key_hash=other.key_hash, user=fiona, actor=alice)
    start, end = emulator.truth.activity_window()

    rows = insights.spend_by_person(connection=synced, start=start, end=end)

    fiona_rows = [row for row in rows if row["person"].user == fiona]
    assert len(fiona_rows) == 1
    fionas_keys = [k for k, person in insights.key_people(connection=synced).items() if person.user == fiona]
    spend = UsageDaily.objects.filter(
        connection=synced, api_key_hash__in=fionas_keys, day__gte=start, day__lte=end
    ).aggregate(total=Sum("spend_usd"))["total"]
    assert fiona_rows[0]["spend"] == spend
    assert fiona_rows[0]["person"].email == "fiona@acme.test"
    assert fiona_rows[0]["person"].source == "manual, member"
    assert (
        sum(row["spend"] for row in rows)
        == UsageDaily.objects.filter(connection=synced, day__gte=start, day__lte=end).aggregate(
            total=Sum("spend_usd")
        )["total"]
    )


def test_members_without_a_doow_user_are_merged_by_email_whatever_its_case(synced, emulator):
    first, second = Member.objects.filter(connection=synced)[:2]
    Member.objects.filter(pk=first.pk).update(email="Pat@Example.test")
    Member.objects.filter(pk=second.pk).update(email="pat@example.test")
    start, end = emulator.truth.activity_window()

    rows = insights.spend_by_person(connection=synced, start=start, end=end)

    assert len([row for row in rows if row["person"].email.lower() == "pat@example.test"]) == 1


# --- Budgets in a bounded number of queries


def key_budgets(connection, count):
    for key in ApiKey.objects.filter(connection=connection).order_by("key_hash")[:count]:
        budget_create(
            connection=connection,
            scope="key",
            target=key.key_hash,
            target_label=key.name,
            monthly_usd=Decimal(1000),
        )


def budgets_page_queries(client, connection) -> int:
    client.get(url("budgets", connection))  # default rules
    cache.clear()  # first view after a sync: nothing cached
    with CaptureQueriesContext(db) as queries:
        assert client.get(url("budgets", connection)).status_code == 200
    return len(queries)


def test_the_budgets_page_queries_do_not_grow_with_the_budgets(fiona, synced):
    client = client_for(fiona)
    key_budgets(synced, 2)
    few = budgets_page_queries(client, synced)
    key_budgets(synced, 22)
    workspace = listed(synced).exclude(workspace_id="").first()
    budget_create(
        connection=synced,
        scope="workspace",
        target=workspace.workspace_id,
        target_label="",
        monthly_usd=Decimal(10),
    )

    many = budgets_page_queries(client, synced)

    assert many - few <= 3, (few, many)


def test_each_budgets_status_is_its_own_forecast(synced, emulator):
    now = noon(emulator.today)
    key_budgets(synced, 5)
    deleted = ApiKey.objects.filter(connection=synced).order_by("key_hash").first()
    ApiKey.objects.filter(pk=deleted.pk).update(missing_since=now)
    workspace = listed(synced).exclude(workspace_id="").first().workspace_id
    budget_create(connection=synced, scope="workspace", target=workspace, target_label="", monthly_usd=10)
    budget_create(connection=synced, scope="connection", target="", target_label="", monthly_usd=100)

    statuses = insights.budget_statuses(connection=synced, now=now)

    assert len(statuses) == 7
    for status in statuses:
        cache.clear()
        own = insights.forecast(connection=synced, now=now, **insights._budget_filters(status.budget))
        assert status.forecast == own, status.budget


# --- Anomalies on a negative baseline


def test_a_negative_unattributed_baseline_makes_no_spike_of_a_few_cents():
    day = date(2026, 11, 23)
    series = {day - timedelta(days=offset): Decimal("-0.80") for offset in range(1, 29)}
    series[day] = Decimal("0.30")

    assert detect_spike(subject="", series=series, day=day) is None


def test_real_spend_on_a_negative_baseline_is_a_spike_without_a_meaningless_ratio():
    day = date(2026, 11, 23)
    series = {day - timedelta(days=offset): Decimal("-0.80") for offset in range(1, 29)}
    series[day] = Decimal(40)

    spike = detect_spike(subject="", series=series, day=day)

    assert spike is not None and spike.amount == 40
    assert spike.times_usual is None


# --- A normal key's connection: no daily activity, only the key's own counters


def test_a_normal_keys_forecast_reads_its_counters(acme, emulator, fiona):
    """A single-key connection has no usage rows (OpenRouter shows /activity only to a management
    key): its month to date is OpenRouter's month counter and its run-rate the daily counters the last
    sync of each day read (days no sync read left out). It once showed today's counter as the month
    and a run-rate of $0/day."""
    normal = connect(acme, emulator, secret=emulator.normal_key)
    for day in [TODAY - timedelta(days=offset) for offset in (3, 2, 1, 0)]:
        emulator.set_today(day)
        sync(normal, emulator)
    normal.refresh_from_db()
    snapshots = {s.day: s for s in ApiKeySnapshot.objects.filter(connection=normal)}
    assert len(snapshots) == 4 and snapshots[TODAY].usage_monthly > snapshots[TODAY].usage_daily

    today = insights.forecast(connection=normal, now=noon(TODAY))
    assert today.month_to_date == snapshots[TODAY].usage_monthly.quantize(Decimal("0.01"), ROUND_HALF_UP)
    completed = sum(snapshots[TODAY - timedelta(days=offset)].usage_daily for offset in (3, 2, 1))
    assert today.daily_rate == (completed / 3).quantize(Decimal("0.01"), ROUND_HALF_UP) > 0
    assert today.expected > today.month_to_date

    # The next morning, before a sync: the month counter as last read; on the 1st, a new month.
    tomorrow = insights.forecast(connection=normal, now=noon(TODAY + timedelta(days=1)))
    assert tomorrow.month_to_date == today.month_to_date
    assert insights.forecast(connection=normal, now=DEC_1_AFTER_MIDNIGHT).month_to_date == 0

    page = client_for(fiona).get(url("budgets", normal)).content.decode()
    assert "a normal key's figures come from its own counters" in page


def test_a_normal_key_connected_today_is_projected_from_its_month_so_far(acme, emulator):
    """No completed day has been read yet: the run-rate is OpenRouter's month counter over the days of
    the month so far, not $0/day; on the month's first day there is too little to go on."""
    normal = connect(acme, emulator, secret=emulator.normal_key)
    sync(normal, emulator)
    counter = ApiKeySnapshot.objects.get(connection=normal, day=TODAY)
    assert counter.usage_monthly > 0

    forecast = insights.forecast(connection=normal, now=noon(TODAY))
    elapsed = Decimal(TODAY.day - 1) + Decimal("0.5")  # noon
    assert (
        forecast.daily_rate == (counter.usage_monthly / elapsed).quantize(Decimal("0.01"), ROUND_HALF_UP) > 0
    )
    assert forecast.expected > forecast.month_to_date
    assert month_end_forecast(
        daily={},
        today=date(2026, 12, 1),
        day_fraction=0.5,
        month_to_date=Decimal(3),
        missing_days_unknown=True,
    ).daily_rate == Decimal(0)


def test_a_normal_keys_reconciliation_says_what_it_cannot_see_and_flags_nothing(acme, emulator):
    """OpenRouter shows /activity and /credits only to a management key: a normal key's reconciliation
    says so instead of showing $0.00 activity, and its month counter, with no daily activity to be
    compared with, is shown as OpenRouter's figure, not flagged as unexplained."""
    normal = connect(acme, emulator, secret=emulator.normal_key)
    sync(normal, emulator)
    normal.refresh_from_db()
    counter = ApiKeySnapshot.objects.get(connection=normal, day=emulator.today)
    assert counter.usage_monthly > counter.usage_daily  # a gap the activity of a management key would explain

    lines = {
        line.label: line
        for line in insights.reconciliation(
            connection=normal,
            start=emulator.today - timedelta(days=30),
            end=emulator.today - timedelta(days=1),
            now=noon(emulator.today),
        )
    }

    for label in (
        "OpenRouter account-wide activity",
        "Sum over listed API keys",
        "Credits used between snapshots",
    ):
        assert lines[label].amount is None and "only to a management key" in lines[label].explanation
    month = lines["Key counters this month (usage_monthly)"]
    assert month.amount == counter.usage_monthly and not month.flagged
    assert not any(line.flagged for line in lines.values())
