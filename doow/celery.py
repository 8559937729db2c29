"""The Celery app. Configuration comes from Django settings (CELERY_*); the beat schedule lives here."""

import os

from celery import Celery, signals
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "doow.settings")

app = Celery("doow")
app.config_from_object("django.conf:settings", namespace="CELERY")


@app.on_after_configure.connect
def _configure(sender, **kwargs) -> None:
    from django.conf import settings

    filesystem_broker = settings.CELERY_BROKER_URL.startswith("filesystem://")
    sender.conf.update(
        timezone="UTC",
        enable_utc=True,
        task_acks_late=True,
        task_ignore_result=True,
        task_soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT,
        task_time_limit=settings.CELERY_TASK_TIME_LIMIT,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        # The filesystem transport (embedded default) has no broadcast; Redis does.
        worker_enable_remote_control=not filesystem_broker,
        beat_schedule=beat_schedule(settings),
    )


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def scrub_secrets_from_worker_logs(logger=None, **kwargs) -> None:
    """Celery replaces the root logger's handlers (and with them the scrubbing filter settings.LOGGING
    gives Django's): put the filter back on every handler it set up, in the process that decrypts keys."""
    from integrations.log_scrub import ScrubSecretsFilter

    for handler in logger.handlers if logger is not None else ():
        if not any(isinstance(f, ScrubSecretsFilter) for f in handler.filters):
            handler.addFilter(ScrubSecretsFilter())


@signals.task_prerun.connect
@signals.task_postrun.connect
def close_old_database_connections(sender=None, **kwargs) -> None:
    """Around each task, what Django does around each web request: drop a connection older than
    CONN_MAX_AGE or left unusable by an error, and health-check a kept one before its next use.
    Celery's own fixup would close it every time instead (settings.CELERY_DB_REUSE_MAX)."""
    if getattr(getattr(sender, "request", None), "is_eager", False):
        return  # Run in the caller's process, inside its connection and maybe its transaction.
    from django.db import close_old_connections

    close_old_connections()


def beat_schedule(settings) -> dict:
    """Every periodic job, in one place. Each fans out to idempotent, locked per-connection tasks,
    so a missed or doubled tick is harmless; `expires` drops ticks queued while workers lagged."""
    interval = settings.OPENROUTER_SYNC_INTERVAL_MINUTES * 60
    return {
        "enqueue-due-syncs": {
            "task": "integrations.enqueue_due_syncs",
            "schedule": min(interval, 300),
            "options": {"expires": 240},
        },
        "refresh-openrouter-models": {
            "task": "openrouter.refresh_models",
            "schedule": crontab(minute=17, hour=0),  # https://crontab.guru/#17_0_*_*_*
            "options": {"expires": 3600},
        },
        # A connection that needs attention (a refused key) is not synced, so no sync evaluates its
        # alerts: without this, its "sync failing" alert would never be raised.
        "evaluate-stalled-alerts": {
            "task": "openrouter.evaluate_stalled_alerts",
            "schedule": crontab(minute=29),  # https://crontab.guru/#29_*_*_*_*
            "options": {"expires": 3000},
        },
        "prune-event-log": {
            "task": "integrations.prune_event_log",
            "schedule": crontab(minute=53, hour=3),  # https://crontab.guru/#53_3_*_*_*
            "options": {"expires": 3600},
        },
        "clear-expired-sessions": {
            "task": "doow.clear_expired_sessions",
            "schedule": crontab(minute=41, hour=3),  # https://crontab.guru/#41_3_*_*_*
            "options": {"expires": 3600},
        },
    }


app.autodiscover_tasks()
