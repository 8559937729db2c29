from datetime import UTC, date, datetime, time, timedelta

from django.db.models import QuerySet
from django.http import Http404

from doow import rows
from doow.models import Company
from integrations import crypto
from integrations.models import Connection, SyncEvent, SyncRun


def connection_list(*, company: Company, include_disconnected: bool = True) -> QuerySet[Connection]:
    connections = Connection.objects.filter(company=company)
    if not include_disconnected:
        connections = connections.exclude(state="disconnected")
    return connections.order_by("name", "id")


def connection_get(*, company: Company, connection_id: int) -> Connection:
    """Only ever look a connection up within the company the request may see (a filter naming one;
    a connection's own pages read it with the membership, integrations.access.connection_view).
    Read without the query compiler (doow.rows)."""
    connection = rows.get_one(Connection, company_id=company.pk, pk=connection_id)
    if connection is None:
        raise Http404("No Connection matches the given query.")
    return connection


def connection_disconnected_for(
    *, company: Company, provider: str, external_account_id: str
) -> Connection | None:
    """The company's most recently disconnected connection to that account, if any: connecting the
    account again continues it rather than starting a second one beside its history."""
    return (
        Connection.objects.filter(
            company=company, provider=provider, external_account_id=external_account_id, state="disconnected"
        )
        .order_by("-disconnected_at", "-pk")
        .first()
    )


def connection_find(connection_id: int) -> Connection | None:
    """A connection by id for background work (no request, so no company to scope it by), or None
    if it was deleted. Read without the query compiler (doow.rows): every sync and follow-up task
    starts here."""
    return rows.get_one(Connection, pk=connection_id)


def sync_event_list(
    *, company: Company, connection: Connection | None = None, level=None, kind=None, day=None, after_id=None
) -> QuerySet[SyncEvent]:
    events = SyncEvent.objects.filter(company=company).select_related("run", "connection")
    if connection is not None:
        events = events.filter(connection=connection)
    if level:
        events = events.filter(level=level)
    if kind:
        events = events.filter(kind=kind)
    if day:
        # A range on the column, which its index serves (a date cast of the column is not indexed).
        start = datetime.combine(day, time.min, tzinfo=UTC)
        events = events.filter(created_at__gte=start)
        if day < date.max:  # the last day a date holds has no next day to stop before
            events = events.filter(created_at__lt=start + timedelta(days=1))
    if after_id:
        events = events.filter(pk__gt=after_id)
    return events.order_by("-id")


def sync_run_get(*, company: Company, run_id: int) -> SyncRun:
    from django.shortcuts import get_object_or_404

    return get_object_or_404(SyncRun.objects.select_related("connection"), company=company, pk=run_id)


def key_ring_problems() -> tuple[list[str], bool]:
    """Stored secrets the key ring cannot decrypt, each named by connection and key id, and whether
    none decrypts at all (the ring is wrong as a whole, as after a deploy that dropped its key)."""
    problems, decrypted = [], 0
    for connection in (
        Connection.objects.exclude(secret="").only("pk", "company_id", "provider", "secret").iterator()
    ):
        try:
            crypto.decrypt(connection.secret, context=connection.secret_context)
        except crypto.DecryptionError as exc:
            problems.append(f"Connection {connection.pk}: {exc}")
        else:
            decrypted += 1
    return problems, bool(problems) and not decrypted
