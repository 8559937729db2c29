"""One sync of one OpenRouter connection: pull, normalise, write.

Reads only (never /generation or a write endpoint). Organization scope walks workspaces, every key
page of every workspace, the activity of keys whose counters moved, account-wide activity (for
usage of deleted or unlisted keys), credits and members. Single-key scope snapshots /key.

Writes happen in short transactions that first lock the connection row and re-check that it is
still connected under the same generation, so a disconnect during a sync stops all further writes.
Each key's rows are replaced atomically together with the marker that says they are fresh, so a
failure part-way leaves consistent data and the next run fetches only what is still stale.
"""

import logging
import queue
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from integrations.crypto import DecryptionError
from integrations.models import (
    Connection,
    ConnectionState,
    CredentialScope,
    EventKind,
    EventLevel,
    SyncRunStatus,
)
from integrations.providers import ProviderError
from integrations.services import (
    connection_mark_attention,
    connection_secret,
    sync_claim,
    sync_event_add,
    sync_release,
    sync_run_finish,
    sync_run_record_skip,
    sync_run_start,
)
from openrouter import normalize
from openrouter.client import OpenRouterClient, RateLimited
from openrouter.models import ApiKey, ApiKeySnapshot, CreditsSnapshot, Member, Model, Workspace
from openrouter.schemas import COUNTER_FIELDS, KeyRecord
from usage.selectors import METRICS, usage_attributed_sums
from usage.services import usage_replace

logger = logging.getLogger(__name__)

ACTIVITY_DAYS = 30  # OpenRouter's /activity covers the last 30 completed UTC days.

PERMANENT_HINTS = {
    "http_401": "OpenRouter refused the stored key (401): it was probably revoked or expired. Reconnect with a valid management key.",
    "http_403": "OpenRouter refused access (403): the key lacks organization scope or belongs to another organization. Use a management key of this organization.",
    "http_402": "OpenRouter answered 402 (payment required): the account has no credits left for this request.",
    "http_404": "OpenRouter does not know this endpoint for this account (404).",
}


class Aborted(Exception):
    """The connection was disconnected (or reconnected) while this sync ran."""


@dataclass
class SyncResult:
    status: str
    retry: bool = False
    retry_after: float | None = None
    run_id: int | None = None


def activity_window(today: date) -> tuple[date, date]:
    return today - timedelta(days=ACTIVITY_DAYS), today - timedelta(days=1)


def sync_connection(
    connection_id: int,
    *,
    trigger: str = "scheduled",
    attempt: int = 1,
    transport=None,
    sleep: Callable[[float], None] = time.sleep,
    now: datetime | None = None,
    base_url: str | None = None,
) -> SyncResult:
    """Run one sync in the calling process. Safe to call concurrently: only one holds the lease."""
    connection = Connection.objects.select_related("company").filter(pk=connection_id).first()
    if connection is None or connection.state == ConnectionState.DISCONNECTED or not connection.secret:
        return SyncResult(status=SyncRunStatus.SKIPPED)
    token = sync_claim(connection_id=connection_id)
    if token is None:
        run = sync_run_record_skip(
            connection=connection,
            trigger=trigger,
            reason="Skipped: another sync of this connection is running.",
        )
        return SyncResult(status=SyncRunStatus.SKIPPED, run_id=run.pk)
    try:
        return _run_claimed(connection, trigger, attempt, transport, sleep, now, base_url)
    finally:
        sync_release(connection_id=connection_id, token=token)


def _run_claimed(connection, trigger, attempt, transport, sleep, now, base_url) -> SyncResult:
    run = sync_run_start(connection=connection, trigger=trigger, attempt=attempt)
    try:
        secret = connection_secret(connection)
    except DecryptionError:
        sync_run_finish(
            run=run,
            status=SyncRunStatus.FAILED,
            level=EventLevel.ERROR,
            message="Sync failed: the stored key could not be decrypted. No request was made.",
            error_summary="decrypt_failed",
        )
        return SyncResult(status=SyncRunStatus.FAILED, run_id=run.pk)

    events: queue.SimpleQueue = queue.SimpleQueue()
    client = OpenRouterClient(
        secret,
        base_url=base_url,
        transport=transport,
        sleep=sleep,
        on_event=lambda code, detail: events.put((code, detail)),
        max_inline_wait=min(60.0, settings.CELERY_RETRY_DELAY_CAP),
    )
    del secret
    job = _SyncJob(connection=connection, run=run, client=client, events=events, now=now or timezone.now())
    try:
        job.execute()
    except Aborted:
        job.flush_events()
        sync_run_finish(
            run=run,
            status=SyncRunStatus.ABORTED,
            level=EventLevel.WARNING,
            message="Sync aborted: the connection was disconnected while it ran. Nothing more was written.",
            error_summary="aborted_disconnected",
        )
        return SyncResult(status=SyncRunStatus.ABORTED, run_id=run.pk)
    except ProviderError as exc:
        job.flush_events()
        return _finish_provider_error(connection, run, job, exc)
    except SoftTimeLimitExceeded:
        job.flush_events()
        sync_run_finish(
            run=run,
            status=SyncRunStatus.PARTIAL if job.wrote_anything else SyncRunStatus.FAILED,
            level=EventLevel.ERROR,
            message="Sync stopped at its time limit; the next run continues where it stopped.",
            error_summary="time_limit",
        )
        return SyncResult(status=SyncRunStatus.FAILED, run_id=run.pk)
    except Exception:
        logger.exception("Sync of connection %s failed unexpectedly", connection.pk)
        job.flush_events()
        sync_run_finish(
            run=run,
            status=SyncRunStatus.FAILED,
            level=EventLevel.ERROR,
            message="Sync failed with an internal error; it has been logged and will be retried.",
            error_summary="internal_error",
        )
        return SyncResult(status=SyncRunStatus.FAILED, retry=True, run_id=run.pk)
    finally:
        client.close()
    job.flush_events()
    sync_run_finish(
        run=run,
        status=SyncRunStatus.SUCCEEDED,
        message=f"Sync finished: {run.keys_seen} keys seen, {run.keys_fetched} fetched, "
        f"{run.rows_written} rows written, {run.requests_made} requests.",
        complete_through=job.complete_through,
    )
    return SyncResult(status=SyncRunStatus.SUCCEEDED, run_id=run.pk)


def _finish_provider_error(connection, run, job, exc: ProviderError) -> SyncResult:
    partial = job.wrote_anything
    if exc.permanent:
        reason = PERMANENT_HINTS.get(exc.code, exc.message)
        connection_mark_attention(
            connection=connection,
            reason=reason,
            code="credential_refused" if exc.code in ("http_401", "http_403") else exc.code,
            kind=EventKind.CREDENTIAL if exc.code in ("http_401", "http_403") else EventKind.SCOPE,
            run=run,
            detail={"status": exc.code, "provider_message": exc.message},
        )
        sync_run_finish(
            run=run,
            status=SyncRunStatus.PARTIAL if partial else SyncRunStatus.FAILED,
            level=EventLevel.ERROR,
            message=f"Sync stopped: {reason} Not retried.",
            error_summary=exc.code,
        )
        return SyncResult(status=SyncRunStatus.FAILED, run_id=run.pk)
    cap = settings.CELERY_RETRY_DELAY_CAP
    if isinstance(exc, RateLimited) and exc.retry_after is not None and exc.retry_after > cap:
        sync_run_finish(
            run=run,
            status=SyncRunStatus.DEFERRED,
            level=EventLevel.WARNING,
            message=f"OpenRouter asked to wait {int(exc.retry_after)} s, longer than Doow waits in a worker "
            f"({cap} s); the next scheduled sync continues.",
            error_summary="rate_limited",
            detail={"retry_after": exc.retry_after},
        )
        return SyncResult(status=SyncRunStatus.DEFERRED, run_id=run.pk)
    status = SyncRunStatus.PARTIAL if partial else SyncRunStatus.FAILED
    sync_run_finish(
        run=run,
        status=status,
        level=EventLevel.ERROR,
        message=f"Sync {'incomplete' if partial else 'failed'} after retries: {exc.message} "
        + ("What was fetched is kept; the next run completes it." if partial else "It will be retried."),
        error_summary=exc.code,
        detail={"retry_after": exc.retry_after} if exc.retry_after is not None else None,
    )
    return SyncResult(status=status, retry=True, retry_after=exc.retry_after, run_id=run.pk)


class _SyncJob:
    def __init__(
        self, *, connection: Connection, run, client: OpenRouterClient, events: queue.SimpleQueue, now
    ):
        self.connection = connection
        self.run = run
        self.client = client
        self.events = events
        self.now = now
        self.today = now.date()
        self.window_start, self.window_end = activity_window(self.today)
        self.generation = connection.generation
        self.wrote_anything = False
        self.complete_through: date | None = None
        self.all_keys_fresh = True

    # --- bookkeeping

    def flush_events(self) -> None:
        self.run.requests_made = self.client.requests_made
        while True:
            try:
                code, detail = self.events.get_nowait()
            except queue.Empty:
                return
            if code == "rate_limited":
                wait = detail.get("retry_after")
                sync_event_add(
                    connection=self.connection,
                    run=self.run,
                    kind=EventKind.RATE_LIMIT,
                    code="rate_limited",
                    level=EventLevel.WARNING,
                    message=f"OpenRouter rate-limited {detail['path']}"
                    + (f"; it asked to wait {wait:g} s." if wait is not None else "."),
                    detail=detail,
                )
            else:
                sync_event_add(
                    connection=self.connection,
                    run=self.run,
                    kind=EventKind.RETRY,
                    code=code,
                    level=EventLevel.WARNING,
                    message=f"Retrying {detail['path']} (attempt {detail.get('attempt')}): {detail.get('reason') or detail.get('error', '')}",
                    detail=detail,
                )

    def progress(self, phase: str, done: int = 0, total: int = 0) -> None:
        self.flush_events()
        Connection.objects.filter(pk=self.connection.pk, generation=self.generation).exclude(
            state=ConnectionState.DISCONNECTED
        ).update(sync_progress={"phase": phase, "done": done, "total": total})

    def guarded(self, write: Callable[[], object]):
        """Run `write` in a transaction holding the connection row, only if still connected."""
        with transaction.atomic():
            row = (
                Connection.objects.select_for_update()
                .filter(pk=self.connection.pk)
                .values("state", "generation")
                .first()
            )
            if (
                row is None
                or row["state"] == ConnectionState.DISCONNECTED
                or row["generation"] != self.generation
            ):
                raise Aborted
            result = write()
        self.wrote_anything = True
        return result

    def ids(self) -> dict:
        return {"company_id": self.connection.company_id, "connection_id": self.connection.pk}

    # --- the sync

    def execute(self) -> None:
        if self.connection.scope == CredentialScope.SINGLE_KEY:
            self.sync_single_key()
        else:
            self.sync_organization()
        self.flush_events()

    def sync_single_key(self) -> None:
        self.progress("reading the key's counters")
        current = self.client.get_key()
        key_hash = self.connection.external_account_id
        record = KeyRecord(
            hash=key_hash,
            # OpenRouter's label of a key is a masked copy of it: show the label checked at connect time.
            name=self.connection.config.get("key_label") or self.connection.masked_secret,
            label=self.connection.config.get("key_label") or self.connection.masked_secret,
            disabled=False,
            workspace_id=current.workspace_id or "",
            creator_user_id=current.creator_user_id,
            limit=current.limit,
            limit_remaining=current.limit_remaining,
            limit_reset=None,
            created_at=None,
            updated_at=None,
            expires_at=None,
            last_used_at=None,
            counters=current.counters,
        )
        self.guarded(lambda: self.store_keys([record]))
        self.run.keys_seen = 1

    def sync_organization(self) -> None:
        self.progress("reading credits")
        credits = self.client.get_credits()
        self.guarded(
            lambda: CreditsSnapshot.objects.create(
                **self.ids(),
                taken_at=self.now,
                total_credits=credits.total_credits,
                total_usage=credits.total_usage,
            )
        )
        self.refresh_models_if_stale()
        workspace_ids = self.sync_workspaces()
        self.sync_members()
        self.sync_keys(workspace_ids)
        self.sync_account_activity()

    def refresh_models_if_stale(self) -> None:
        newest = Model.objects.order_by("-refreshed_at").values_list("refreshed_at", flat=True).first()
        if newest is not None and newest > self.now - timedelta(days=1):
            return
        self.progress("reading the model catalog")
        models_upsert(self.client.get_models(), now=self.now)

    def sync_workspaces(self) -> list[str]:
        self.progress("reading workspaces")
        try:
            records = list(self.client.iter_workspaces())
        except ProviderError as exc:
            if exc.code != "http_404":
                raise
            return [""]  # An account without workspaces: its keys are all in the default listing.

        def write():
            Workspace.objects.bulk_create(
                [
                    Workspace(
                        **self.ids(), workspace_id=w.id, name=w.name, slug=w.slug, created_at=w.created_at
                    )
                    for w in records
                ],
                update_conflicts=True,
                unique_fields=["connection", "workspace_id"],
                update_fields=["name", "slug", "created_at"],
            )

        self.guarded(write)
        return [w.id for w in records] or [""]

    def sync_members(self) -> None:
        self.progress("reading organization members")
        try:
            records = list(self.client.iter_members())
        except ProviderError as exc:
            if exc.code not in ("http_404", "http_403"):
                raise
            return  # A personal account has no organization members.
        if not records:
            return
        self.guarded(
            lambda: Member.objects.bulk_create(
                [
                    Member(
                        **self.ids(),
                        user_id=m.id,
                        email=m.email,
                        first_name=m.first_name,
                        last_name=m.last_name,
                        role=m.role,
                    )
                    for m in records
                ],
                update_conflicts=True,
                unique_fields=["connection", "user_id"],
                update_fields=["email", "first_name", "last_name", "role"],
            )
        )

    def sync_keys(self, workspace_ids: list[str]) -> None:
        listed_before = self.now
        pages_done = 0
        with ThreadPoolExecutor(max_workers=max(1, settings.OPENROUTER_CONCURRENCY)) as pool:
            for workspace_id in workspace_ids:
                for page in self.client.iter_key_pages(workspace_id=workspace_id or None):
                    pages_done += 1
                    self.run.keys_seen += len(page)
                    stale = self.guarded(lambda page=page: self.store_keys(page))
                    self.fetch_activity(stale, pool)
                    self.progress("reading keys and their activity", self.run.keys_seen, 0)
        # Every page was read: keys no longer listed have been deleted in OpenRouter.
        self.guarded(
            lambda: (
                ApiKey.objects.filter(connection_id=self.connection.pk, missing_since__isnull=True)
                .exclude(last_listed_at__gte=listed_before)
                .update(missing_since=self.now)
            )
        )

    def store_keys(self, page: list[KeyRecord]) -> list[KeyRecord]:
        """Upsert the keys' state and today's counter snapshot; return the keys whose activity is stale."""
        known = {
            row["key_hash"]: row
            for row in ApiKey.objects.filter(
                connection_id=self.connection.pk, key_hash__in=[k.hash for k in page]
            ).values(
                "key_hash",
                "fetched_usage",
                "fetched_byok_usage",
                "fetched_last_used_at",
                "activity_fetched_through",
            )
        }
        ApiKey.objects.bulk_create(
            [
                ApiKey(
                    **self.ids(),
                    key_hash=k.hash,
                    name=k.name,
                    label=k.label,
                    workspace_id=k.workspace_id,
                    creator_user_id=k.creator_user_id or "",
                    disabled=k.disabled,
                    expires_at=k.expires_at,
                    limit=k.limit,
                    limit_remaining=k.limit_remaining,
                    limit_reset=k.limit_reset or "",
                    created_at=k.created_at,
                    updated_at=k.updated_at,
                    last_used_at=k.last_used_at,
                    missing_since=None,
                    last_listed_at=self.now,
                    **{name: getattr(k.counters, name) for name in COUNTER_FIELDS},
                )
                for k in page
            ],
            update_conflicts=True,
            unique_fields=["connection", "key_hash"],
            update_fields=[
                "name",
                "label",
                "workspace_id",
                "creator_user_id",
                "disabled",
                "expires_at",
                "limit",
                "limit_remaining",
                "limit_reset",
                "created_at",
                "updated_at",
                "last_used_at",
                "missing_since",
                "last_listed_at",
                *COUNTER_FIELDS,
            ],
        )
        ApiKeySnapshot.objects.bulk_create(
            [
                ApiKeySnapshot(
                    **self.ids(),
                    key_hash=k.hash,
                    day=self.today,
                    taken_at=self.now,
                    limit_remaining=k.limit_remaining,
                    **{name: getattr(k.counters, name) for name in COUNTER_FIELDS},
                )
                for k in page
            ],
            update_conflicts=True,
            unique_fields=["connection", "key_hash", "day"],
            update_fields=["taken_at", "limit_remaining", *COUNTER_FIELDS],
        )
        return [k for k in page if self.is_stale(k, known.get(k.hash))]

    def is_stale(self, key: KeyRecord, known: dict | None) -> bool:
        """Fetch a key's activity when its counters moved since the last fetch, or once a new UTC day
        has completed since then; an unchanged key costs no request."""
        if self.connection.scope == CredentialScope.SINGLE_KEY:
            return False
        if known is None or known["activity_fetched_through"] is None:
            return True
        if known["activity_fetched_through"] < self.window_end:
            return True
        return (
            known["fetched_usage"] != key.counters.usage
            or known["fetched_byok_usage"] != key.counters.byok_usage
            or known["fetched_last_used_at"] != key.last_used_at
        )

    def fetch_activity(self, stale: list[KeyRecord], pool: ThreadPoolExecutor) -> None:
        if not stale:
            return
        results = pool.map(lambda k: (k, self.client.get_activity(api_key_hash=k.hash)), stale)
        fetched: list[tuple[KeyRecord, list]] = []
        try:
            for result in results:
                fetched.append(result)
        finally:
            # Keys fetched before a failure are written, so the next run skips them.
            if fetched:
                self.guarded(lambda: self.store_activity(fetched))

    def store_activity(self, fetched: list[tuple[KeyRecord, list]]) -> None:
        rows: dict = {}
        for key, records in fetched:
            rows.update(
                normalize.aggregate_activity(records, api_key_hash=key.hash, workspace_id=key.workspace_id)
            )
        self.run.rows_written += usage_replace(
            **self.ids(),
            rows=rows.items(),
            start=self.window_start,
            end=self.window_end,
            api_key_hashes=[key.hash for key, _ in fetched],
        )
        # Mark the keys fresh in the same transaction as their rows (two queries per batch, not per key).
        records = {key.hash: key for key, _records in fetched}
        stored = list(
            ApiKey.objects.filter(connection_id=self.connection.pk, key_hash__in=list(records)).only(
                "pk", "key_hash"
            )
        )
        for api_key in stored:
            key = records[api_key.key_hash]
            api_key.fetched_usage = key.counters.usage
            api_key.fetched_byok_usage = key.counters.byok_usage
            api_key.fetched_last_used_at = key.last_used_at
            api_key.activity_fetched_at = self.now
            api_key.activity_fetched_through = self.window_end
        ApiKey.objects.bulk_update(
            stored,
            [
                "fetched_usage",
                "fetched_byok_usage",
                "fetched_last_used_at",
                "activity_fetched_at",
                "activity_fetched_through",
            ],
            batch_size=500,
        )
        self.run.keys_fetched += len(fetched)

    def sync_account_activity(self) -> None:
        """Account-wide activity minus listed keys' rows = usage of deleted or unlisted keys."""
        self.progress("reconciling account-wide activity")
        records = self.client.get_activity(group_by_workspace=True)
        account = normalize.aggregate_activity(records)

        def write():
            attributed = {}
            for row in usage_attributed_sums(
                connection_id=self.connection.pk, start=self.window_start, end=self.window_end
            ):
                values = normalize.UsageValues(model="")
                for name in METRICS:
                    setattr(values, name, row[f"{name}_sum"] or 0)
                attributed[
                    (row["day"], row["workspace_id"], row["model_permaslug"], row["provider_name"])
                ] = values
            rest = normalize.unattributed(account, attributed)
            for (_day, _ws, _hash, permaslug, _provider), values in rest.items():
                if not values.model:
                    values.model = permaslug
            negative = [k for k, v in rest.items() if v.spend_usd < 0 or v.requests < 0]
            if negative:
                sync_event_add(
                    connection=self.connection,
                    run=self.run,
                    kind=EventKind.SYNC,
                    code="reconciliation_mismatch",
                    level=EventLevel.WARNING,
                    message=f"Listed keys account for more than OpenRouter's account-wide activity on "
                    f"{len(negative)} day/model rows; the difference is recorded so totals match OpenRouter.",
                )
            self.run.rows_written += usage_replace(
                **self.ids(),
                rows=rest.items(),
                start=self.window_start,
                end=self.window_end,
                api_key_hashes=[""],
            )

        self.guarded(write)
        self.complete_through = self.window_end


def models_upsert(records, *, now) -> int:
    Model.objects.bulk_create(
        [
            Model(
                slug=m.slug,
                permaslug=m.permaslug,
                name=m.name,
                context_length=m.context_length,
                prompt_price=m.prompt_price,
                completion_price=m.completion_price,
                refreshed_at=now,
            )
            for m in records
        ],
        update_conflicts=True,
        unique_fields=["slug"],
        update_fields=[
            "permaslug",
            "name",
            "context_length",
            "prompt_price",
            "completion_price",
            "refreshed_at",
        ],
    )
    return len(records)
