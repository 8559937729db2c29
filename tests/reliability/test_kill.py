"""Kill test: a real Celery worker process is SIGKILLed in the middle of a sync; once its lease lapses
the next run completes with no duplicate or missing rows."""

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection as db
from django.utils import timezone

from doow.celery import app
from integrations.models import Connection, SyncRun
from openrouter.emulator import Emulator, EmulatorConfig, Fault
from tests.support import connect, stored_total, sync
from usage.models import UsageDaily

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    params = db.settings_dict
    if params["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{params['NAME']}"
    return f"postgres://{params['USER'] or 'postgres'}@{params['HOST'] or '127.0.0.1'}:{params['PORT'] or 5432}/{params['NAME']}"


def start_worker(queue: str, base_url: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "DEBUG": "true",
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "DOOW_ENCRYPTION_KEYS": settings.DOOW_ENCRYPTION_KEYS,
        "DOOW_LOCAL_DIR": str(settings.LOCAL_DIR),
        "OPENROUTER_BASE_URL": base_url,
        "OPENROUTER_MAX_REQUESTS_PER_SECOND": "0",
        "OPENROUTER_CONCURRENCY": "1",
        # A few keys per write transaction, so the kill lands between two of them.
        "OPENROUTER_WRITE_BATCH_KEYS": "3",
    }
    command = [sys.executable, "-m", "celery", "-A", "doow", "worker", "--pool", "solo", "-Q", queue]
    command += ["--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for(condition, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def wait_out_midnight(margin: float = 120) -> None:
    """The emulator's day is fixed when it is made, while the worker syncs by the real clock: a run
    that straddled midnight UTC would have the worker read the next day's window from an emulator
    still serving the previous one. Close to midnight, start after it."""
    now = timezone.now()
    to_midnight = (
        now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1) - now
    ).total_seconds()
    if to_midnight < margin:
        time.sleep(to_midnight + 1)


@pytest.mark.django_db(transaction=True)
def test_a_killed_worker_sync_is_completed_by_the_next_run(acme):
    # Dated today: the worker syncs by the real clock (a fixed date broke this test at midnight UTC).
    wait_out_midnight()
    emulator = Emulator(EmulatorConfig(seed=21, keys=30, today=timezone.now().date()))
    connection = connect(acme, emulator)
    # Slow key activity down so the kill lands with some keys written and others not.
    emulator.faults.add(Fault(path="/activity", query={}, latency=0.15))
    queue = f"kill-test-{uuid.uuid4().hex[:8]}"
    with emulator.serve() as server:
        worker = start_worker(queue, server.base_url)
        try:
            app.send_task(
                "openrouter.sync_connection",
                args=[connection.pk],
                kwargs={"trigger": "scheduled"},
                queue=queue,
            )
            wait_for(
                lambda: UsageDaily.objects.filter(connection=connection).exclude(api_key_hash="").exists(),
                timeout=180,
                what="the worker to write its first keys",
            )
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
        finally:
            if worker.poll() is None:
                worker.kill()
    assert worker.returncode == -signal.SIGKILL

    killed_run = SyncRun.objects.get(connection=connection)
    assert killed_run.status == "running"
    keys_total = len(list(emulator.truth.listed_keys()))
    written_keys = (
        UsageDaily.objects.filter(connection=connection).exclude(api_key_hash="").values("api_key_hash")
    )
    assert 0 < written_keys.distinct().count() < keys_total, "the kill should land part-way"

    # The dead worker still holds the lease, so a run now is skipped...
    emulator.faults.clear()
    assert sync(connection, emulator).status == "skipped"
    # ...until the lease lapses (it outlives the task's hard time limit).
    Connection.objects.filter(pk=connection.pk).update(sync_lease_until=timezone.now())
    emulator.request_log.clear()
    assert sync(connection, emulator).status == "succeeded"

    start, end = emulator.truth.activity_window()
    assert stored_total(connection) == emulator.truth.activity_total(start, end)
    for key in emulator.truth.listed_keys():
        expected = sum(
            (row["usage"] for row in emulator.truth.activity_rows(start, end, api_key_hash=key["hash"])),
            Decimal(0),
        )
        assert stored_total(connection, api_key_hash=key["hash"]) == expected
    # Keys the killed run had finished were not fetched again.
    refetched = {
        e.query["api_key_hash"]
        for e in emulator.request_log.matching("/activity")
        if "api_key_hash" in e.query
    }
    assert len(refetched) < keys_total
    killed_run.refresh_from_db()
    assert (killed_run.status, killed_run.error_summary) == ("failed", "worker_lost")
