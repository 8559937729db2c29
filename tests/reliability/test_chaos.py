"""Chaos sync: a fifth of OpenRouter's answers are 429s, 5xx, timeouts or truncated bodies. Once the
retries settle, the stored data equals a clean sync's exactly."""

import pytest

from openrouter.emulator import Emulator, Fault
from tests.support import connect, sync, usage_snapshot
from usage.models import UsageDaily

pytestmark = pytest.mark.django_db

CHAOS = [
    Fault(retry_after="2", probability=0.05),
    Fault(status=502, probability=0.03),
    Fault(status=503, probability=0.02),
    Fault(hang=True, probability=0.05),
    Fault(truncate=True, probability=0.05),
]


def sync_until_settled(connection, emulator, *, max_runs: int = 10) -> list[str]:
    """What Celery's retries do: run again until a run succeeds."""
    statuses = []
    for _ in range(max_runs):
        result = sync(connection, emulator)
        statuses.append(result.status)
        if result.status == "succeeded":
            return statuses
        assert result.retry, f"a transient fault must be retried, got {result}"
    raise AssertionError(f"sync did not settle: {statuses}")


@pytest.mark.parametrize("seed", [3, 4])
def test_chaos_sync_settles_on_exactly_the_clean_data(acme, globex, seed):
    from openrouter.emulator import EmulatorConfig

    config = EmulatorConfig(seed=seed, keys=40)
    clean = Emulator(config)
    clean_connection = connect(globex, clean)
    sync(clean_connection, clean)

    chaotic = Emulator(config)
    connection = connect(acme, chaotic)
    for fault in CHAOS:
        chaotic.faults.add(fault)

    statuses = sync_until_settled(connection, chaotic)

    fired = sum(fault.fired for fault in CHAOS)
    answered = len(chaotic.request_log)
    assert fired >= answered * 0.1, f"only {fired} faults in {answered} requests: not chaos"
    assert usage_snapshot(connection) == usage_snapshot(clean_connection)
    assert UsageDaily.objects.filter(connection=connection).count() == len(usage_snapshot(clean_connection))
    # A second settled sync under the same chaos changes nothing.
    sync_until_settled(connection, chaotic)
    assert usage_snapshot(connection) == usage_snapshot(clean_connection)
    assert statuses[-1] == "succeeded"
