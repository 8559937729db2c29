"""Property: whatever sequence of fetched slices a connection's syncs write, the stored usage rows are
exactly the newest fetch of every (key, day) and the summaries the reports read add up to them, to
the last digit: no cent lost, none counted twice.

Hypothesis draws the slices (keys, unattributed usage included, days partly outside the window,
endpoints, amounts with more decimals than the columns keep, keys declared never fetched before) and
runs them through `usage_replace` both ways new keys' rows go in (plain insert and upsert); a plain
dictionary is the reference."""

from dataclasses import replace
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from django.db import connection as db
from django.db import transaction
from django.db.models import Sum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openrouter.normalize import UsageValues
from tests.support import connect
from usage.models import UsageDaily, UsageDailyByKey, UsageDailyByModel, UsageMonthlyByKey
from usage.selectors import METRICS, SUMMARY_DIMENSIONS, usage_by_key, usage_totals
from usage.services import MONEY_STEP, usage_prepare, usage_replace, usage_summaries_rebuild

pytestmark = pytest.mark.django_db

FIRST_DAY = date(2026, 10, 29)  # the days span two months: the monthly sums are split between them
DAYS = [FIRST_DAY + timedelta(days=offset) for offset in range(6)]
KEYS = ["a", "b", "c", ""]  # "" = usage of deleted or unlisted keys
WORKSPACES = ["ws-1", "ws-2"]
ENDPOINTS = [("m/one", "prov-x", "m-one"), ("m/one", "prov-y", "m-one"), ("m/two", "prov-x", "m-two")]
# PostgreSQL sums numerics exactly: amounts up to ten billion dollars, with more decimals than the
# columns keep (rounded half up on the way in). SQLite (the demo's database) sums them as doubles, exact
# to the column's scale for amounts of a few significant digits only.
if db.vendor == "postgresql":
    MONEY = st.decimals(min_value=0, max_value=Decimal(10**10), places=14)
else:
    MONEY = st.decimals(min_value=0, max_value=Decimal(1000), places=6)
COUNT = st.integers(min_value=0, max_value=10**12)

values = st.builds(
    lambda model, counts, spend, byok: UsageValues(model, *counts, spend_usd=spend, byok_spend_usd=byok),
    st.just(""),
    st.tuples(COUNT, COUNT, COUNT, COUNT, COUNT),
    MONEY,
    MONEY,
)


@st.composite
def fetches(draw):
    """One sync's write: the keys fetched, its window, and their rows (some outside the window)."""
    keys = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True))
    first = draw(st.integers(min_value=0, max_value=len(DAYS) - 1))
    last = draw(st.integers(min_value=first, max_value=len(DAYS) - 1))
    natural_keys = st.tuples(
        st.sampled_from([DAYS[0] - timedelta(days=1), *DAYS, DAYS[-1] + timedelta(days=1)]),
        st.sampled_from(WORKSPACES),
        st.sampled_from(keys),
        st.sampled_from(ENDPOINTS),
    )
    rows = draw(st.dictionaries(natural_keys, values, max_size=12))
    declared_new = draw(st.booleans())
    return keys, DAYS[first], DAYS[last], rows, declared_new


def money(amount: Decimal) -> Decimal:
    return amount.quantize(MONEY_STEP, ROUND_HALF_UP)


def write(connection, fetch, stored: dict) -> None:
    """The fetch through usage_replace, and the same fetch applied to the reference `stored`."""
    keys, start, end, rows, declared_new = fetch
    # Keys declared new are those never written, as a sync declares them (their fetch marker is empty).
    never_written = {key for key in keys if not any(k[3] == key for k in stored)}
    prepared_rows = [
        ((day, workspace, key, permaslug, provider), replace(value, model=model))
        for (day, workspace, key, (permaslug, provider, model)), value in rows.items()
    ]
    usage = usage_prepare(
        company_id=connection.company_id,
        connection_id=connection.pk,
        rows=prepared_rows,
        start=start,
        end=end,
    )
    with transaction.atomic():
        usage_replace(usage, api_key_hashes=keys, new_key_hashes=never_written if declared_new else ())
        usage_summaries_rebuild(connection_id=connection.pk)

    replaced = set(keys) | {key for (_day, _workspace, key, _endpoint) in rows}
    for natural_key in [k for k in stored if k[3] in replaced and start <= k[0] <= end]:
        del stored[natural_key]
    for (day, workspace, key, (permaslug, provider, model)), value in rows.items():
        if start <= day <= end:
            stored[day, workspace, permaslug, key, provider] = (
                model,
                value.requests,
                value.prompt_tokens,
                value.completion_tokens,
                value.reasoning_tokens,
                value.cached_tokens,
                money(value.spend_usd),
                money(value.byok_spend_usd),
            )


def stored_rows(connection) -> dict:
    rows = UsageDaily.objects.filter(connection=connection).values_list(
        "day", "workspace_id", "model_permaslug", "api_key_hash", "provider_name", "model", *METRICS
    )
    return {tuple(row[:5]): tuple(row[5:]) for row in rows}


def summed(model, connection, dimensions) -> dict:
    grouped = (
        model.objects.filter(connection=connection)
        .values_list(*dimensions)
        .annotate(*(Sum(metric) for metric in METRICS))
        .order_by()
    )
    return {tuple(row[: len(dimensions)]): tuple(row[len(dimensions) :]) for row in grouped}


@pytest.fixture(params=["insert", "upsert"])
def new_keys_path(request, monkeypatch):
    from doow import bulk

    monkeypatch.setattr(bulk, "COPY_MIN_ROWS", 0 if request.param == "insert" else 10**9)


@pytest.fixture
def connection(acme, emulator):
    return connect(acme, emulator)


@given(st.lists(fetches(), min_size=1, max_size=5))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_stored_rows_and_summaries_are_the_newest_fetch_of_every_key_and_day(
    connection, new_keys_path, writes
):
    for model in (UsageDaily, UsageDailyByKey, UsageDailyByModel, UsageMonthlyByKey):
        model.objects.filter(connection=connection).delete()  # each example starts from nothing
    stored: dict = {}
    for fetch in writes:
        write(connection, fetch, stored)

        assert stored_rows(connection) == stored
        for summary in (UsageDailyByKey, UsageDailyByModel):
            dimensions = SUMMARY_DIMENSIONS[summary]
            assert summed(summary, connection, dimensions) == summed(UsageDaily, connection, dimensions)
        connection.refresh_from_db()
        window = {"connection_ids": [connection.pk], "start": DAYS[0], "end": DAYS[-1]}
        assert usage_totals(summarized=True, **window) == usage_totals(summarized=False, **window)
        spend = sum((value[6] for value in stored.values()), Decimal(0))
        assert usage_totals(summarized=True, **window)["spend_usd"] == spend
        assert_monthly_sums_match(connection)


# Ranges read in every way usage_by_key reads them (usage.selectors.monthly_plan): whole months;
# ends partway through a month, whose days in the range are added to the whole months; a month
# less a few days that hold rows (Oct 31, Nov 1), taken away from its monthly sums; and within one
# month, from the daily rows alone.
RANGES = [
    (date(2026, 10, 1), date(2026, 10, 31)),
    (date(2026, 11, 1), date(2026, 11, 30)),
    (date(2026, 10, 1), date(2026, 11, 30)),
    (date(2026, 9, 30), date(2026, 11, 2)),
    (date(2026, 10, 30), date(2026, 12, 1)),
    (date(2026, 10, 29), date(2026, 11, 3)),
    (date(2026, 10, 1), date(2026, 10, 30)),
    (date(2026, 11, 2), date(2026, 11, 30)),
    (date(2026, 10, 2), date(2026, 11, 29)),
    (date(2026, 11, 1), date(2026, 11, 2)),
]


def assert_monthly_sums_match(connection) -> None:
    """The monthly per-key sums are the daily ones' by month, and the key table's sums read through
    them equal the usage rows' for every range, whole months or not."""
    daily = (
        UsageDailyByKey.objects.filter(connection=connection)
        .values_list("day", "workspace_id", "api_key_hash", *METRICS)
        .order_by()
    )
    by_month: dict = {}
    for day, workspace, key, *metrics in daily:
        natural_key = (day.replace(day=1), workspace, key)
        known = by_month.get(natural_key)
        values = (*metrics, 1)  # and the days with a row
        by_month[natural_key] = values if known is None else tuple(map(sum, zip(known, values)))
    stored = UsageMonthlyByKey.objects.filter(connection=connection).values_list(
        "month", "workspace_id", "api_key_hash", *METRICS, "days_with_rows"
    )
    assert {tuple(row[:3]): tuple(row[3:]) for row in stored} == by_month
    for start, end in RANGES:
        for filters in ({}, {"workspace": WORKSPACES[0]}, {"key": KEYS[0]}):
            answers = [
                sorted(
                    usage_by_key(
                        connection_id=connection.pk,
                        start=start,
                        end=end,
                        filters=filters,
                        summarized=summarized,
                    ),
                    key=lambda row: row["api_key_hash"],
                )
                for summarized in (True, False)
            ]
            assert answers[0] == answers[1], (start, end, filters)
