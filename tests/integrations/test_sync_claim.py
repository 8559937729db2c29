"""sync_claim: one statement that takes the connection for one sync, and only when it may."""

from datetime import timedelta

import pytest
from django.db import connection as db_connection
from django.db import transaction
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from doow import rows
from integrations.models import Connection, ConnectionState
from integrations.services import sync_claim, sync_release

pytestmark = pytest.mark.django_db


@pytest.fixture
def connection(acme) -> Connection:
    return Connection.objects.create(
        company=acme, provider="openrouter", name="Prod", secret="encrypted", state=ConnectionState.CONNECTED
    )


def test_a_claim_takes_a_free_connection_in_one_statement_and_shows_it_syncing(connection):
    before = timezone.now()
    with CaptureQueriesContext(db_connection) as queries:
        token = sync_claim(connection_id=connection.pk)
    assert token and len(queries) == 1
    connection.refresh_from_db()
    assert connection.sync_lease_token == token
    assert connection.sync_lease_until > timezone.now()
    assert connection.state == ConnectionState.SYNCING
    assert connection.last_sync_attempt_at >= before
    assert connection.sync_progress == {"phase": "starting"}


def test_a_held_lease_is_not_claimed_again_until_released_or_lapsed(connection):
    token = sync_claim(connection_id=connection.pk)
    assert sync_claim(connection_id=connection.pk) is None
    assert Connection.objects.get(pk=connection.pk).sync_lease_token == token  # untouched
    sync_release(connection_id=connection.pk, token=token)
    again = sync_claim(connection_id=connection.pk)
    assert again and again != token
    # A worker that died holding it: the lease lapses and the next claim takes it over.
    Connection.objects.filter(pk=connection.pk).update(sync_lease_until=timezone.now() - timedelta(seconds=1))
    assert sync_claim(connection_id=connection.pk) not in (None, again)


@pytest.mark.parametrize(
    "change", [{"state": ConnectionState.DISCONNECTED}, {"secret": ""}], ids=["disconnected", "no key"]
)
def test_a_disconnected_connection_or_one_without_a_key_is_not_claimed(connection, change):
    Connection.objects.filter(pk=connection.pk).update(**change)
    assert sync_claim(connection_id=connection.pk) is None
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.sync_lease_until is None and stored.sync_lease_token == ""


@pytest.mark.parametrize("missing", [10**6, 2**63, 10**30])
def test_no_such_connection_is_no_claim_and_no_error(missing):
    assert sync_claim(connection_id=missing) is None


@pytest.mark.django_db(transaction=True)  # the test itself outside a transaction
def test_a_row_read_for_update_is_locked_and_needs_a_transaction(connection):
    with pytest.raises(TransactionManagementError):
        rows.get_one(Connection, pk=connection.pk, for_update=True)
    with transaction.atomic(), CaptureQueriesContext(db_connection) as queries:
        locked = rows.get_one(Connection, pk=connection.pk, for_update=True)
    assert locked.pk == connection.pk and locked.name == "Prod"
    if db_connection.features.has_select_for_update:
        assert queries[0]["sql"].endswith("FOR UPDATE")


def test_a_write_holds_a_live_connection_moves_its_data_version_and_shows_progress(connection):
    from integrations.services import connection_hold_for_write

    version = connection.data_version
    with transaction.atomic():
        assert connection_hold_for_write(connection_id=connection.pk, generation=connection.generation)
        assert connection_hold_for_write(
            connection_id=connection.pk,
            generation=connection.generation,
            progress={"phase": "keys", "done": 3},
        )
    connection.refresh_from_db()
    assert connection.data_version == version + 2
    assert connection.sync_progress == {"phase": "keys", "done": 3}
    # Another generation (a replaced key) or a disconnect: nothing is changed.
    with transaction.atomic():
        assert not connection_hold_for_write(
            connection_id=connection.pk, generation=connection.generation + 1
        )
    Connection.objects.filter(pk=connection.pk).update(state=ConnectionState.DISCONNECTED)
    with transaction.atomic():
        assert not connection_hold_for_write(connection_id=connection.pk, generation=connection.generation)
    assert Connection.objects.get(pk=connection.pk).data_version == version + 2
