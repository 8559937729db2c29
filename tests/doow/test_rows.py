"""doow.rows.get_one: the lookups every request makes, read without the query compiler, must give
exactly what the ORM gives (on SQLite and on PostgreSQL, as the suite runs on both)."""

from datetime import UTC, date, datetime, timedelta

import pytest
from django.contrib.auth import SESSION_KEY
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from doow import rows
from doow.backends import ModelBackend
from doow.models import Membership, Session, User
from doow.sessions import SessionStore
from doow.tasks import clear_expired_sessions
from integrations.models import Connection
from tests.conftest import client_for


def field_values(instance) -> dict:
    return {field.attname: getattr(instance, field.attname) for field in type(instance)._meta.concrete_fields}


@pytest.fixture
def stored_connection(acme, alice) -> Connection:
    # Every kind of column a connection holds: JSON, text, dates, aware datetimes, big integers.
    return Connection.objects.create(
        company=acme,
        provider="openrouter",
        name="Prod — ☃ «OpenRouter»",
        config={"workspaces": ["a", "b"], "limit": 2.5, "nested": {"ok": True}},
        sync_progress={"phase": "keys", "done": 3},
        data_version=2**62,
        last_synced_at=datetime(2026, 11, 30, 23, 59, 59, 123456, tzinfo=UTC),
        complete_through=date(2026, 11, 29),
        created_by=alice,
    )


def test_a_row_read_holds_exactly_what_the_orm_reads(stored_connection, acme):
    read = rows.get_one(Connection, company_id=acme.pk, pk=stored_connection.pk)
    assert field_values(read) == field_values(Connection.objects.get(pk=stored_connection.pk))
    assert read.config == {"workspaces": ["a", "b"], "limit": 2.5, "nested": {"ok": True}}
    assert read.last_synced_at.tzinfo is not None
    assert read._state.adding is False and read._state.db == "default"
    # A loaded instance saves as an update of its row, like one the ORM loaded.
    read.name = "Renamed"
    read.save(update_fields=["name"])
    assert Connection.objects.get(pk=stored_connection.pk).name == "Renamed"


def test_a_row_of_another_company_or_no_row_reads_as_none(stored_connection, acme, globex):
    assert rows.get_one(Connection, company_id=globex.pk, pk=stored_connection.pk) is None
    assert rows.get_one(Connection, company_id=acme.pk, pk=stored_connection.pk + 1000) is None


@pytest.mark.parametrize("number", [2**31, 2**63, -(2**63) - 1, 10**30])
def test_a_number_no_column_can_hold_reads_as_no_row_not_an_error(stored_connection, acme, number):
    # A URL's <int:…> takes any number of digits; the ORM answers "no row", and so does get_one.
    assert rows.get_one(Connection, company_id=acme.pk, pk=number) is None
    assert rows.get_one(Connection, company_id=number, pk=stored_connection.pk) is None


def test_a_value_that_is_not_a_number_fails_as_it_does_in_the_orm(acme):
    with pytest.raises(ValueError, match="expected a number"):
        Connection.objects.filter(pk="abc").first()
    with pytest.raises(ValueError, match="expected a number"):
        rows.get_one(Connection, company_id=acme.pk, pk="abc")


def test_a_joined_row_is_read_in_the_same_statement_and_cached(alice, acme):
    with CaptureQueriesContext(db_connection) as queries:
        membership = rows.get_one(Membership, related="company", user_id=alice.pk, company__slug="acme")
        company = membership.company
    assert len(queries) == 1
    assert field_values(membership) == field_values(Membership.objects.get(user=alice, company=acme))
    assert field_values(company) == field_values(acme)
    assert rows.get_one(Membership, related="company", user_id=alice.pk, company__slug="globex") is None


def test_conditions_it_does_not_read_are_refused_rather_than_guessed(acme):
    with pytest.raises(ValueError, match="does not read"):
        rows.get_one(Connection, name__icontains="prod")
    with pytest.raises(ValueError, match="matches no row: use last_synced_at__isnull"):
        rows.get_one(Connection, company_id=acme.pk, last_synced_at=None)
    with pytest.raises(ValueError, match="not a foreign key"):
        rows.get_one(Connection, related="name", name="Prod")


def test_a_nullable_foreign_key_is_joined_left_and_a_row_without_one_caches_none(acme, alice):
    made = Connection.objects.create(company=acme, provider="openrouter", name="by alice", created_by=alice)
    orphan = Connection.objects.create(company=acme, provider="openrouter", name="by nobody")
    for connection in (made, orphan):
        with CaptureQueriesContext(db_connection) as queries:
            read = rows.get_one(Connection, related="created_by", pk=connection.pk)
            creator = read.created_by
        assert len(queries) == 1
        expected = Connection.objects.select_related("created_by").get(pk=connection.pk)
        assert field_values(read) == field_values(expected)
        if expected.created_by is None:
            assert creator is None
        else:
            assert field_values(creator) == field_values(expected.created_by)
    # A condition on the joined row finds only rows that have one, as the ORM's filter does.
    assert rows.get_one(Connection, related="created_by", pk=orphan.pk, created_by__email=alice.email) is None


def test_the_session_store_reads_a_live_session_and_not_an_expired_one(alice):
    store = SessionStore()
    store[SESSION_KEY] = str(alice.pk)
    store.create()
    key = store.session_key
    assert SessionStore(key).load() == {SESSION_KEY: str(alice.pk)}
    Session.objects.filter(session_key=key).update(expire_date=timezone.now() - timedelta(seconds=1))
    expired = SessionStore(key)
    assert expired.load() == {}
    assert expired.session_key is None  # a new session starts, as with Django's own store


def test_the_daily_task_drops_expired_sessions_and_keeps_live_ones(alice):
    live, expired = SessionStore(), SessionStore()
    for store in (live, expired):
        store[SESSION_KEY] = str(alice.pk)
        store.create()
    Session.objects.filter(session_key=expired.session_key).update(
        expire_date=timezone.now() - timedelta(seconds=1)
    )
    clear_expired_sessions.run()
    assert list(Session.objects.values_list("session_key", flat=True)) == [live.session_key]


def test_the_backend_reads_an_active_user_and_refuses_an_inactive_or_missing_one(alice):
    backend = ModelBackend()
    assert field_values(backend.get_user(str(alice.pk))) == field_values(User.objects.get(pk=alice.pk))
    assert backend.get_user(alice.pk + 1000) is None
    User.objects.filter(pk=alice.pk).update(is_active=False)
    assert backend.get_user(alice.pk) is None


def test_a_download_reads_its_session_user_membership_and_connection_in_two_statements(
    stored_connection, alice
):
    client = client_for(alice)
    url = reverse("openrouter:export", args=["acme", stored_connection.pk, "csv"])
    with CaptureQueriesContext(db_connection) as queries:
        response = client.get(url)
        assert response.status_code == 200
        assert b"".join(response.streaming_content).startswith(b"date,")
    statements = [query["sql"] for query in queries]
    reads = [sql for sql in statements if sql.startswith("SELECT")]
    # The user comes with the session, the connection with the membership and its company.
    joins = {
        "doow_session": ['LEFT JOIN "doow_user"'],
        "doow_membership": ['JOIN "doow_company"', 'LEFT JOIN "integrations_connection"'],
    }
    for table, joined in joins.items():
        found = [sql for sql in reads if f'FROM "{table}"' in sql]
        assert len(found) == 1, (table, found)
        assert all(join in found[0] for join in joined), found[0]
    for table in ("doow_user", "doow_company", "integrations_connection"):
        assert not [sql for sql in reads if f'FROM "{table}"' in sql], table


# --- update, delete and insert: the same rows changed as by the ORM


@pytest.fixture
def two_days_of_usage(stored_connection):
    from usage.models import UsageDaily

    made = []
    for day, key in ((date(2026, 11, 1), "k1"), (date(2026, 11, 1), "k2"), (date(2026, 11, 2), "k1")):
        made.append(
            UsageDaily.objects.create(
                company=stored_connection.company,
                connection=stored_connection,
                day=day,
                api_key_hash=key,
                model_permaslug="m",
                provider_name="p",
                requests=1,
            )
        )
    return made


def test_update_sets_every_kind_of_value_on_the_matching_rows_only(stored_connection, acme, globex):
    other = Connection.objects.create(company=globex, provider="openrouter", name="Other")
    when = datetime(2026, 12, 1, 8, 30, 15, 250000, tzinfo=UTC)
    changed = rows.update(
        Connection,
        {"pk": stored_connection.pk, "company_id": acme.pk},
        sync_progress={"phase": "keys", "done": 7, "name": "☃"},
        last_synced_at=when,
        complete_through=None,
        sync_lease_token="",
    )
    assert changed == 1
    stored = Connection.objects.get(pk=stored_connection.pk)
    assert stored.sync_progress == {"phase": "keys", "done": 7, "name": "☃"}
    assert stored.last_synced_at == when and stored.complete_through is None
    assert field_values(Connection.objects.get(pk=other.pk)) == field_values(other)
    assert rows.update(Connection, {"pk": stored_connection.pk, "company_id": globex.pk}, name="x") == 0


def test_update_and_delete_read_comparisons_lists_and_nulls_as_the_orm_does(
    two_days_of_usage, stored_connection
):
    from usage.models import UsageDaily

    def orm_ids(**conditions):
        return set(UsageDaily.objects.filter(**conditions).values_list("pk", flat=True))

    cases = [
        {"day__gte": date(2026, 11, 2)},
        {"day__gt": date(2026, 11, 1)},
        {"day__lt": date(2026, 11, 2)},
        {"day__lte": date(2026, 11, 1), "api_key_hash__in": ["k2", "nobody"]},
        {"api_key_hash": "k1", "day": date(2026, 11, 2)},
        {"workspace_id__isnull": False, "api_key_hash__in": ["k1"]},
    ]
    for conditions in cases:
        expected = orm_ids(connection_id=stored_connection.pk, **conditions)
        UsageDaily.objects.update(requests=1)
        changed = rows.update(UsageDaily, {"connection_id": stored_connection.pk, **conditions}, requests=5)
        assert changed == len(expected)
        assert orm_ids(requests=5) == expected, conditions
    assert (
        rows.delete(
            UsageDaily,
            connection_id=stored_connection.pk,
            api_key_hash__in=["k1"],
            day__gte=date(2026, 11, 2),
        )
        == 1
    )
    assert sorted(UsageDaily.objects.values_list("api_key_hash", "day")) == [
        ("k1", date(2026, 11, 1)),
        ("k2", date(2026, 11, 1)),
    ]


def test_an_empty_list_or_a_number_no_column_holds_matches_no_row_without_a_statement(two_days_of_usage):
    from usage.models import UsageDaily

    with CaptureQueriesContext(db_connection) as queries:
        assert rows.delete(UsageDaily, api_key_hash__in=[]) == 0
        assert rows.delete(UsageDaily, pk=2**63) == 0
        assert rows.update(UsageDaily, {"pk__in": [2**63, 10**30]}, requests=9) == 0
    assert len(queries) == 0
    assert UsageDaily.objects.count() == 3
    assert rows.delete(UsageDaily, pk__in=[two_days_of_usage[0].pk, 2**63]) == 1


def test_statements_it_cannot_make_safely_are_refused(stored_connection, acme):
    from usage.models import AlertRule, UsageDaily

    with pytest.raises(ValueError, match="does not read"):
        rows.update(Connection, {"name__icontains": "prod"}, name="x")
    with pytest.raises(ValueError, match="__isnull"):
        rows.update(Connection, {"pk": stored_connection.pk, "last_synced_at": None}, name="x")
    with pytest.raises(ValueError, match="needs a condition"):
        rows.delete(UsageDaily)
    with pytest.raises(ValueError, match="needs a value"):
        rows.update(Connection, {"pk": stored_connection.pk})
    # Rows refer to a connection (a delete would cascade), and a signal watches alert rules.
    with pytest.raises(ValueError, match="refer to Connection"):
        rows.delete(Connection, pk=stored_connection.pk)
    with pytest.raises(ValueError, match="delete signals"):
        rows.delete(AlertRule, company_id=acme.pk)
    assert Connection.objects.filter(pk=stored_connection.pk).exists()


def test_an_inserted_row_holds_what_create_would_have_stored(stored_connection):
    from integrations.models import SyncEvent, SyncRun

    before = timezone.now()
    run = rows.insert(
        SyncRun, company_id=stored_connection.company_id, connection=stored_connection, trigger="manual"
    )
    event = rows.insert(
        SyncEvent,
        company_id=stored_connection.company_id,
        connection=stored_connection,
        run=run,
        kind="sync",
        code="sync_started",
        message="Sync started — ☃",
        detail={"requests": 3, "nested": {"ok": True}},
    )
    assert run.pk and event.pk and event.run_id == run.pk
    assert run._state.adding is False and event._state.db == "default"
    assert field_values(SyncRun.objects.get(pk=run.pk)) == field_values(run)
    assert field_values(SyncEvent.objects.get(pk=event.pk)) == field_values(event)
    assert event.created_at >= before  # auto_now_add, as create() sets it
    assert run.status == "running" and run.attempt == 1  # the model's defaults
    expected = SyncRun.objects.create(
        company_id=stored_connection.company_id, connection=stored_connection, trigger="manual"
    )
    made, created = field_values(run), field_values(expected)
    for name in ("id", "started_at"):
        made.pop(name), created.pop(name)
    assert made == created


def test_rows_read_by_conditions_hold_exactly_what_the_orm_reads(stored_connection, acme, globex):
    from integrations.models import SyncRun

    other = Connection.objects.create(company=globex, provider="openrouter", name="Other")
    made = [
        SyncRun.objects.create(company=acme, connection=stored_connection, trigger="manual", status=status)
        for status in ("running", "running", "succeeded")
    ]
    SyncRun.objects.create(company=globex, connection=other, trigger="manual", status="running")
    read = rows.get_all(SyncRun, connection_id=stored_connection.pk, status="running")
    assert sorted(run.pk for run in read) == [made[0].pk, made[1].pk]
    for run in read:
        assert field_values(run) == field_values(SyncRun.objects.get(pk=run.pk))
        assert run.started_at.tzinfo is not None and run._state.adding is False
    assert rows.get_all(SyncRun, connection_id=stored_connection.pk, status__in=[]) == []
    assert rows.get_all(Connection, pk=2**63) == []


def test_values_read_by_conditions_are_exactly_what_the_orms_values_gives(stored_connection, acme):
    from decimal import Decimal

    from openrouter.models import ApiKey

    for number, used in ((1, Decimal("12.3456789")), (2, Decimal("0"))):
        ApiKey.objects.create(
            company=acme,
            connection=stored_connection,
            key_hash=f"hash-{number}",
            name=f"Key {number}",
            fetched_usage=used,
            fetched_last_used_at=datetime(2026, 11, 30, 8, 0, number, tzinfo=UTC) if number == 1 else None,
            activity_fetched_through=date(2026, 11, 29),
        )
    fields = (
        "fetched_usage",
        "fetched_byok_usage",
        "fetched_last_used_at",
        "key_hash",
        "activity_fetched_through",
    )
    conditions = {"connection_id": stored_connection.pk, "key_hash__in": ["hash-1", "hash-2", "nobody"]}
    read = rows.get_values(ApiKey, fields, **conditions)
    expected = list(ApiKey.objects.filter(**conditions).values(*fields))
    assert sorted(read, key=lambda row: row["key_hash"]) == sorted(expected, key=lambda row: row["key_hash"])
    assert len(read) == 2 and isinstance(read[0]["fetched_usage"], Decimal)


def test_not_equal_changes_the_rows_exclude_leaves_and_is_refused_where_null_would_split_them(
    two_days_of_usage, stored_connection
):
    from usage.models import UsageDaily

    expected = set(
        UsageDaily.objects.filter(connection_id=stored_connection.pk)
        .exclude(api_key_hash="k1")
        .values_list("pk", flat=True)
    )
    changed = rows.update(
        UsageDaily, {"connection_id": stored_connection.pk, "api_key_hash__ne": "k1"}, requests=7
    )
    assert changed == len(expected) == 1
    assert set(UsageDaily.objects.filter(requests=7).values_list("pk", flat=True)) == expected
    # exclude() keeps a NULL row that `<>` leaves out: on a nullable field the two would disagree.
    with pytest.raises(ValueError, match="non-null field"):
        rows.update(
            Connection, {"pk": stored_connection.pk, "complete_through__ne": date(2026, 1, 1)}, name="x"
        )


def test_an_increment_adds_to_each_rows_own_value_as_f_does(two_days_of_usage, stored_connection):
    from django.db.models import F

    from usage.models import UsageDaily

    UsageDaily.objects.filter(pk=two_days_of_usage[0].pk).update(requests=10)
    changed = rows.update(
        UsageDaily,
        {"connection_id": stored_connection.pk, "day": date(2026, 11, 1)},
        requests=F("requests") + 5,
        model="renamed",
    )
    assert changed == 2
    assert sorted(UsageDaily.objects.values_list("requests", "model")) == [
        (1, ""),
        (6, "renamed"),
        (15, "renamed"),
    ]
    version = Connection.objects.get(pk=stored_connection.pk).data_version
    rows.update(Connection, {"pk": stored_connection.pk}, data_version=F("data_version") + 1)
    assert Connection.objects.get(pk=stored_connection.pk).data_version == version + 1
    # Anything but the field's own value plus an integer is refused, not stored as its text.
    for value in (F("requests") * 2, F("prompt_tokens") + 1, F("requests") + 1.5, F("requests")):
        with pytest.raises(ValueError, match="plain values"):
            rows.update(UsageDaily, {"connection_id": stored_connection.pk}, requests=value)


def test_a_row_read_by_any_comparison_and_on_the_joined_row_is_the_orms(alice, acme, globex):
    from doow.models import Company

    Membership.objects.create(user=alice, company=globex, role="finance")
    expected = Membership.objects.get(user=alice, company=globex)
    for conditions in (
        {"user_id": alice.pk, "company__slug__ne": "acme"},
        {"user_id": alice.pk, "company__slug__in": ["globex", "nobody"]},
        {"user_id": alice.pk, "company_id__gt": acme.pk},
        {"user_id": alice.pk, "company__pk": globex.pk, "role__ne": "admin"},
    ):
        read = rows.get_one(Membership, related="company", **conditions)
        assert read is not None and field_values(read) == field_values(expected), conditions
        assert field_values(read.company) == field_values(Company.objects.get(pk=globex.pk))
    assert rows.get_one(Membership, related="company", user_id=alice.pk, company__slug__in=[]) is None


@pytest.mark.parametrize(
    ("value", "holds"), [(0, True), (2**63 - 1, True), (2**63, False), (-(2**63) - 1, False)]
)
def test_a_column_holds_the_numbers_its_type_can_store(value, holds):
    # Connection ids are big integers on PostgreSQL and SQLite alike.
    assert rows.column_holds(Connection._meta.pk, value) is holds
    assert rows.column_holds(Connection._meta.get_field("name"), value) is True  # not a number column


@pytest.mark.parametrize("operator", ["lt_or_null", "gt_or_null"])
@pytest.mark.parametrize("stored", [None, date(2026, 10, 31), date(2026, 11, 1), date(2026, 11, 2)])
def test_a_comparison_or_null_changes_the_rows_the_orms_q_finds(stored_connection, operator, stored):
    from django.db.models import Q

    Connection.objects.filter(pk=stored_connection.pk).update(complete_through=stored)
    compared = date(2026, 11, 1)
    lookup = operator.removesuffix("_or_null")
    expected = Connection.objects.filter(
        Q(complete_through__isnull=True) | Q(**{f"complete_through__{lookup}": compared}),
        pk=stored_connection.pk,
    ).exists()
    changed = rows.update(
        Connection, {"pk": stored_connection.pk, f"complete_through__{operator}": compared}, name="changed"
    )
    assert changed == int(expected)
    assert Connection.objects.get(pk=stored_connection.pk).name == (
        "changed" if expected else stored_connection.name
    )
    assert rows.get_values(
        Connection, ("id",), pk=stored_connection.pk, **{f"complete_through__{operator}": compared}
    ) == ([{"id": stored_connection.pk}] if expected else [])
