"""The model catalog is one per database: syncs that find it stale at the same moment read it once,
a read that fails leaves no hold behind, and a cache that does not answer holds no read back."""

import pytest
from django.core.cache import cache
from django.db import connection as django_connection

from openrouter import sync as sync_module
from openrouter.emulator import Fault
from openrouter.models import Model
from openrouter.sync import MODELS_REFRESH_HOLD_SECONDS, models_refresh_hold
from openrouter.tasks import refresh_models_task
from tests.support import connect, sync, thread_with_own_connection

pytestmark = pytest.mark.django_db


def hold_key() -> str:
    return f"openrouter:models-refresh:{django_connection.settings_dict['NAME']}"


def catalog_reads(emulator) -> int:
    return len(emulator.request_log.matching("/models"))


@pytest.mark.django_db(transaction=True)
def test_syncs_that_find_the_catalog_stale_together_read_it_once(acme, globex, emulator):
    connections = [connect(acme, emulator), connect(globex, emulator, name="globex")]
    # The first read takes a second, so the other sync finds the catalog stale while it runs.
    emulator.faults.add(Fault(path="/models", latency=1.0))
    emulator.request_log.clear()
    results = []
    threads = [thread_with_own_connection(lambda c=c: results.append(sync(c, emulator))) for c in connections]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert [r.status for r in results] == ["succeeded", "succeeded"]
    assert catalog_reads(emulator) == 1
    assert Model.objects.count() == len(emulator.world.models)
    assert cache.get(hold_key()) is None  # released once read


def test_a_sync_while_another_worker_reads_the_catalog_reads_none_and_stores_its_usage(acme, emulator):
    connection = connect(acme, emulator)
    emulator.request_log.clear()
    with models_refresh_hold() as held:
        assert held
        result = sync(connection, emulator)

    assert result.status == "succeeded"
    assert catalog_reads(emulator) == 0
    assert not Model.objects.exists()
    # Once the other worker is done (here: failed to read it), the next sync reads it.
    assert sync(connection, emulator).status == "succeeded"
    assert catalog_reads(emulator) == 1
    assert Model.objects.count() == len(emulator.world.models)


def test_a_hold_is_released_when_the_read_fails(acme, emulator):
    connection = connect(acme, emulator)
    emulator.faults.add(Fault(path="/models", status=400))
    emulator.request_log.clear()

    assert sync(connection, emulator).status == "partial"  # what was read before is kept
    assert catalog_reads(emulator) == 1
    assert cache.get(hold_key()) is None
    emulator.faults.clear()
    assert sync(connection, emulator).status == "succeeded"
    assert Model.objects.count() == len(emulator.world.models)


def test_the_hold_is_taken_once_and_lapses_by_itself():
    with models_refresh_hold() as first, models_refresh_hold() as second:
        assert (first, second) == (True, False)
        assert cache.get(hold_key()) == 1
        assert 0 < MODELS_REFRESH_HOLD_SECONDS <= 600
    assert cache.get(hold_key()) is None  # the one that held it released it; the other had nothing


def test_the_daily_task_leaves_the_catalog_to_a_sync_reading_it(emulator, emulator_server):
    with models_refresh_hold():
        assert refresh_models_task() == 0
    assert not Model.objects.exists()
    assert refresh_models_task() == len(emulator.world.models)
    assert Model.objects.count() == len(emulator.world.models)


class BrokenCache:
    def add(self, *args, **kwargs):
        raise ConnectionError("cache down")

    delete = add


def test_a_cache_that_does_not_answer_holds_no_read_back(acme, emulator, monkeypatch, caplog):
    connection = connect(acme, emulator)
    monkeypatch.setattr(sync_module, "cache", BrokenCache())
    emulator.request_log.clear()

    assert sync(connection, emulator).status == "succeeded"
    assert catalog_reads(emulator) == 1
    assert Model.objects.count() == len(emulator.world.models)
    assert "reading the model catalog without a hold" in caplog.text
