"""Alert evaluation at scale: the spike and new-spender rules read the history of only the keys and
models that could fire on the day judged, and raise exactly what reading every series raised."""

import tracemalloc
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from unittest import mock

import pytest
from django.db import connection as db
from django.db import transaction
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integrations.models import Connection
from openrouter import alerts, insights
from openrouter.alerts import default_rules_ensure, evaluate_alerts
from openrouter.models import ApiKey
from tests.support import connect
from usage.anomalies import detect_spike, new_spenders
from usage.models import AlertKind, AlertRule, UsageDaily
from usage.services import usage_summaries_recompute

pytestmark = pytest.mark.django_db

DAY = date(2026, 11, 23)  # the day judged: the last complete one
NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
BY_NOUN = (("api_key_hash", "key"), ("model_permaslug", "model"))


def judged_on(connection: Connection, day: date = DAY) -> Connection:
    Connection.objects.filter(pk=connection.pk).update(complete_through=day)
    connection.refresh_from_db()
    return connection


# --- The pre-filter is no stricter than the rules: the same alerts with and without it ------------


def firings_reading_every_series(connection: Connection, day: date, z: Decimal, minimum: Decimal) -> set:
    """The two rules as evaluated before subjects were narrowed: every key's and model's 41-day
    series read, then trimmed to each rule's window."""
    full = {
        by: insights.key_series(connection=connection, start=day - timedelta(days=40), end=day, by=by)
        for by, _ in BY_NOUN
    }

    def series(by, days):
        start = day - timedelta(days=days - 1)
        trimmed = {subject: {d: v for d, v in s.items() if d >= start} for subject, s in full[by].items()}
        return {subject: s for subject, s in trimmed.items() if s}

    fired = set()
    for by, noun in BY_NOUN:
        for subject, s in series(by, 41).items():
            spike = detect_spike(subject=subject, series=s, day=day, z_threshold=z)
            if spike is not None:
                fired.add((f"{noun}:{subject}", str(spike.amount), str(spike.baseline), str(spike.score)))
    if any(d <= day - timedelta(days=7) for s in series("api_key_hash", 30).values() for d in s):
        for by, noun in BY_NOUN:
            for subject, amount in new_spenders(series_by_subject=series(by, 30), day=day, minimum=minimum):
                fired.add((f"new-{noun}:{subject}", str(amount)))
    return fired


def firings_evaluated(connection: Connection, day: date, z: Decimal, minimum: Decimal) -> set:
    rules = {rule.kind: rule for rule in AlertRule.objects.filter(connection=connection)}
    rules[AlertKind.ANOMALY].threshold = z
    rules[AlertKind.NEW_SPENDER].threshold = minimum
    reads = alerts._Reads(connection, NOW)
    assert reads.day == day
    fired = set()
    for firing in alerts._anomalies(rules[AlertKind.ANOMALY], reads):
        assert firing.period == day.isoformat()
        detail = firing.detail
        fired.add((firing.subject, detail["amount"], detail["baseline"], detail["score"]))
    for firing in alerts._new_spenders(rules[AlertKind.NEW_SPENDER], reads):
        assert firing.period == day.isoformat()
        fired.add((firing.subject, firing.detail["amount"]))
    return fired


# Amounts on either side of the rules' minimums (MIN_AMOUNT 1, the new-spender default 5), zero and
# negative ones (credits given back), and others.
BOUNDARIES = [
    Decimal(v) for v in ("0", "0.01", "0.999999", "1", "1.000001", "2.5", "4.999999", "5", "-1", "-0.5")
]
if db.vendor == "postgresql":
    OTHER = st.decimals(min_value=-50, max_value=Decimal(10**6), places=12)
else:  # SQLite sums as doubles: amounts it adds exactly to the column's 12 places
    OTHER = st.decimals(min_value=-50, max_value=1000, places=4)
AMOUNT = st.one_of(st.sampled_from(BOUNDARIES), OTHER)
# Days judged, in their windows (41 and 30 days), just outside them, and the partial day after.
OFFSETS = st.one_of(st.integers(min_value=0, max_value=45), st.sampled_from([0, 1, 7, 8, 29, 30, 40, 41, -1]))
KEYS = ["key-a", "key-b", "key-c", ""]  # "" = usage no listed key accounts for
MODELS = ["m/one", "m/two"]


@st.composite
def usage(draw):
    """Rows of a few keys and models over the days around the one judged; some subjects spend
    every day (a steady series, then maybe a spike on the day)."""
    rows = draw(
        st.dictionaries(
            st.tuples(OFFSETS, st.sampled_from(KEYS), st.sampled_from(MODELS), st.sampled_from(["p", "q"])),
            AMOUNT,
            max_size=40,
        )
    )
    for key, model in draw(st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(MODELS)), max_size=2)):
        usual = draw(st.sampled_from([Decimal("0.2"), Decimal(3), Decimal(20)]))
        for offset in range(1, draw(st.integers(min_value=10, max_value=41))):
            rows[offset, key, model, "steady"] = usual + Decimal(offset % 3) / 10
        rows[0, key, model, "steady"] = draw(AMOUNT) + draw(
            st.sampled_from([Decimal(0), usual * 3, usual * 10])
        )
    return rows


@pytest.fixture
def watched(acme, emulator):
    connection = judged_on(connect(acme, emulator))
    default_rules_ensure(connection=connection)
    return connection


@given(
    rows=usage(),
    summarized=st.booleans(),
    z=st.sampled_from([Decimal(6), Decimal("0.0001"), Decimal(2), Decimal(100)]),
    minimum=st.sampled_from(
        [Decimal(5), Decimal(0), Decimal("0.000001"), Decimal("0.5"), Decimal("4.999999")]
    ),
)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_narrowing_to_the_days_spenders_raises_the_same_alerts(watched, rows, summarized, z, minimum):
    with transaction.atomic():
        UsageDaily.objects.bulk_create(
            UsageDaily(
                company_id=watched.company_id,
                connection=watched,
                day=DAY - timedelta(days=offset),
                workspace_id="ws",
                api_key_hash=key,
                model=model,
                model_permaslug=model,
                provider_name=provider,
                spend_usd=amount,
            )
            for (offset, key, model, provider), amount in rows.items()
        )
        if summarized:
            usage_summaries_recompute(connection_id=watched.pk)
        watched.refresh_from_db()
        assert (watched.usage_summaries_stale_from is None) is summarized

        expected = firings_reading_every_series(watched, DAY, z, minimum)
        assert firings_evaluated(watched, DAY, z, minimum) == expected
        transaction.set_rollback(True)


def test_the_equivalence_check_sees_a_spike_and_a_new_spender(watched):
    """The property above compares something: on a plain case both rules fire."""
    for offset in range(1, 30):
        UsageDaily.objects.create(
            company_id=watched.company_id,
            connection=watched,
            day=DAY - timedelta(days=offset),
            api_key_hash="old",
            model="m",
            model_permaslug="m",
            spend_usd=Decimal(2),
        )
    UsageDaily.objects.create(
        company_id=watched.company_id, connection=watched, day=DAY, api_key_hash="old", model="m",
        model_permaslug="m", spend_usd=Decimal(50),
    )  # fmt: skip
    UsageDaily.objects.create(
        company_id=watched.company_id, connection=watched, day=DAY, api_key_hash="new", model="m2",
        model_permaslug="m2", spend_usd=Decimal(9),
    )  # fmt: skip
    fired = firings_evaluated(watched, DAY, Decimal(6), Decimal(5))
    assert fired == firings_reading_every_series(watched, DAY, Decimal(6), Decimal(5))
    assert {f[0] for f in fired} == {"key:old", "model:m", "new-key:new", "new-model:m2"}


# --- Memory and rows read stay flat with the number of keys when few spend on the day ----------


def with_key_history(company, emulator, n_keys: int, *, spending_on_the_day: int = 3) -> Connection:
    """n_keys keys that spent every day of the 40 before the day judged; a few of them (one with
    a spike) spent on the day itself. Summaries current, as after a sync: evaluation reads them."""
    connection = judged_on(connect(company, emulator))
    ApiKey.objects.bulk_create(
        [
            ApiKey(
                company_id=company.pk,
                connection=connection,
                key_hash=f"hash{k:08d}",
                name=f"Key {k}",
                sort_name=f"key {k:08d}",
                workspace_id="ws-0",
            )
            for k in range(n_keys)
        ],
        batch_size=500,
    )

    def row(k: int, d: int, spend: Decimal) -> UsageDaily:
        return UsageDaily(
            company_id=company.pk,
            connection=connection,
            day=DAY - timedelta(days=d),
            workspace_id="ws-0",
            api_key_hash=f"hash{k:08d}",
            model="m",
            model_permaslug="m",
            provider_name="p",
            spend_usd=spend,
            requests=1,
        )

    rows = [row(k, d, Decimal(1 + (k * 7 + d * 3) % 50)) for k in range(n_keys) for d in range(1, 41)]
    rows += [row(k, 0, Decimal(5000 if k == 0 else 20)) for k in range(spending_on_the_day)]
    UsageDaily.objects.bulk_create(rows, batch_size=5000)
    usage_summaries_recompute(connection_id=connection.pk)
    connection.refresh_from_db()
    return connection


def evaluated(connection: Connection) -> tuple[int, int, list]:
    """Peak Python memory and (subject, day) entries of series read by an evaluation after the first
    (which made the default rules and raised what there was to raise), and what the first raised."""
    raised = evaluate_alerts(connection=connection, now=NOW)
    read = []
    real = insights.key_series

    def key_series(**kwargs):
        series = real(**kwargs)
        read.append(sum(len(s) for s in series.values()))
        return series

    with mock.patch.object(insights, "key_series", key_series):
        tracemalloc.start()
        evaluate_alerts(connection=connection, now=NOW)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, sum(read), raised


def test_evaluation_memory_and_rows_read_do_not_grow_with_keys(acme, globex, emulator, settings):
    """Measured before the fix: peak 3.7 MB at 200 keys, 38 MB at 2,000 (every key's 41 days read)."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    small_peak, small_read, small_raised = evaluated(with_key_history(acme, emulator, 200))
    large_peak, large_read, large_raised = evaluated(with_key_history(globex, emulator, 2000))

    assert {a.subject for a in large_raised if a.kind == AlertKind.ANOMALY} == {"key:hash00000000"}
    assert {a.subject for a in small_raised if a.kind == AlertKind.ANOMALY} == {"key:hash00000000"}
    assert large_read == small_read, (small_read, large_read)
    assert large_peak < 2 * small_peak, (
        f"peak {small_peak / 1e6:.1f} MB at 200 keys, {large_peak / 1e6:.1f} MB at 2,000"
    )


def test_series_are_read_in_bounded_batches(acme, emulator, monkeypatch):
    """Even when every key spends on the day (the work is then inherent), no query reads more than
    SERIES_BATCH keys' history at once, and the spike is still found."""
    monkeypatch.setattr(alerts, "SERIES_BATCH", 7)
    connection = with_key_history(acme, emulator, 30, spending_on_the_day=30)
    with mock.patch.object(insights, "key_series", wraps=insights.key_series) as key_series:
        raised = evaluate_alerts(connection=connection, now=NOW)
    batches = [call.kwargs["subjects"] for call in key_series.call_args_list]
    assert batches and max(len(batch) for batch in batches) == 7
    assert "key:hash00000000" in {a.subject for a in raised if a.kind == AlertKind.ANOMALY}


def test_the_days_spenders_are_found_by_the_connection_and_day_index(acme, emulator):
    """The per-key summary is indexed by key first: finding one day's spenders in it reads every row
    of the connection (a sequential scan on PostgreSQL, 305 ms at 3.6M rows against 0.4 ms by
    usage_conn_day_idx). The usage rows' per key and day sums are the summary's."""
    connection = with_key_history(acme, emulator, 10)
    evaluate_alerts(connection=connection, now=NOW)
    with CaptureQueriesContext(db) as captured:
        evaluate_alerts(connection=connection, now=NOW)
    by_day = [q["sql"] for q in captured.captured_queries if "HAVING" in q["sql"] or "LIMIT 1" in q["sql"]]
    assert any("usage_usagedaily" in sql for sql in by_day)
    assert not [sql for sql in by_day if "usage_usagedailybykey" in sql]
