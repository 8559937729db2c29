"""usage_replace: a fetched slice replaces what was stored, never adds to it."""

from datetime import date
from decimal import Decimal

import pytest
from django.db import transaction
from django.db.models import Sum

from openrouter.normalize import UsageValues
from tests.support import connect, stored_total
from usage.models import UsageDaily, UsageDailyByKey
from usage.services import usage_prepare, usage_replace

pytestmark = pytest.mark.django_db
START, END = date(2026, 11, 1), date(2026, 11, 30)


@pytest.fixture(autouse=True, params=["insert", "upsert"])
def new_keys_path(request, monkeypatch):
    """Every test runs both ways new keys' rows go in: a plain insert (many rows), an upsert (few)."""
    from doow import bulk

    monkeypatch.setattr(bulk, "COPY_MIN_ROWS", 0 if request.param == "insert" else 10**9)


@pytest.fixture
def connection(acme, emulator):
    return connect(acme, emulator)


def rows(key_hash, *days_and_spend):
    return [
        ((day, "ws", key_hash, "perma", "prov"), UsageValues(model="m", requests=1, spend_usd=Decimal(spend)))
        for day, spend in days_and_spend
    ]


def replace(connection, key_rows, hashes, **kwargs):
    usage = usage_prepare(
        company_id=connection.company_id, connection_id=connection.pk, rows=key_rows, start=START, end=END
    )
    with transaction.atomic():
        return usage_replace(usage, api_key_hashes=hashes, **kwargs)


def test_a_refetched_slice_replaces_the_old_one_and_drops_vanished_rows(connection):
    replace(
        connection,
        rows("a", (date(2026, 11, 2), "1"), (date(2026, 11, 3), "2")) + rows("b", (date(2026, 11, 2), "5")),
        ["a", "b"],
    )

    written = replace(connection, rows("a", (date(2026, 11, 3), "2.5")), ["a"])

    assert written == 1
    assert stored_total(connection, api_key_hash="a") == Decimal("2.5")
    assert stored_total(connection, api_key_hash="b") == Decimal("5")


def test_rows_outside_the_window_are_neither_written_nor_deleted(connection):
    replace(
        connection,
        rows("a", (date(2026, 10, 31), "7")),
        ["a"],
    )
    assert not UsageDaily.objects.exists()
    UsageDaily.objects.create(
        company_id=connection.company_id,
        connection=connection,
        day=date(2026, 10, 31),
        api_key_hash="a",
        model="m",
        model_permaslug="perma",
        provider_name="prov",
        spend_usd=Decimal("7"),
    )
    replace(connection, rows("a", (date(2026, 11, 5), "1")), ["a"])
    assert stored_total(connection, api_key_hash="a") == Decimal("8")


def test_a_key_declared_new_is_still_overwritten_never_double_counted(connection):
    """Skipping the delete for never-fetched keys is an optimisation: if rows exist after all, the
    upsert overwrites them with the fetched values."""
    replace(connection, rows("a", (date(2026, 11, 2), "1")), ["a"])

    replace(connection, rows("a", (date(2026, 11, 2), "1")), ["a"], new_key_hashes={"a"})

    assert stored_total(connection, api_key_hash="a") == Decimal("1")
    assert UsageDaily.objects.filter(connection=connection).count() == 1


def by_key(connection, model, **filters) -> dict:
    """{(day, workspace, key): (requests, spend)} summed from `model`'s rows of the connection."""
    grouped = (
        model.objects.filter(connection=connection, **filters)
        .values_list("day", "workspace_id", "api_key_hash")
        .annotate(Sum("requests"), Sum("spend_usd"))
        .order_by()
    )
    return {(day, ws, key): (requests, spend) for day, ws, key, requests, spend in grouped}


def test_the_per_key_summary_follows_every_replaced_slice_without_a_rebuild(connection):
    """usage_replace keeps UsageDailyByKey itself: after each write it equals the rows summed over
    models and providers, for replaced, untouched, vanished and newly declared keys alike."""
    two_models = rows("a", (date(2026, 11, 2), "1")) + [
        (
            (date(2026, 11, 2), "ws", "a", "perma-2", "prov"),
            UsageValues(model="m2", requests=3, spend_usd=Decimal("0.5")),
        )
    ]
    replace(
        connection, two_models + rows("b", (date(2026, 11, 2), "5"), (date(2026, 11, 4), "6")), ["a", "b"]
    )
    assert by_key(connection, UsageDailyByKey) == by_key(connection, UsageDaily)
    assert by_key(connection, UsageDailyByKey)[date(2026, 11, 2), "ws", "a"] == (4, Decimal("1.5"))

    replace(connection, rows("b", (date(2026, 11, 4), "6.25")), ["b"])  # b's 2 Nov vanished
    replace(connection, rows("c", (date(2026, 11, 9), "2")), ["c"], new_key_hashes={"c"})
    replace(connection, [], [""])  # an empty unattributed slice

    assert by_key(connection, UsageDailyByKey) == by_key(connection, UsageDaily)
    assert (date(2026, 11, 2), "ws", "b") not in by_key(connection, UsageDailyByKey)
    assert UsageDailyByKey.objects.filter(connection=connection).count() == 3


def test_a_per_key_summary_row_left_behind_is_overwritten_never_added_to(connection):
    replace(connection, rows("a", (date(2026, 11, 2), "1")), ["a"])
    UsageDailyByKey.objects.filter(connection=connection).update(spend_usd=Decimal("99"))

    # Declared new, so nothing is deleted first: the summary's upsert still writes the true sum.
    replace(connection, rows("a", (date(2026, 11, 2), "1")), ["a"], new_key_hashes={"a"})

    assert by_key(connection, UsageDailyByKey) == {(date(2026, 11, 2), "ws", "a"): (1, Decimal("1"))}


def test_money_is_rounded_to_the_columns_scale_before_it_is_stored_or_summed(connection):
    """Half away from zero, as PostgreSQL rounds a numeric on input: the per-key sums made in Python
    equal the stored rows' sums on every database."""
    day = date(2026, 11, 2)
    spends = ["0.0000000000005", "0.0000000000004999", "-0.0000000000015", "1.23456789012345"]
    key_rows = [
        ((day, "ws", "a", f"perma-{i}", "prov"), UsageValues(model="m", requests=1, spend_usd=Decimal(spend)))
        for i, spend in enumerate(spends)
    ]
    replace(connection, key_rows, ["a"])

    stored = sorted(UsageDaily.objects.filter(connection=connection).values_list("spend_usd", flat=True))
    assert stored == sorted(Decimal(v) for v in ["0.000000000001", "0", "-0.000000000002", "1.234567890123"])
    assert by_key(connection, UsageDailyByKey) == by_key(connection, UsageDaily)
