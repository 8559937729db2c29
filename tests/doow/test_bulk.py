"""doow.bulk: the batch upsert and update every sync write goes through, on each database."""

from datetime import date
from decimal import Decimal

import pytest

from doow import bulk
from openrouter.models import ApiKey
from tests.support import connect
from usage.models import UsageDaily
from usage.services import NATURAL_KEY, VALUE_FIELDS

pytestmark = pytest.mark.django_db
DAY = date(2026, 11, 1)


@pytest.fixture(autouse=True, params=["copy", "json"])
def upsert_path(request, monkeypatch):
    """Every test runs through both PostgreSQL paths: COPY + staging table, and the rows as JSON."""
    monkeypatch.setattr(bulk, "COPY_MIN_ROWS", 0 if request.param == "copy" else 10**9)


@pytest.fixture
def connection(acme, emulator):
    return connect(acme, emulator)


def usage_row(connection, key_hash, spend, *, model="m", requests=1):
    return (
        connection.company_id,
        connection.pk,
        DAY,
        "ws",
        key_hash,
        "m-perma",
        "prov",
        model,
        requests,
        10,
        5,
        0,
        0,
        Decimal(spend),
        Decimal(0),
    )


def upsert_usage(connection, rows):
    return bulk.upsert(
        UsageDaily,
        ("company_id", *NATURAL_KEY, *VALUE_FIELDS),
        rows,
        unique_fields=NATURAL_KEY,
        update_fields=("company_id", *VALUE_FIELDS),
    )


def test_upsert_inserts_then_overwrites_never_adds(connection):
    assert (
        upsert_usage(connection, [usage_row(connection, "a", "1.25"), usage_row(connection, "b", "2")]) == 2
    )
    upsert_usage(connection, [usage_row(connection, "a", "0.000000000001", model="renamed", requests=7)])

    rows = {r.api_key_hash: r for r in UsageDaily.objects.filter(connection=connection)}
    assert set(rows) == {"a", "b"}
    assert rows["a"].spend_usd == Decimal("0.000000000001")
    assert (rows["a"].model, rows["a"].requests) == ("renamed", 7)
    assert rows["b"].spend_usd == Decimal("2")


def test_upsert_fills_unnamed_fields_with_model_defaults(connection):
    bulk.upsert(
        ApiKey,
        ("company_id", "connection_id", "key_hash", "name"),
        [(connection.company_id, connection.pk, "k1", "first")],
        unique_fields=("connection_id", "key_hash"),
        update_fields=("name",),
    )
    key = ApiKey.objects.get(connection=connection, key_hash="k1")
    assert (key.label, key.disabled, key.usage, key.limit, key.fetched_usage) == ("", False, 0, None, None)


def test_upserts_of_one_model_with_other_fields_each_write_their_own(connection):
    """The statements are worked out once per model and field names: another set of names, or of
    fields to update, gets statements of its own, never the first one's."""

    def upsert_key(fields, values, update_fields):
        bulk.upsert(
            ApiKey,
            ("company_id", "connection_id", "key_hash", *fields),
            [(connection.company_id, connection.pk, "k1", *values)],
            unique_fields=("connection_id", "key_hash"),
            update_fields=update_fields,
        )

    upsert_key(("name",), ("first",), ("name",))
    upsert_key(("name", "label"), ("second", "label one"), ("name", "label"))
    upsert_key(("label", "name"), ("label two", "third"), ("name",))  # the label is not updated
    upsert_key(("name",), ("fourth",), ("name",))

    key = ApiKey.objects.get(connection=connection, key_hash="k1")
    assert (key.name, key.label) == ("fourth", "label one")


def test_upsert_without_update_fields_keeps_existing_rows(connection):
    upsert_usage(connection, [usage_row(connection, "a", "1")])
    bulk.upsert(
        UsageDaily,
        ("company_id", *NATURAL_KEY, *VALUE_FIELDS),
        [usage_row(connection, "a", "9"), usage_row(connection, "c", "3")],
        unique_fields=NATURAL_KEY,
        update_fields=(),
    )
    spend = dict(UsageDaily.objects.filter(connection=connection).values_list("api_key_hash", "spend_usd"))
    assert spend == {"a": Decimal("1"), "c": Decimal("3")}


def test_upsert_is_all_or_nothing_inside_a_failed_transaction(connection):
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        upsert_usage(connection, [usage_row(connection, "a", "1")])
        UsageDaily.objects.create(
            **dict(
                zip(("company_id", *NATURAL_KEY, *VALUE_FIELDS), usage_row(connection, "a", "1"), strict=True)
            )
        )
    assert not UsageDaily.objects.filter(connection=connection).exists()


def insert_usage(connection, rows):
    return bulk.insert(UsageDaily, ("company_id", *NATURAL_KEY, *VALUE_FIELDS), rows)


def test_insert_writes_new_rows_with_model_defaults(connection):
    assert insert_usage(connection, [usage_row(connection, "a", "1.5"), usage_row(connection, "b", "2")]) == 2
    bulk.insert(
        ApiKey,
        ("company_id", "connection_id", "key_hash", "name"),
        [(connection.company_id, connection.pk, "k1", "k")],
    )

    spend = dict(UsageDaily.objects.filter(connection=connection).values_list("api_key_hash", "spend_usd"))
    assert spend == {"a": Decimal("1.5"), "b": Decimal("2")}
    key = ApiKey.objects.get(connection=connection, key_hash="k1")
    assert (key.label, key.disabled, key.usage, key.limit) == ("", False, 0, None)


def test_insert_of_a_taken_natural_key_raises_already_exists_and_the_savepoint_undoes_it(connection):
    from django.db import transaction

    insert_usage(connection, [usage_row(connection, "a", "1")])

    with pytest.raises(bulk.AlreadyExists), transaction.atomic():
        insert_usage(connection, [usage_row(connection, "b", "2"), usage_row(connection, "a", "9")])

    # Nothing of the failed call, the earlier row unchanged, and the transaction still usable.
    spend = dict(UsageDaily.objects.filter(connection=connection).values_list("api_key_hash", "spend_usd"))
    assert spend == {"a": Decimal("1")}


def test_insert_lets_other_integrity_errors_through(connection):
    from django.db import IntegrityError, transaction

    # A missing connection is not a taken natural key: the caller must not take it for one.
    with pytest.raises(IntegrityError) as raised, transaction.atomic():
        bulk.insert(
            ApiKey,
            ("company_id", "connection_id", "key_hash", "name"),
            [(connection.company_id, None, "k", "k")],
        )
    assert not isinstance(raised.value, bulk.AlreadyExists)


def test_update_sets_fields_by_natural_key_within_the_scope_only(connection, acme, emulator):
    from doow.models import Company

    other = connect(Company.objects.create(name="Other", slug="other"), emulator)
    for conn in (connection, other):
        bulk.upsert(
            ApiKey,
            ("company_id", "connection_id", "key_hash"),
            [(conn.company_id, conn.pk, "k1"), (conn.company_id, conn.pk, "k2")],
            unique_fields=("connection_id", "key_hash"),
            update_fields=(),
        )

    bulk.update(
        ApiKey,
        ("fetched_usage", "activity_fetched_through"),
        [("k1", Decimal("1.5"), DAY), ("k3", Decimal("9"), DAY)],
        match_fields=("key_hash",),
        scope={"connection_id": connection.pk},
    )

    marked = dict(ApiKey.objects.filter(fetched_usage__isnull=False).values_list("connection_id", "key_hash"))
    assert marked == {connection.pk: "k1"}
    assert ApiKey.objects.get(connection=connection, key_hash="k1").activity_fetched_through == DAY
    assert not ApiKey.objects.filter(key_hash="k3").exists()


def test_values_of_every_kind_come_back_exactly_as_written(connection):
    """Text with quotes, backslashes, JSON-looking or empty text and characters beyond ASCII; exact
    decimals; datetimes with an offset, dates, booleans and NULLs: written by an upsert and an
    update, read back unchanged (the JSON path sends each as its text)."""
    from datetime import UTC, datetime, timedelta, timezone

    names = ['O\'Brien "quoted" \\back\\slash', '{"name": [1, 2]}', "naïve 名前 🚀", "", "NULL", "tab\tend"]
    expires = datetime(2026, 11, 1, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5)))
    rows = [
        (connection.company_id, connection.pk, f"k{i}", name, i % 2 == 0, expires if i else None, Decimal("0.00000001") * i)
        for i, name in enumerate(names)
    ]  # fmt: skip
    fields = ("company_id", "connection_id", "key_hash", "name", "disabled", "expires_at", "limit")
    bulk.upsert(ApiKey, fields, rows, unique_fields=("connection_id", "key_hash"), update_fields=fields[3:])
    bulk.update(
        ApiKey,
        ("fetched_usage", "fetched_last_used_at", "activity_fetched_through"),
        [(f"k{i}", Decimal("1234.56789012"), expires, DAY) for i in range(len(names))],
        match_fields=("key_hash",),
        scope={"connection_id": connection.pk},
    )

    stored = {k.key_hash: k for k in ApiKey.objects.filter(connection=connection)}
    for i, name in enumerate(names):
        key = stored[f"k{i}"]
        assert (key.name, key.disabled, key.limit) == (name, i % 2 == 0, Decimal("0.00000001") * i)
        assert key.expires_at == (expires if i else None)
        assert key.expires_at is None or key.expires_at.astimezone(UTC) == datetime(
            2026, 11, 2, 4, 59, 59, 999999, tzinfo=UTC
        )
        assert (key.fetched_usage, key.fetched_last_used_at, key.activity_fetched_through) == (
            Decimal("1234.56789012"), expires, DAY
        )  # fmt: skip


def test_the_rows_sent_as_json_refuse_a_value_of_no_plain_type():
    with pytest.raises(TypeError, match="plain values"):
        bulk._json_rows([("k1", object())])
