"""How a sync writes: what it reads is queued and written in as few transactions as its size allows
(a small organization's whole sync is one), and its progress is shown without a statement per phase."""

import threading

import pytest
from django.db import connection as db
from django.test.utils import CaptureQueriesContext

from integrations.models import Connection
from openrouter import sync as sync_module
from tests.support import connect, stored_total, sync

pytestmark = pytest.mark.django_db


def write_transactions(queries) -> int:
    """Sync write transactions: each opens with the one UPDATE that moves the data version."""
    return sum(1 for q in queries if q["sql"].startswith("UPDATE") and '"data_version" =' in q["sql"])


def statements(queries) -> int:
    """Statements, counting one INSERT split in batches (SQLite's bind-parameter limit) once."""
    sql = [q["sql"] for q in queries]
    return sum(
        1 for i, s in enumerate(sql) if not (i and s.startswith("INSERT") and s[:60] == sql[i - 1][:60])
    )


def test_a_small_organization_is_synced_in_one_write_transaction(acme, emulator):
    connection = connect(acme, emulator)
    with CaptureQueriesContext(db) as captured:
        result = sync(connection, emulator)

    assert result.status == "succeeded"
    assert write_transactions(captured.captured_queries) == 1
    # Everything the sync read is stored, reconciled with OpenRouter's account-wide total.
    assert stored_total(connection) == emulator.truth.activity_total(*emulator.truth.activity_window())
    connection.refresh_from_db()
    assert connection.sync_progress == {}
    # Statements a sync costs whatever it reads (a small organization's: a few dozen). At thousands
    # of connections they are what the workers and the database spend their time on. The per-key
    # monthly sums (usage/0012) cost two per usage write: a first sync writes the keys and the
    # unattributed rows, 45 before them.
    assert statements(captured.captured_queries) <= 49
    with CaptureQueriesContext(db) as captured:
        assert sync(connection, emulator).status == "succeeded"
    assert write_transactions(captured.captured_queries) == 1
    assert statements(captured.captured_queries) <= 40


def test_a_larger_organization_writes_a_transaction_per_batch_of_keys(acme, emulator, settings):
    settings.OPENROUTER_WRITE_BATCH_KEYS = 10
    connection = connect(acme, emulator)
    with CaptureQueriesContext(db) as captured:
        assert sync(connection, emulator).status == "succeeded"

    listed = connection.runs.get().keys_seen
    assert write_transactions(captured.captured_queries) == listed // 10 + 1
    assert stored_total(connection) == emulator.truth.activity_total(*emulator.truth.activity_window())


def test_each_phase_is_shown_while_the_sync_is_in_it(acme, emulator, monkeypatch):
    """With no minimum interval every phase is shown as it starts; by default a phase shown less
    than a second after the previous one waits for the next write."""
    monkeypatch.setattr(sync_module, "PROGRESS_INTERVAL_SECONDS", 0)
    connection = connect(acme, emulator)
    seen = {}
    transport = emulator.transport()
    handle = transport.handle_request

    def record(request):
        # Keys' activity is fetched from a thread pool, whose database connections cannot see this
        # test's uncommitted rows: the phase is read on the sync's own thread.
        if threading.current_thread() is threading.main_thread():
            phase = Connection.objects.get(pk=connection.pk).sync_progress.get("phase")
            path = request.url.path.removeprefix("/api/v1")
            if path == "/activity" and "api_key_hash" not in request.url.query.decode():
                path += " (account)"
            seen.setdefault(path, phase)
        return handle(request)

    monkeypatch.setattr(transport, "handle_request", record)
    monkeypatch.setattr(emulator, "transport", lambda: transport)
    assert sync(connection, emulator).status == "succeeded"

    assert seen["/credits"] == "reading credits"
    assert seen["/workspaces"] == "reading workspaces"
    assert seen["/organization/members"] == "reading organization members"
    assert seen["/keys"] == "reading keys and their activity"
    assert seen["/activity (account)"] == "reading account-wide activity"
