import random
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from integrations.models import Connection
from integrations.registry import get_provider
from integrations.services import connections_due


@shared_task(name="integrations.enqueue_due_syncs", ignore_result=True)
def enqueue_due_syncs() -> int:
    """Fan out: one provider sync task per due connection, spread over a few minutes so thousands of
    connections do not all hit their provider at once. Pushing next_sync_at forward first makes a
    doubled beat tick enqueue nothing twice."""
    from doow.celery import app

    now = timezone.now()
    due = connections_due(now=now)
    interval = timedelta(minutes=settings.OPENROUTER_SYNC_INTERVAL_MINUTES)
    spread = max(1, min(300, int(interval.total_seconds() // 4)))
    for connection in Connection.objects.filter(pk__in=due).only("pk", "provider"):
        claimed = Connection.objects.filter(pk=connection.pk, next_sync_at=connection.next_sync_at).update(
            next_sync_at=now + interval
        )
        if not claimed:
            continue
        app.send_task(
            get_provider(connection.provider).sync_task,
            args=[connection.pk],
            kwargs={"trigger": "scheduled"},
            countdown=random.randint(0, spread),
        )
    return len(due)
