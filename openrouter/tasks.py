import logging

from celery import shared_task, signals
from celery.exceptions import MaxRetriesExceededError
from django.conf import settings
from django.utils import timezone

from openrouter.client import OpenRouterClient, backoff_seconds
from openrouter.sync import models_refresh_hold, models_upsert, sync_connection

logger = logging.getLogger(__name__)


@signals.worker_init.connect
def load_http_client(**kwargs) -> None:
    """Build the TLS context and import the HTTP stack once, in the worker's main process: the pool's
    processes are forked from it and share both, where each would otherwise spend ~50 ms of CPU on
    them during its first sync."""
    OpenRouterClient(None).close()


def retry_countdown(*, retries: int, retry_after: float | None) -> int:
    """The longer of Retry-After and exponential backoff (never 0), capped below the broker's
    visibility timeout so a waiting task is not redelivered while it waits."""
    wait = max(retry_after or 0.0, backoff_seconds(retries, base=30.0, cap=settings.CELERY_RETRY_DELAY_CAP))
    return int(min(wait, settings.CELERY_RETRY_DELAY_CAP))


@shared_task(bind=True, name="openrouter.sync_connection", acks_late=True, max_retries=5, ignore_result=True)
def sync_connection_task(self, connection_id: int, trigger: str = "scheduled") -> str:
    result = sync_connection(
        connection_id, trigger="retry" if self.request.retries else trigger, attempt=self.request.retries + 1
    )
    if result.status != "skipped":
        evaluate_alerts_task.delay(connection_id)
    if result.status in ("succeeded", "partial") and result.keys_seen >= settings.REPORT_WARM_MIN_KEYS:
        # Small organizations' pages are fast cold; warming them would only cost worker time.
        warm_reports_task.delay(connection_id)
    if result.retry:
        try:
            raise self.retry(
                countdown=retry_countdown(retries=self.request.retries, retry_after=result.retry_after),
                # A retry inherits its message's expiry, which only keeps a scheduled sync that never
                # started from piling up behind a backlog; a retry is a started sync running its course.
                expires=None,
            )
        except MaxRetriesExceededError:
            record_give_up(connection_id, result, attempts=self.request.retries + 1)
    return result.status


def record_give_up(connection_id: int, result, *, attempts: int) -> None:
    """The task's retries are used up: say so in the connection's event log (the last run's own
    message promised a retry). The connection stays scheduled: sync_run_finish set its next sync,
    and one without (next_sync_at empty) is due at the next beat tick."""
    from integrations.models import ConnectionState, EventKind, EventLevel, SyncRun
    from integrations.selectors import connection_find
    from integrations.services import sync_event_add

    logger.warning("Sync of connection %s gave up after %s attempts", connection_id, attempts)
    connection = connection_find(connection_id)
    if connection is None or connection.state == ConnectionState.DISCONNECTED:
        return
    run = SyncRun.objects.filter(pk=result.run_id).first() if result.run_id else None
    last_error = (run.error_summary if run else "") or result.status
    next_sync = (
        f"{connection.next_sync_at:%Y-%m-%d %H:%M} UTC"
        if connection.next_sync_at
        else "at the next beat tick"
    )
    sync_event_add(
        connection=connection,
        run=run,
        kind=EventKind.SYNC,
        code="sync_gave_up",
        level=EventLevel.ERROR,
        message=f"Gave up retrying this sync after {attempts} attempts (last error: {last_error}). "
        f"What was fetched is kept; the next scheduled sync ({next_sync}) tries again.",
        detail={"attempts": attempts, "last_error": last_error},
    )


@shared_task(name="openrouter.refresh_models", ignore_result=True)
def refresh_models_task() -> int:
    """The model catalog is public and shared by every connection: read it without a key. A sync
    that is reading it at this moment reads it for this task too."""
    with models_refresh_hold() as held:
        if not held:
            return 0
        with OpenRouterClient(None) as client:
            return models_upsert(client.get_models(), now=timezone.now())


@shared_task(name="openrouter.evaluate_alerts", ignore_result=True)
def evaluate_alerts_task(connection_id: int) -> int:
    """After each sync: budgets, credits, key limits, sync health and anomalies (openrouter/alerts.py)."""
    from integrations.selectors import connection_find
    from openrouter.alerts import evaluate_alerts

    connection = connection_find(connection_id)
    if connection is None:
        return 0
    return len(evaluate_alerts(connection=connection))


@shared_task(name="openrouter.evaluate_stalled_alerts", ignore_result=True)
def evaluate_stalled_alerts_task() -> int:
    """Hourly: the alerts of connections no sync runs for (they need attention, e.g. a refused key),
    so their "sync failing" alert is raised once its hours have passed."""
    from integrations.models import Connection, ConnectionState

    stalled = Connection.objects.filter(provider="openrouter", state=ConnectionState.NEEDS_ATTENTION)
    ids = list(stalled.values_list("pk", flat=True))
    for connection_id in ids:
        evaluate_alerts_task.delay(connection_id)
    return len(ids)


@shared_task(name="openrouter.warm_reports", ignore_result=True)
def warm_reports_task(connection_id: int) -> bool:
    """Compute the detail page's and the People page's default views after a sync wrote new data,
    so the first reader does not wait for aggregates over the whole month (usage/cache.py keeps
    them)."""
    from integrations.selectors import connection_find
    from openrouter import insights
    from openrouter.report import DetailQuery, detail_report

    connection = connection_find(connection_id)
    if connection is None:
        return False
    query = DetailQuery()
    detail_report(connection=connection, query=query)
    insights.spend_by_person(connection=connection, start=query.start, end=query.last_reported_day)
    insights.forecast(connection=connection)
    insights.budget_statuses(connection=connection)
    return True
