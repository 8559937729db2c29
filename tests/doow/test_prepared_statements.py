"""The statements of doow.rows are prepared on PostgreSQL once a connection has run them a few times
(doow.db.planned_once_cursor): the same rows as before, Django's errors and query log, and a column
whose type a migration changed costs no failed request outside a transaction."""

import psycopg
import pytest
from django.db import NotSupportedError, ProgrammingError, connection, transaction
from django.db.backends.utils import CursorWrapper
from django.test.utils import CaptureQueriesContext

from doow import rows
from doow.db import planned_once_cursor
from doow.models import Company

THRESHOLD = 5  # settings: prepare_threshold; psycopg prepares the run after that many

needs_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="prepared statements are PostgreSQL's (doow.db)"
)


def prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [statement for (statement,) in cursor.fetchall()]


def company_reads() -> list[str]:
    return [s for s in prepared_statements() if '"doow_company"' in s and "UPDATE" not in s]


@needs_postgresql
def test_a_read_is_prepared_once_the_connection_has_run_it_a_few_times_and_reads_the_same_row(acme):
    assert company_reads() == []
    for run in range(1, THRESHOLD + 3):
        found = rows.get_one(Company, slug="acme")
        assert (found.pk, found.name, found.slug, found.created_at) == (
            acme.pk,
            acme.name,
            acme.slug,
            acme.created_at,
        )
        assert len(company_reads()) == (1 if run > THRESHOLD else 0), run
    assert rows.get_one(Company, slug="nobody") is None


@needs_postgresql
def test_a_prepared_update_changes_and_counts_the_same_rows(acme, globex):
    for run in range(THRESHOLD + 2):
        assert rows.update(Company, {"slug": "acme"}, name=f"Acme {run}") == 1
    assert any(s.startswith("UPDATE") for s in prepared_statements())
    assert Company.objects.get(pk=acme.pk).name == f"Acme {THRESHOLD + 1}"
    assert Company.objects.get(pk=globex.pk).name == "Globex"


@needs_postgresql
def test_djangos_own_statements_are_never_prepared(acme):
    for _ in range(THRESHOLD * 2):
        assert Company.objects.filter(slug="acme").first() == acme
    assert prepared_statements() == []


def test_elsewhere_or_turned_off_it_is_djangos_own_cursor(db, monkeypatch):
    monkeypatch.setitem(connection.settings_dict["OPTIONS"], "prepare_threshold", None)
    with planned_once_cursor() as cursor:
        assert type(cursor.cursor) is type(connection.cursor().cursor)
    for _ in range(THRESHOLD * 2):
        rows.get_one(Company, slug="acme")
    if connection.vendor == "postgresql":
        assert prepared_statements() == []


@needs_postgresql
def test_the_query_log_shows_each_statement_with_its_values(acme):
    for _ in range(THRESHOLD + 1):
        with CaptureQueriesContext(connection) as captured:
            rows.get_one(Company, slug="acme")
        (query,) = captured.captured_queries
        assert "'acme'" in query["sql"]
        assert '"doow_company"' in query["sql"]


@needs_postgresql
def test_an_error_is_djangos_error(db):
    with pytest.raises(ProgrammingError), planned_once_cursor() as cursor:
        cursor.execute("SELECT * FROM doow_no_such_table WHERE id = %s", [1])


def change_column_type(sql_type: str) -> None:
    """As a migration run by another process does."""
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
        other.execute(f"ALTER TABLE doow_company ALTER COLUMN name TYPE {sql_type}")


@pytest.fixture
def prepared_company_read(transactional_db, acme):
    """A prepared read of a company, then another process changes the type of a column it reads."""
    for _ in range(THRESHOLD + 1):
        rows.get_one(Company, slug="acme")
    assert len(company_reads()) == 1
    change_column_type("varchar(300)")
    yield
    connection.close()  # nothing of this connection's prepared statements outlives the test
    change_column_type("varchar(200)")


@needs_postgresql
def test_after_a_column_type_change_a_read_outside_a_transaction_is_made_again(prepared_company_read):
    old_backend = connection.connection.info.backend_pid
    assert rows.get_one(Company, slug="acme").name == "Acme Corp"
    assert connection.connection.info.backend_pid != old_backend
    for _ in range(THRESHOLD + 1):
        assert rows.get_one(Company, slug="acme").name == "Acme Corp"


@needs_postgresql
def test_after_a_column_type_change_a_transaction_fails_once_and_the_next_read_works(prepared_company_read):
    with pytest.raises(NotSupportedError), transaction.atomic():
        rows.get_one(Company, slug="acme")
    assert rows.get_one(Company, slug="acme").name == "Acme Corp"
    with transaction.atomic():
        assert rows.get_one(Company, slug="acme").name == "Acme Corp"
    assert isinstance(planned_once_cursor(), CursorWrapper)
