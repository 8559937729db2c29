import signal
import time
from contextlib import contextmanager

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from integrations.models import Connection, SyncRun
from openrouter.alerts import evaluate_alerts
from openrouter.sync import sync_connection


class Command(BaseCommand):
    help = "Sync OpenRouter connections in the foreground (no broker needed) and print a summary."

    def add_arguments(self, parser):
        parser.add_argument("--company", help="Company slug")
        parser.add_argument("--connection", type=int, help="Connection id")
        parser.add_argument(
            "--time-limit",
            type=int,
            default=settings.CELERY_TASK_SOFT_TIME_LIMIT,
            help="Seconds one sync may run before it stops, as a worker's would (default: "
            "CELERY_TASK_SOFT_TIME_LIMIT). 0 means no limit: then no worker must run at the same time.",
        )

    def handle(self, *args, **options):
        connections = Connection.objects.filter(provider="openrouter").exclude(state="disconnected")
        if options["company"]:
            connections = connections.filter(company__slug=options["company"])
        if options["connection"] is not None:
            connections = connections.filter(pk=options["connection"])
        ids = list(connections.values_list("pk", flat=True))
        if not ids:
            raise CommandError("No live OpenRouter connection matches.")
        failed = False
        for connection_id in ids:
            started = time.monotonic()
            with soft_time_limit(options["time_limit"]):
                result = sync_connection(connection_id, trigger="command")
            if result.status != "skipped":
                evaluate_alerts(connection=Connection.objects.get(pk=connection_id))
            run = SyncRun.objects.filter(pk=result.run_id).first()
            seconds = time.monotonic() - started
            if run is None:
                self.stdout.write(f"connection {connection_id}: {result.status}")
                continue
            failed = failed or result.status not in ("succeeded", "skipped")
            self.stdout.write(
                f"connection {connection_id}: {run.status}; keys {run.keys_seen} seen, {run.keys_fetched} fetched; "
                f"rows written {run.rows_written}; requests {run.requests_made}; {seconds:.1f} s"
                + (f"; {run.error_summary}" if run.error_summary else "")
            )
        if failed:
            raise CommandError("At least one sync did not succeed; see the event log.")


@contextmanager
def soft_time_limit(seconds: int):
    """Celery's soft time limit, for a sync run in the foreground: the sync stops (keeping what it
    wrote) before the lease that keeps workers off this connection lapses, as a task's would."""
    if seconds <= 0:
        yield
        return

    def stop(signum, frame):
        raise SoftTimeLimitExceeded(f"the sync ran past --time-limit {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
