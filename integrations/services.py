"""Connection lifecycle, secrets, sync runs and the event log. Views, tasks and commands call these."""

import logging
import secrets as std_secrets
from dataclasses import dataclass, field
from datetime import date, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from doow import rows
from doow.models import Company
from doow.services import audit_record
from integrations import coverage, crypto, log_scrub
from integrations.models import (
    Connection,
    ConnectionState,
    EventKind,
    EventLevel,
    SyncEvent,
    SyncRun,
    SyncRunStatus,
)
from integrations.providers import VerifiedCredential
from integrations.registry import get_provider

logger = logging.getLogger(__name__)


class DuplicateConnection(Exception):
    pass


class CredentialMismatch(Exception):
    """A replacement credential that reads another account than the connection's."""


def sync_event_add(
    *,
    connection: Connection,
    kind: str,
    code: str,
    message: str,
    level: str = EventLevel.INFO,
    run: SyncRun | None = None,
    detail: dict | None = None,
) -> SyncEvent:
    # Compiled once (doow.rows): every sync writes a few, on every connection.
    return rows.insert(
        SyncEvent,
        company_id=connection.company_id,
        connection=connection,
        run=run,
        kind=kind,
        code=code,
        level=level,
        # Ops read the event log: nothing key-shaped is stored in it, whatever a provider's error said.
        message=log_scrub.scrub(message),
        detail=_scrubbed(detail or {}),
    )


def _scrubbed(value):
    if isinstance(value, str):
        return log_scrub.scrub(value)
    if isinstance(value, dict):
        return {key: _scrubbed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(item) for item in value]
    return value


@sensitive_variables("secret")
def connection_create(
    *,
    company: Company,
    provider: str,
    name: str,
    secret: str,
    verified: VerifiedCredential,
    actor=None,
    request=None,
) -> Connection:
    """Store a verified credential, log it, and enqueue the initial sync once the transaction commits.

    The transaction is opened here, not by a decorator: a decorator's frame would hold the
    arguments, the key among them, where an error report shows them."""
    with transaction.atomic():
        duplicate = _duplicate(verified.account_label)
        if _live_connection_exists(company.pk, provider, verified.external_account_id):
            raise duplicate
        try:
            # A concurrent connect of the same account (a double-clicked button) passes the check
            # above too; the one_live_connection_per_account constraint stops the second.
            connection = Connection.objects.create(
                company=company,
                provider=provider,
                name=name,
                state=ConnectionState.SYNCING,
                scope=verified.scope,
                external_account_id=verified.external_account_id,
                account_label=verified.account_label,
                config=verified.config,
                secret_last4=secret[-4:],
                created_by=actor,
                next_sync_at=timezone.now(),
            )
        except IntegrityError:
            raise duplicate from None
        # The ciphertext is bound to the row id, so it is written once the row exists.
        connection.secret = crypto.encrypt(secret, context=connection.secret_context)
        connection.save(update_fields=["secret"])
        sync_event_add(
            connection=connection,
            kind=EventKind.CREDENTIAL,
            code="credential_verified",
            message=f"Credential verified: {verified.scope.replace('_', ' ')} scope for {verified.account_label}.",
            detail={"scope": verified.scope, "account": verified.external_account_id},
        )
        if verified.notice:
            sync_event_add(
                connection=connection,
                kind=EventKind.SCOPE,
                code="limited_scope",
                level=EventLevel.WARNING,
                message=verified.notice,
            )
        audit_record(
            company=company,
            action="connection.connected",
            request=request,
            actor=actor,
            target=f"{provider}:{connection.pk}",
            detail={"name": name, "scope": verified.scope, "account": verified.external_account_id},
        )
        connection_enqueue_sync(connection=connection, trigger="initial")
        return connection


@sensitive_variables("secret")
def connection_replace_secret(
    *, connection: Connection, secret: str, verified: VerifiedCredential, actor=None, request=None, name=""
) -> Connection:
    """Store a verified replacement credential of the same account on this connection, so its history,
    budgets and owners stay with it (a disconnect and a new connection would start from the provider's
    window); a disconnected connection is connected again this way (renamed if `name` is given). Any
    sync in flight stops writing (generation bump) and its lease is released, so the sync queued here
    starts with the new key.

    The transaction is opened here, not by a decorator, for the reason connection_create gives."""
    with transaction.atomic():
        locked = Connection.objects.select_for_update().get(pk=connection.pk)
        if verified.scope != locked.scope or verified.external_account_id != locked.external_account_id:
            raise CredentialMismatch(
                f"That key reads {verified.account_label or 'another account'}, not "
                f"{locked.account_label or 'the account'} this connection reads."
            )
        was_disconnected = locked.state == ConnectionState.DISCONNECTED
        if was_disconnected and _live_connection_exists(
            locked.company_id, locked.provider, locked.external_account_id
        ):
            raise _duplicate(locked.account_label)
        Connection.objects.filter(pk=locked.pk).update(
            name=name or locked.name,
            secret=crypto.encrypt(secret, context=locked.secret_context),
            secret_last4=secret[-4:],
            account_label=verified.account_label,
            config=verified.config,
            state=ConnectionState.SYNCING,
            attention_reason="",
            generation=F("generation") + 1,
            disconnected_at=None,
            sync_lease_until=None,
            sync_lease_token="",
            sync_progress={},
            next_sync_at=timezone.now(),
        )
        locked.refresh_from_db()
        sync_event_add(
            connection=locked,
            kind=EventKind.CREDENTIAL,
            code="credential_replaced",
            message=f"Key {'connected again' if was_disconnected else 'replaced'} by "
            f"{getattr(actor, 'email', None) or 'an operator'}: {locked.masked_secret} now reads "
            f"{locked.account_label}.",
            detail={"scope": verified.scope, "account": verified.external_account_id},
        )
        audit_record(
            company=locked.company,
            action="connection.reconnected" if was_disconnected else "connection.key_replaced",
            request=request,
            actor=actor,
            target=f"{locked.provider}:{locked.pk}",
            detail={"scope": verified.scope, "account": verified.external_account_id},
        )
        connection_enqueue_sync(connection=locked, trigger="manual")
        return locked


def _live_connection_exists(company_id: int, provider: str, external_account_id: str) -> bool:
    return (
        Connection.objects.filter(
            company_id=company_id, provider=provider, external_account_id=external_account_id
        )
        .exclude(state=ConnectionState.DISCONNECTED)
        .exists()
    )


def _duplicate(account_label: str) -> DuplicateConnection:
    return DuplicateConnection(
        f"This company already has a live connection to {account_label or 'that account'}."
    )


def connection_enqueue_sync(*, connection: Connection, trigger: str) -> bool:
    """Send the provider's sync task by name once the surrounding transaction commits. False when
    called outside a transaction and the task queue refused it (inside one, it is sent at commit)."""
    requested_at = timezone.now()
    Connection.objects.filter(pk=connection.pk).update(sync_requested_at=requested_at)
    sent = []
    transaction.on_commit(lambda: sent.append(_send_sync(connection, trigger, requested_at)))
    return sent != [False]


def _send_sync(connection: Connection, trigger: str, requested_at) -> bool:
    """The broker down (Redis restarting): what asked for the sync has been saved and stays so; the
    sync is left to the next scheduled one, and the event log says so, instead of an error page."""
    from doow.celery import app

    try:
        app.send_task(
            get_provider(connection.provider).sync_task, args=[connection.pk], kwargs={"trigger": trigger}
        )
        return True
    except Exception as exc:  # kombu's OperationalError, or whatever the broker's client raises
        logger.warning("Could not queue a sync of connection %s: %s", connection.pk, exc.__class__.__name__)
        # Not shown as queued: nothing is, and "Sync now" would be refused for a while.
        Connection.objects.filter(pk=connection.pk, sync_requested_at=requested_at).update(
            sync_requested_at=None
        )
        sync_event_add(
            connection=connection,
            kind=EventKind.SYNC,
            code="sync_not_queued",
            level=EventLevel.WARNING,
            message="The sync could not be queued: the task queue did not answer. The next scheduled "
            "sync will run it.",
        )
        return False


@sensitive_variables()
def connection_secret(connection: Connection) -> str:
    """Decrypt a connection's credential, failing closed: on any failure the connection is marked
    needs-attention and DecryptionError is raised; the stored value is never used or re-saved."""
    if not connection.secret:
        raise crypto.DecryptionError("This connection holds no credential.")
    try:
        return crypto.decrypt(connection.secret, context=connection.secret_context)
    except crypto.DecryptionError as exc:
        connection_mark_attention(
            connection=connection,
            reason="The stored credential could not be decrypted with the configured key ring. "
            "Check DOOW_ENCRYPTION_KEYS, or paste the key again with Replace key (Company settings).",
            code="decrypt_failed",
            kind=EventKind.CREDENTIAL,
            detail={"error": str(exc)},
        )
        raise


def connection_mark_attention(
    *, connection: Connection, reason: str, code: str, kind: str, run: SyncRun | None = None, detail=None
) -> bool:
    """Flag the connection as needing its admin, with an error event saying why. False, and nothing
    flagged or logged, when its key was replaced or it was disconnected since `connection` was read:
    what a sync found wrong with the old key says nothing of the new one, and an error logged right
    after the replacement would read as the new key's."""
    reason = log_scrub.scrub(reason)  # shown on the connection's card
    flagged = (
        Connection.objects.filter(pk=connection.pk, generation=connection.generation)
        .exclude(state=ConnectionState.DISCONNECTED)
        .update(state=ConnectionState.NEEDS_ATTENTION, attention_reason=reason)
    )
    if not flagged:
        return False
    connection.state, connection.attention_reason = ConnectionState.NEEDS_ATTENTION, reason
    sync_event_add(
        connection=connection,
        kind=kind,
        code=code,
        level=EventLevel.ERROR,
        message=reason,
        run=run,
        detail=detail,
    )
    return True


@transaction.atomic
def connection_disconnect(
    *, connection: Connection, actor=None, request=None, delete_usage: bool = False
) -> int:
    """Delete the stored credential now and stop any sync in flight from writing (generation bump).

    Returns the number of usage rows deleted (0 unless delete_usage).
    """
    locked = Connection.objects.select_for_update().get(pk=connection.pk)
    if locked.state == ConnectionState.DISCONNECTED:
        return 0
    Connection.objects.filter(pk=locked.pk).update(
        secret="",
        secret_last4="",
        state=ConnectionState.DISCONNECTED,
        generation=F("generation") + 1,
        disconnected_at=timezone.now(),
        sync_lease_until=None,
        sync_lease_token="",
        sync_progress={},
        next_sync_at=None,
        # Deleted usage takes the days it reported with it: a reconnected organization's days
        # before its new window are then unknown, not shown as days without spend.
        **({"reported_spans": [], "complete_through": None} if delete_usage else {}),
    )
    provider = get_provider(locked.provider)
    deleted = provider.purge_data(locked) if delete_usage else 0
    provider.disconnected(locked)
    sync_event_add(
        connection=locked,
        kind=EventKind.DISCONNECT,
        code="disconnected",
        level=EventLevel.WARNING,
        message="Disconnected: the stored key was deleted. Revoke it in OpenRouter too."
        + (f" {deleted} usage rows were deleted." if delete_usage else " Synced usage history is kept."),
        detail={"usage_rows_deleted": deleted},
    )
    audit_record(
        company=locked.company,
        action="connection.disconnected",
        request=request,
        actor=actor,
        target=f"{locked.provider}:{locked.pk}",
        detail={"delete_usage": delete_usage, "usage_rows_deleted": deleted},
    )
    connection.refresh_from_db()
    return deleted


@dataclass(frozen=True)
class RotationFailure:
    """A connection whose stored secret did not decrypt: named by id and company, never by its value."""

    connection_id: int
    company_slug: str
    reason: str


@dataclass
class RotationResult:
    rotated: int = 0
    current: int = 0
    failed: list[RotationFailure] = field(default_factory=list)


@sensitive_variables("plaintext")
def connections_rotate_secrets(*, actor=None) -> RotationResult:
    """Re-encrypt every stored secret under the primary key. Idempotent.

    Each re-encrypted secret writes one audit row in the same transaction. A secret that does not
    decrypt is left as it was and reported in `failed`; the others are still rotated."""
    result = RotationResult()
    for pk in Connection.objects.exclude(secret="").order_by("pk").values_list("pk", flat=True).iterator():
        with transaction.atomic():
            connection = Connection.objects.select_for_update().get(pk=pk)
            if not connection.secret:
                continue
            try:
                previous_key_id = crypto.key_id_of(connection.secret)
                # Decrypted even when already under the primary key: a key of that id with other
                # bytes (a mistyped ring) must fail here, not pass as "current".
                plaintext = crypto.decrypt(connection.secret, context=connection.secret_context)
                if not crypto.needs_rotation(connection.secret):
                    result.current += 1
                    continue
            except crypto.DecryptionError as exc:
                # DecryptionError never carries the secret or ciphertext; its message names a key id at most.
                result.failed.append(
                    RotationFailure(
                        connection_id=connection.pk, company_slug=connection.company.slug, reason=str(exc)
                    )
                )
                continue
            connection.secret = crypto.encrypt(plaintext, context=connection.secret_context)
            connection.save(update_fields=["secret"])
            audit_record(
                company=connection.company,
                action="connection.secret_rotated",
                actor=actor,
                target=f"{connection.provider}:{connection.pk}",
                detail={"from_key_id": previous_key_id, "to_key_id": crypto.key_ring().primary_id},
            )
            result.rotated += 1
    return result


# --- Sync runs: single flight through a database lease (compare-and-set), never a lock held across HTTP.


def sync_lease_seconds() -> int:
    # Longer than the hard time limit, so a live task never loses its lease; a killed one's lease lapses.
    return settings.CELERY_TASK_TIME_LIMIT + 60


def sync_claim(*, connection_id: int) -> str | None:
    """Claim the connection for one sync and show it syncing. Returns a lease token, or None if
    another sync holds it or it is disconnected, has no stored key or does not exist (nothing is
    changed then). A task's id can be anything: one no row holds claims nothing."""
    now = timezone.now()
    token = std_secrets.token_hex(16)
    claimed = rows.update(
        Connection,
        {
            "pk": connection_id,
            "state__ne": ConnectionState.DISCONNECTED,
            "secret__ne": "",
            "sync_lease_until__lt_or_null": now,
        },
        sync_lease_until=now + timedelta(seconds=sync_lease_seconds()),
        sync_lease_token=token,
        # In the claim's statement, not one of its own: a small sync makes ~35 statements.
        state=ConnectionState.SYNCING,
        last_sync_attempt_at=now,
        sync_progress={"phase": "starting"},
    )
    return token if claimed == 1 else None


def connection_hold_for_write(*, connection_id: int, generation: int, progress: dict | None = None) -> bool:
    """In a sync's write transaction: lock the connection's row if it is still connected under the
    sync's generation, move the data version that cached reports are keyed by, and show `progress`
    if given. False (nothing changed) if it was disconnected or its key replaced. One UPDATE:
    PostgreSQL re-evaluates its WHERE clause against a concurrent disconnect's committed row."""
    assert transaction.get_connection().in_atomic_block, "hold the connection inside the write transaction"
    shown = {} if progress is None else {"sync_progress": progress}
    held = rows.update(
        Connection,
        {"pk": connection_id, "generation": generation, "state__ne": ConnectionState.DISCONNECTED},
        data_version=F("data_version") + 1,
        **shown,
    )
    return held == 1


def sync_release(*, connection_id: int, token: str) -> None:
    rows.update(
        Connection,
        {"pk": connection_id, "sync_lease_token": token},
        sync_lease_until=None,
        sync_lease_token="",
    )


def sync_run_start(*, connection: Connection, trigger: str, attempt: int = 1) -> SyncRun:
    """Open a run. Called with the lease held (sync_claim, which showed the connection syncing), so
    any other run still marked running belongs to a worker that died (its lease lapsed): close it as
    failed so the log tells the truth."""
    now = timezone.now()
    orphans = rows.get_all(SyncRun, connection_id=connection.pk, status=SyncRunStatus.RUNNING)
    for orphan in orphans:
        if orphan.generation != connection.generation:
            # Stopped by a disconnect or a replaced key: if its worker still runs, it ends it as
            # aborted itself (and says so); if not, this says no more than that.
            SyncRun.objects.filter(pk=orphan.pk, status=SyncRunStatus.RUNNING).update(
                status=SyncRunStatus.ABORTED, finished_at=now, error_summary="aborted_disconnected"
            )
            continue
        SyncRun.objects.filter(pk=orphan.pk).update(
            status=SyncRunStatus.FAILED, finished_at=now, error_summary="worker_lost"
        )
        sync_event_add(
            connection=connection,
            run=orphan,
            kind=EventKind.SYNC,
            code="sync_worker_lost",
            level=EventLevel.ERROR,
            message="This sync's worker stopped without finishing (killed or crashed); the next run completes it.",
        )
    run = rows.insert(
        SyncRun,
        company_id=connection.company_id,
        connection=connection,
        trigger=trigger,
        attempt=attempt,
        generation=connection.generation,
    )
    sync_event_add(
        connection=connection,
        run=run,
        kind=EventKind.SYNC,
        code="sync_started",
        message=f"Sync started ({trigger}{', attempt ' + str(attempt) if attempt > 1 else ''}).",
    )
    return run


def sync_run_record_skip(*, connection: Connection, trigger: str, reason: str) -> SyncRun:
    now = timezone.now()
    run = rows.insert(
        SyncRun,
        company_id=connection.company_id,
        connection=connection,
        trigger=trigger,
        status=SyncRunStatus.SKIPPED,
        started_at=now,  # One instant: a skipped run took no time (not -1 µs).
        finished_at=now,
        error_summary=reason,
    )
    sync_event_add(connection=connection, run=run, kind=EventKind.SYNC, code="sync_skipped", message=reason)
    return run


def sync_run_finish(
    *,
    run: SyncRun,
    status: str,
    message: str,
    level: str = EventLevel.INFO,
    error_summary: str = "",
    detail: dict | None = None,
    complete_through=None,
    reported_from: date | None = None,
) -> None:
    """Close a run and set the connection's state from its outcome. `reported_from`: the first day of
    the provider's daily activity the run read in full, through `complete_through`; those days are
    added to the connection's reported days (integrations.coverage). The run's connection must have
    been read after the sync's claim."""
    now = timezone.now()
    run.status, run.finished_at, run.error_summary = status, now, log_scrub.scrub(error_summary)
    rows.update(
        SyncRun,
        {"pk": run.pk},
        status=run.status,
        finished_at=run.finished_at,
        error_summary=run.error_summary,
        requests_made=run.requests_made,
        rows_written=run.rows_written,
        keys_seen=run.keys_seen,
        keys_fetched=run.keys_fetched,
    )
    # Only the generation the sync ran under: after a disconnect (which may have deleted the usage
    # and forgotten its days) or a replaced key, the connection's state is no longer this run's.
    live = Connection.objects.filter(pk=run.connection_id, generation=run.connection.generation).exclude(
        state=ConnectionState.DISCONNECTED
    )
    interval = timedelta(minutes=settings.OPENROUTER_SYNC_INTERVAL_MINUTES)
    if status == SyncRunStatus.SUCCEEDED:
        updates = {
            "state": ConnectionState.CONNECTED,
            "last_synced_at": now,
            "attention_reason": "",
            "sync_progress": {},
            "next_sync_at": now + interval,
        }
        if complete_through is not None:
            updates["complete_through"] = complete_through
        if reported_from is None or complete_through is None:
            live.update(**updates)
        else:
            with transaction.atomic():
                # Read under the row's lock (doow.rows: every sync of every connection ends here), so
                # the reported days are merged into the days as stored now, not as read at the start.
                current = rows.get_one(Connection, pk=run.connection_id, for_update=True)
                if current is not None and _is_live(current, run.connection.generation):
                    updates["reported_spans"] = coverage.add(
                        current.reported_spans, reported_from, complete_through
                    )
                    rows.update(Connection, {"pk": current.pk}, **updates)
    elif status in (SyncRunStatus.PARTIAL, SyncRunStatus.FAILED, SyncRunStatus.DEFERRED):
        # Keep needs_attention if a permanent error set it; otherwise back to connected, due again soon.
        live.exclude(state=ConnectionState.NEEDS_ATTENTION).update(
            state=ConnectionState.CONNECTED,
            sync_progress={},
            next_sync_at=now + min(interval, timedelta(minutes=15)),
        )
        live.filter(state=ConnectionState.NEEDS_ATTENTION).update(sync_progress={})
    sync_event_add(
        connection=run.connection,
        run=run,
        kind=EventKind.SYNC,
        code=f"sync_{status}",
        level=level,
        message=message,
        detail={
            "requests": run.requests_made,
            "rows_written": run.rows_written,
            "keys_seen": run.keys_seen,
            "keys_fetched": run.keys_fetched,
            **(detail or {}),
        },
    )


def _is_live(connection: Connection, generation: int) -> bool:
    """Still connected under the generation a sync ran with (its row read under lock)."""
    return connection.generation == generation and connection.state != ConnectionState.DISCONNECTED


def connections_due(*, now=None, limit: int = 5000) -> list[int]:
    now = now or timezone.now()
    return list(
        Connection.objects.filter(state__in=[ConnectionState.CONNECTED, ConnectionState.SYNCING])
        .filter(Q(next_sync_at__isnull=True) | Q(next_sync_at__lte=now))
        .exclude(secret="")
        .order_by("next_sync_at")
        .values_list("pk", flat=True)[:limit]
    )


PRUNE_BATCH = 5000


def event_log_prune(*, older_than: timedelta, now=None) -> tuple[int, int]:
    """Delete the sync events, then the runs, older than `older_than`; returns (events, runs).

    Both tables only grow (hourly syncs of thousands of connections). Rows are deleted by id in
    short batches, each its own transaction, so the log stays writable meanwhile. Ids grow with
    time, so the first id young enough to keep is found by walking the primary key from the oldest
    row: a few rows once the log has been pruned before. Each connection's newest run is kept: its
    page header shows it."""
    cutoff = (now or timezone.now()) - older_than
    events = _delete_by_id(
        SyncEvent.objects.all(), _first_id_from(SyncEvent.objects.filter(created_at__gte=cutoff))
    )
    newer_run = SyncRun.objects.filter(connection_id=OuterRef("connection_id"), pk__gt=OuterRef("pk"))
    runs = _delete_by_id(
        SyncRun.objects.filter(Exists(newer_run)),
        _first_id_from(SyncRun.objects.filter(started_at__gte=cutoff)),
    )
    return events, runs


def _first_id_from(young) -> int | None:
    """The smallest id among `young` rows, or None if there is none (every row is old)."""
    return young.order_by("pk").values_list("pk", flat=True).first()


def _delete_by_id(candidates, first_kept_id: int | None) -> int:
    old = candidates if first_kept_id is None else candidates.filter(pk__lt=first_kept_id)
    deleted = 0
    while batch := list(old.order_by("pk").values_list("pk", flat=True)[:PRUNE_BATCH]):
        deleted += candidates.model.objects.filter(pk__in=batch).delete()[0]
    return deleted
