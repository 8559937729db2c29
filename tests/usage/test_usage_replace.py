"""usage_replace: a fetched slice replaces what was stored, never adds to it."""

from datetime import date
from decimal import Decimal

import pytest
from django.db import transaction

from openrouter.normalize import UsageValues
from tests.support import connect, stored_total
from usage.models import UsageDaily
from usage.services import usage_replace

pytestmark = pytest.mark.django_db
START, END = date(2026, 11, 1), date(2026, 11, 30)


@pytest.fixture
def connection(acme, emulator):
    return connect(acme, emulator)


def rows(key_hash, *days_and_spend):
    return [
        ((day, "ws", key_hash, "perma", "prov"), UsageValues(model="m", requests=1, spend_usd=Decimal(spend)))
        for day, spend in days_and_spend
    ]


def replace(connection, key_rows, hashes, **kwargs):
    with transaction.atomic():
        return usage_replace(
            company_id=connection.company_id,
            connection_id=connection.pk,
            rows=key_rows,
            start=START,
            end=END,
            api_key_hashes=hashes,
            **kwargs,
        )


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
