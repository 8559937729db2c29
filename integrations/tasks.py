import random
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from integrations.models import Connection
from integrations.registry import get_provider
from integrations.services import connections_due, event_log_prune


@shared_task(name="integrations.enqueue_due_syncs", ignore_result=True)
def enqueue_due_syncs() -> int:
    """Fan out: one provider sync task per due connection, spread over a few minutes so thousands of
    connections do not all hit their provider at once.

    Due connections are claimed by one conditional UPDATE that moves their next_sync_at forward to
    this tick's own mark, and only those that carry the mark are enqueued: a doubled or overlapping
    beat tick, which finds them claimed, enqueues nothing twice."""
    from doow.celery import app

    now = timezone.now()
    due = connections_due(now=now)
    interval = timedelta(minutes=settings.OPENROUTER_SYNC_INTERVAL_MINUTES)
    spread = max(1, min(300, int(interval.total_seconds() // 4)))
    # The random microseconds tell this tick's claims from another tick's of the same instant.
    claim_mark = now + interval + timedelta(microseconds=random.randrange(1, 1_000_000))
    Connection.objects.filter(pk__in=due).filter(
        Q(next_sync_at__isnull=True) | Q(next_sync_at__lte=now)
    ).update(next_sync_at=claim_mark)
    claimed = list(
        Connection.objects.filter(pk__in=due, next_sync_at=claim_mark)
        .order_by("pk")
        .values_list("pk", "provider")
    )
    sent = 0
    try:
        for connection_id, provider in claimed:
            countdown = random.randint(0, spread)
            app.send_task(
                get_provider(provider).sync_task,
                args=[connection_id],
                kwargs={"trigger": "scheduled"},
                countdown=countdown,
                # Not started within an interval (workers behind a backlog), it is dropped unrun: by
                # then the next tick has sent the connection's next sync, and a backlog of several
                # full syncs per connection would only grow.
                expires=countdown + interval.total_seconds(),
            )
            sent += 1
    except Exception:
        # The broker failed part way: the connections not sent are due again at the next tick,
        # not an interval later.
        unsent = [connection_id for connection_id, _ in claimed[sent:]]
        Connection.objects.filter(pk__in=unsent, next_sync_at=claim_mark).update(next_sync_at=now)
        raise
    return len(claimed)


@shared_task(name="integrations.prune_event_log", ignore_result=True)
def prune_event_log() -> int:
    """Daily: delete sync events and runs older than EVENT_LOG_RETENTION_DAYS."""
    if not settings.EVENT_LOG_RETENTION_DAYS:
        return 0
    events, runs = event_log_prune(older_than=timedelta(days=settings.EVENT_LOG_RETENTION_DAYS))
    return events + runs
