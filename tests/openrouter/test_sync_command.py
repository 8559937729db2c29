"""`manage.py openrouter_sync`: a foreground sync, held to a worker's time limit."""

import io

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from integrations.models import Connection, SyncRun
from openrouter.emulator import Fault
from tests.support import connect, stored_total

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def emulator_today(emulator):
    """The command syncs as of the real date, so the emulator serves that date's window."""
    emulator.set_today(timezone.now().date())


def run_command(*args) -> str:
    out = io.StringIO()
    call_command("openrouter_sync", "--company", "acme", *args, stdout=out)
    return out.getvalue()


def test_the_command_syncs_and_prints_a_summary(acme, emulator, emulator_server):
    connection = connect(acme, emulator)

    output = run_command()

    assert f"connection {connection.pk}: succeeded" in output
    start, end = emulator.truth.activity_window()
    assert stored_total(connection) == emulator.truth.activity_total(start, end)


def test_a_sync_past_its_time_limit_stops_like_a_workers_and_the_next_run_completes_it(
    acme, emulator, emulator_server
):
    connection = connect(acme, emulator)
    emulator.faults.add(Fault(path="/activity", latency=0.4))

    with pytest.raises(CommandError, match="did not succeed"):
        run_command("--time-limit", "1")

    run = SyncRun.objects.get(connection=connection)
    assert run.error_summary == "time_limit"
    connection.refresh_from_db()
    assert connection.sync_lease_token == "", "the lease is released, so the next sync may run"
    emulator.faults.clear()
    assert "succeeded" in run_command()
    start, end = emulator.truth.activity_window()
    assert stored_total(connection) == emulator.truth.activity_total(start, end)
    assert Connection.objects.get(pk=connection.pk).complete_through == end
