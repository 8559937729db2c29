"""One sync of one OpenRouter connection: pull, normalise, write.

Reads only (never /generation or a write endpoint). Organization scope reads credits, workspaces,
members, account-wide activity (for usage of deleted or unlisted keys), then every key page of every
workspace and the activity of keys whose counters moved. Single-key scope snapshots /key.

Writes happen in short transactions that first lock the connection row and re-check that it is
still connected under the same generation, so a disconnect during a sync stops all further writes.
Each key's rows are replaced atomically together with the marker that says they are fresh, so a
failure part-way leaves consistent data and the next run fetches only what is still stale.

What is read is queued and written every OPENROUTER_WRITE_BATCH_KEYS keys, so a small organization's
whole sync is one write transaction: at thousands of connections, per-transaction costs are what the workers
spend most of their time on.
"""

import logging
import queue
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from decimal import ROUND_HALF_UP, Decimal

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.cache import cache
from django.db import connection as django_connection
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from doow import bulk, rows
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
from integrations.selectors import connection_find
from integrations.services import (
    connection_hold_for_write,
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
from openrouter.client import ListingStuck, OpenRouterClient, RateLimited, RequestRejected
from openrouter.models import ApiKey, ApiKeySnapshot, CreditsSnapshot, Member, Model, Workspace
from openrouter.schemas import COUNTER_FIELDS, KeyRecord
from usage.selectors import METRICS, usage_attributed_sums
from usage.services import PreparedUsage, usage_prepare, usage_replace, usage_summaries_rebuild

logger = logging.getLogger(__name__)

FETCH_MARKER_FIELDS = (
    "fetched_usage",
    "fetched_byok_usage",
    "fetched_last_used_at",
    "activity_fetched_at",
    "activity_fetched_through",
)
PAGE_SIZE_CONFIG = "keys_page_size"  # the /keys page size last seen (Connection.config)
ACTIVITY_DAYS = 30  # OpenRouter's /activity covers the last 30 completed UTC days.
# An /activity answer received this close to (or after) the UTC midnight that ends the sync's
# day may already cover the next window (one day later): our clock and OpenRouter's differ a little.
MIDNIGHT_MARGIN = timedelta(minutes=5)
# A phase shown less than this long after the previous one waits for the next write transaction:
# a small sync's phases pass in milliseconds, and one UPDATE each would double its statements.
PROGRESS_INTERVAL_SECONDS = 1.0

PERMANENT_HINTS = {
    "http_401": "OpenRouter refused the stored key (401): it was probably revoked or expired. An admin can paste a valid one with Replace key (Company settings).",
    "http_403": "OpenRouter refused access (403): the key lacks organization scope or belongs to another organization. An admin can paste a management key of this organization with Replace key (Company settings).",
    "http_402": "OpenRouter answered 402 (payment required): the account has no credits left for this request.",
    "http_404": "OpenRouter does not know this endpoint for this account (404).",
}


class Aborted(Exception):
    """The connection was disconnected, or its key replaced, while this sync ran."""


class FetchStopped(Exception):
    """An activity fetch not sent because another one had failed (never the error a run ends with)."""


@dataclass
class SyncResult:
    status: str
    retry: bool = False
    retry_after: float | None = None
    run_id: int | None = None
    keys_seen: int = 0


# The scale of the fetch markers the key counters are compared with.
FETCHED_USAGE_STEP = Decimal(1).scaleb(-ApiKey._meta.get_field("fetched_usage").decimal_places)


def as_stored(amount: Decimal) -> Decimal:
    """An amount as the fetch markers keep it (rounded as PostgreSQL rounds on input), so a counter
    read again compares equal to the stored one however many digits OpenRouter sends."""
    return amount.quantize(FETCHED_USAGE_STEP, ROUND_HALF_UP)


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
    # Claimed before it is read, so what it is read with includes everything the sync that held it
    # before wrote (its reported days, which this one's are merged into).
    token = sync_claim(connection_id=connection_id)
    connection = connection_find(connection_id)
    if token is None:
        if connection is None or connection.state == ConnectionState.DISCONNECTED or not connection.secret:
            return SyncResult(status=SyncRunStatus.SKIPPED)
        run = sync_run_record_skip(
            connection=connection,
            trigger=trigger,
            reason="Skipped: another sync of this connection is running.",
        )
        return SyncResult(status=SyncRunStatus.SKIPPED, run_id=run.pk)
    try:
        if connection is None:  # deleted since the claim
            return SyncResult(status=SyncRunStatus.SKIPPED)
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
        return _finish_aborted(run)
    except ProviderError as exc:
        job.flush_events()
        return _finish_provider_error(connection, run, job, exc)
    except SoftTimeLimitExceeded:
        job.flush_events()
        status = SyncRunStatus.PARTIAL if job.wrote_anything else SyncRunStatus.FAILED
        sync_run_finish(
            run=run,
            status=status,
            level=EventLevel.ERROR,
            message="Sync stopped at its time limit; the next run continues where it stopped.",
            error_summary="time_limit",
        )
        return SyncResult(status=status, run_id=run.pk, keys_seen=run.keys_seen)
    except Exception as exc:
        # Not logger.exception: an exception's message or its frames' variables may hold the key
        # (whole or in part, which no pattern recognises), and log filters scrub only the message.
        logger.error("Sync of connection %s failed unexpectedly: %s", connection.pk, describe_failure(exc))
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

    def succeeded() -> None:
        sync_run_finish(
            run=run,
            status=SyncRunStatus.SUCCEEDED,
            message=f"Sync finished: {run.keys_seen} keys seen, {run.keys_fetched} fetched, "
            f"{run.rows_written} rows written, {run.requests_made} requests.",
            complete_through=job.complete_through,
            reported_from=job.reported_from,
        )

    try:
        job.flush_events()
        succeeded()
    except SoftTimeLimitExceeded:
        # The limit landed after the last write: every row is stored, so the run succeeded, and
        # the hard limit leaves time to say so. Unrecorded, the run would stay "running", the
        # connection "syncing" and the days just written unreported.
        succeeded()
    return SyncResult(status=SyncRunStatus.SUCCEEDED, run_id=run.pk, keys_seen=run.keys_seen)


def describe_failure(exc: BaseException) -> str:
    """An exception's type and where it was raised, with those of the exceptions it chains, but
    none of their messages: enough to find the bug, and nothing a secret could be quoted in."""
    parts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        parts.append(
            f"{type(exc).__module__}.{type(exc).__qualname__} (message not logged)\n"
            + "".join(traceback.format_tb(exc.__traceback__))
        )
        exc = exc.__cause__ if exc.__cause__ is not None or exc.__suppress_context__ else exc.__context__
    return "\nraised while handling or from:\n".join(parts)


def _finish_aborted(run) -> SyncResult:
    sync_run_finish(
        run=run,
        status=SyncRunStatus.ABORTED,
        level=EventLevel.WARNING,
        message="Sync aborted: the connection was disconnected, or its key replaced, while it ran. "
        "Nothing more was written.",
        error_summary="aborted_disconnected",
    )
    return SyncResult(status=SyncRunStatus.ABORTED, run_id=run.pk)


def _finish_provider_error(connection, run, job, exc: ProviderError) -> SyncResult:
    partial = job.wrote_anything
    if exc.permanent:
        reason = PERMANENT_HINTS.get(exc.code, exc.message)
        flagged = connection_mark_attention(
            connection=connection,
            reason=reason,
            code="credential_refused" if exc.code in ("http_401", "http_403") else exc.code,
            kind=EventKind.CREDENTIAL if exc.code in ("http_401", "http_403") else EventKind.SCOPE,
            run=run,
            detail={"status": exc.code, "provider_message": exc.message},
        )
        if not flagged:
            # The old key, revoked once replaced (as the replacement asks), refused this sync's
            # requests; the sync the replacement queued reads with the new one.
            return _finish_aborted(run)
        sync_run_finish(
            run=run,
            status=SyncRunStatus.PARTIAL if partial else SyncRunStatus.FAILED,
            level=EventLevel.ERROR,
            message=f"Sync stopped: {reason} Not retried.",
            error_summary=exc.code,
        )
        return SyncResult(status=SyncRunStatus.FAILED, run_id=run.pk)
    if isinstance(exc, RequestRejected):
        # Not the credential's fault (no needs_attention), and the same request would be refused
        # again: no retry now; the next scheduled sync tries once more.
        status = SyncRunStatus.PARTIAL if partial else SyncRunStatus.FAILED
        sync_run_finish(
            run=run,
            status=status,
            level=EventLevel.ERROR,
            message=f"Sync {'incomplete' if partial else 'failed'}: {exc.message} Sending the same request "
            "again cannot help, so it was not retried; the next scheduled sync tries again."
            + (" What was fetched is kept." if partial else ""),
            error_summary=exc.code,
            detail={"status": exc.status},
        )
        return SyncResult(status=status, run_id=run.pk, keys_seen=run.keys_seen)
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
    return SyncResult(
        status=status, retry=True, retry_after=exc.retry_after, run_id=run.pk, keys_seen=run.keys_seen
    )


class _SyncJob:
    def __init__(
        self, *, connection: Connection, run, client: OpenRouterClient, events: queue.SimpleQueue, now
    ):
        self.connection = connection
        self.run = run
        self.client = client
        self.events = events
        self.now = now
        self.started = time.monotonic()
        self.today = now.date()
        self.window_start, self.window_end = activity_window(self.today)
        # From this moment an /activity answer may no longer cover window_start (see fetch_activity).
        self.window_may_shift_at = (
            datetime.combine(self.today + timedelta(days=1), clock_time.min, tzinfo=UTC) - MIDNIGHT_MARGIN
        )
        self.generation = connection.generation
        self.wrote_anything = False
        # Set when a fetch (or the sync) fails: activity fetches still queued are not sent.
        self.stop_fetching = threading.Event()
        self.fetch_failures: list[BaseException] = []  # the errors that set stop_fetching, in order
        self.complete_through: date | None = None
        self.reported_from: date | None = None  # the first day read in full, through complete_through
        # Hashes of listed keys whose activity was never stored (no usage rows exist for them yet).
        self.never_fetched: set[str] = set()
        # Keys read and activity fetched but not written yet: written every OPENROUTER_WRITE_BATCH_KEYS keys.
        # Keys are kept with when their page was read (see store_keys), activity with the first day
        # it covers (see fetch_activity).
        self.pending_keys: dict[str, tuple[KeyRecord, datetime]] = {}
        self.pending_activity: dict[str, tuple[KeyRecord, dict, date]] = {}
        # Organization-level records read (credits, workspaces, members), written with the next batch.
        self.pending_writes: list[Callable[[], object]] = []
        self.unshown_progress: dict | None = None
        self.progress_shown_at = time.monotonic()  # sync_claim showed "starting"

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
                self.event(
                    EventKind.RATE_LIMIT,
                    "rate_limited",
                    f"OpenRouter rate-limited {detail['path']}"
                    + (f"; it asked to wait {wait:g} s." if wait is not None else "."),
                    level=EventLevel.WARNING,
                    detail=detail,
                )
            else:
                self.event(
                    EventKind.RETRY,
                    code,
                    f"Retrying {detail['path']} (attempt {detail.get('attempt')}): "
                    f"{detail.get('reason') or detail.get('error', '')}",
                    level=EventLevel.WARNING,
                    detail=detail,
                )

    def event(self, kind: str, code: str, message: str, *, level: str = EventLevel.INFO, detail=None) -> None:
        """One line of this run in the connection's event log."""
        sync_event_add(
            connection=self.connection,
            run=self.run,
            kind=kind,
            code=code,
            level=level,
            message=message,
            detail=detail,
        )

    def progress(self, phase: str, done: int = 0, total: int = 0) -> None:
        self.flush_events()
        self.set_progress(phase, done, total)

    def set_progress(self, phase: str, done: int = 0, total: int = 0) -> None:
        """Show the phase now if the last one has been up a while, else with the next write."""
        self.queue_progress(phase, done, total)
        if time.monotonic() - self.progress_shown_at >= PROGRESS_INTERVAL_SECONDS:
            self.live_connection().update(sync_progress=self.take_unshown_progress())

    def queue_progress(self, phase: str, done: int = 0, total: int = 0) -> None:
        """Show the phase with the next write transaction (guarded)."""
        self.unshown_progress = {"phase": phase, "done": done, "total": total}

    def take_unshown_progress(self) -> dict:
        progress, self.unshown_progress = self.unshown_progress, None
        self.progress_shown_at = time.monotonic()
        return progress

    def live_connection(self):
        """The connection row, only while it is connected under this sync's generation."""
        return Connection.objects.filter(pk=self.connection.pk, generation=self.generation).exclude(
            state=ConnectionState.DISCONNECTED
        )

    def guarded(self, write: Callable[[], object]):
        """Run `write` in a transaction holding the connection row, only if still connected under the
        sync's generation (connection_hold_for_write: one UPDATE locks and re-checks the row, moves
        the data version that cached reports are keyed by, and shows any waiting progress)."""
        with transaction.atomic():
            progress = self.take_unshown_progress() if self.unshown_progress is not None else None
            held = connection_hold_for_write(
                connection_id=self.connection.pk, generation=self.generation, progress=progress
            )
            if not held:
                raise Aborted
            result = write()
        self.wrote_anything = True
        return result

    def ids(self) -> dict:
        return {"company_id": self.connection.company_id, "connection_id": self.connection.pk}

    def clock(self) -> datetime:
        """The time now, on the sync's clock (`now` at its start, which tests set)."""
        return self.now + timedelta(seconds=time.monotonic() - self.started)

    def fetch_activity(self, *, api_key_hash: str = "", default_workspace: str = "") -> tuple[dict, date]:
        """One /activity answer, aggregated, with the first day of the sync's window it covers.

        OpenRouter serves the last 30 completed UTC days as of when it answers. An answer that came
        after midnight may cover the next day's window, one day later, without the sync's first day:
        replacing that day with it would delete its rows. So such an answer replaces only the days
        after it, unless it holds rows of the first day, which prove it still covers it. The day it
        adds after the sync's window is left out and fetched by the next sync, as its keys' fetch
        marker still ends at the window's end."""
        # Split by workspace, a key's too: a key moved since keeps its earlier usage where it was spent.
        records = self.client.get_activity(api_key_hash=api_key_hash, group_by_workspace=True)
        received_at = self.clock()
        aggregated = normalize.aggregate_activity(
            records, api_key_hash=api_key_hash, default_workspace=default_workspace
        )
        if received_at < self.window_may_shift_at or any(key[0] == self.window_start for key in aggregated):
            return aggregated, self.window_start
        return aggregated, self.window_start + timedelta(days=1)

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
        read_at = self.clock()
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
        self.guarded(lambda: self.store_keys([(record, read_at)]))
        self.run.keys_seen = 1

    def sync_organization(self) -> None:
        try:
            self.progress("reading credits")
            credits = self.client.get_credits()
            self.pending_writes.append(lambda: self.store_credits(credits))
            self.refresh_models_if_stale()
            workspace_ids = self.read_workspaces()
            self.read_members()
            # Account-wide activity before the keys': a key's answer that still covers the window's
            # first day then proves this one does too, so reconciling rewrites that day's unattributed
            # rows whenever the keys' are rewritten. Read last, an answer after midnight would leave
            # that day's unattributed rows as they were beside keys' rows fetched before it.
            self.progress("reading account-wide activity")
            account, account_start = self.fetch_activity()
            finish_keys = self.sync_keys(workspace_ids)
        except BaseException:
            # What was read and fetched is kept, so the next run fetches only what is left.
            self.write_pending()
            raise
        self.write_pending(
            finish_keys,
            lambda: self.reconcile_account(account, account_start),
            lambda: usage_summaries_rebuild(connection_id=self.connection.pk),
        )
        self.complete_through = self.window_end
        # Account-wide activity was read for every day from account_start on: their totals are known.
        self.reported_from = account_start

    def store_credits(self, credits) -> None:
        rows.insert(
            CreditsSnapshot,
            **self.ids(),
            taken_at=self.now,
            total_credits=credits.total_credits,
            total_usage=credits.total_usage,
        )

    def refresh_models_if_stale(self) -> None:
        if models_fresh(now=self.now):
            return
        with models_refresh_hold() as held:
            # Another worker reading the catalog right now serves this sync too: usage is stored
            # without it, and the pages name models from it once it is in.
            if not held or models_fresh(now=self.now):
                return
            self.progress("reading the model catalog")
            models_upsert(self.client.get_models(), now=self.now)

    def read_workspaces(self) -> list[str]:
        self.progress("reading workspaces")
        try:
            records = list(self.client.iter_workspaces())
        except ProviderError as exc:
            if exc.code != "http_404":
                raise
            return [""]  # An account without workspaces: its keys are all in the default listing.

        def write():
            company_id, connection_id = self.connection.company_id, self.connection.pk
            bulk.upsert(
                Workspace,
                ("company_id", "connection_id", "workspace_id", "name", "sort_name", "slug", "created_at"),
                [
                    (
                        company_id,
                        connection_id,
                        w.id,
                        w.name,
                        normalize.name_sort_key(w.name),
                        w.slug,
                        w.created_at,
                    )
                    for w in records
                ],
                unique_fields=("connection_id", "workspace_id"),
                update_fields=("name", "sort_name", "slug", "created_at"),
            )

        self.pending_writes.append(write)
        return [w.id for w in records] or [""]

    def read_members(self) -> None:
        self.progress("reading organization members")
        try:
            records = list(self.client.iter_members())
        except ProviderError as exc:
            if exc.code not in ("http_404", "http_403"):
                raise
            return  # A personal account has no organization members.
        if not records:
            return
        company_id, connection_id = self.connection.company_id, self.connection.pk
        self.pending_writes.append(
            lambda: bulk.upsert(
                Member,
                ("company_id", "connection_id", "user_id", "email", "first_name", "last_name", "role"),
                [
                    (company_id, connection_id, m.id, m.email, m.first_name, m.last_name, m.role)
                    for m in records
                ],
                unique_fields=("connection_id", "user_id"),
                update_fields=("email", "first_name", "last_name", "role"),
            )
        )

    def sync_keys(self, workspace_ids: list[str]) -> Callable[[], None]:
        """Every key page of every workspace, queued for writing with its stale keys' activity;
        returns the write that closes the listing (marking unlisted keys deleted), for the caller
        to run with the last batch once nothing else can fail.

        OpenRouter documents no page size and says to read until an empty page. The size a listing
        uses is remembered once proven (a page another page followed is a full one; a listing's only
        page says nothing), so a later sync can take a short page as the end (one request fewer per
        workspace) when the listing holds at least the keys Doow knows there and no earlier page of
        it was short (which would prove the remembered size wrong); if any known key then
        went unlisted, the listings that ended short are read on to the empty page before any key
        is marked deleted. A first sync always reads to the empty page.
        """
        self.progress("reading keys and their activity")
        listed_before = self.now
        known_counts = dict(
            ApiKey.objects.filter(connection_id=self.connection.pk, missing_since__isnull=True)
            .values_list("workspace_id")
            .annotate(count=Count("pk"))
            .order_by()
        )
        page_size = self.connection.config.get(PAGE_SIZE_CONFIG) or 0
        # The smallest full page of this sync: a remembered size above the server's would take its
        # full pages for short ones and end listings early.
        proven_page_size = 0
        ended_short: dict[str, int] = {}  # workspace -> offset of the page that would confirm the end
        vanished_workspaces: set[str] = set()
        pool = ThreadPoolExecutor(max_workers=max(1, settings.OPENROUTER_CONCURRENCY))
        try:

            def read(workspace_id: str, offset: int, may_end_short: bool) -> None:
                nonlocal proven_page_size
                previous_length = 0
                listed, previous_hashes = offset, None
                known = sum(known_counts.values()) if not workspace_id else known_counts.get(workspace_id, 0)
                while True:
                    try:
                        page = self.client.get_key_page(workspace_id=workspace_id or None, offset=listed)
                    except ProviderError as exc:
                        if exc.code != "http_404" or not workspace_id:
                            raise
                        # Deleted since /workspaces listed it: its keys are not marked deleted on
                        # this one answer; the next sync, which does not list it, does that.
                        vanished_workspaces.add(workspace_id)
                        return
                    if not page:
                        return
                    hashes = [key.hash for key in page]
                    if hashes == previous_hashes:
                        raise ListingStuck("/keys", offset=listed)
                    previous_hashes = hashes
                    if previous_length:
                        proven_page_size = min(proven_page_size or previous_length, previous_length)
                    previous_length = len(page)
                    listed += len(page)
                    self.run.keys_seen += len(page)
                    self.read_key_page(page, pool)
                    if may_end_short and page_size and len(page) < page_size:
                        if known and listed >= known:
                            ended_short[workspace_id] = listed
                            return
                        # A short page that is not the end: OpenRouter's pages shrank since the
                        # size was remembered, so no later page of this listing can end it early.
                        may_end_short = False

            for workspace_id in workspace_ids:
                read(workspace_id, 0, may_end_short=True)
            if ended_short and self.unlisted_keys(listed_before).exists():
                for workspace_id, offset in ended_short.items():
                    read(workspace_id, offset, may_end_short=False)
            if known_counts:  # a first sync knows no key that could have gone unlisted
                self.look_up_unlisted_keys(listed_before, vanished_workspaces, pool)
        except BaseException:
            # A failure or the soft time limit ends the sync: queued fetches are cancelled, and the
            # ones running are not waited for (with their retries one may take minutes, past the hard
            # time limit); their answers would not be used, and closing the client ends them.
            self.stop_fetching.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()

        def finish():
            # Every listing was read to its end, and OpenRouter answered 404 for each known key none
            # of them showed: those keys were deleted in OpenRouter. With no key known at the start
            # (a first sync), every key is one this sync listed: none to look for.
            if known_counts:
                self.unlisted_keys(listed_before).exclude(workspace_id__in=vanished_workspaces).update(
                    missing_since=self.now
                )
            if proven_page_size and proven_page_size != page_size:
                config = (
                    Connection.objects.filter(pk=self.connection.pk).values_list("config", flat=True).get()
                )
                config[PAGE_SIZE_CONFIG] = proven_page_size
                Connection.objects.filter(pk=self.connection.pk).update(config=config)

        return finish

    def look_up_unlisted_keys(
        self, listed_before: datetime, vanished_workspaces: set[str], pool: ThreadPoolExecutor
    ) -> None:
        """Ask OpenRouter for each known key no listing showed, and read one it still has as if listed.

        Offset pagination skips a key when one before it is deleted (or moves workspace) between two
        page requests, and a key of a workspace the workspace listing skipped is not listed at all:
        absence from a listing does not prove a key deleted. A key is looked up once, when it goes
        unlisted; once marked deleted it is not asked for again."""
        unlisted = list(
            self.unlisted_keys(listed_before)
            .exclude(workspace_id__in=vanished_workspaces)
            .values_list("key_hash", flat=True)
        )
        if not unlisted:
            return

        def look_up(key_hash: str) -> KeyRecord | None:
            try:
                return self.client.get_key_by_hash(key_hash)
            except ProviderError as exc:
                if exc.code == "http_404":
                    return None  # deleted: `finish` marks it
                raise

        still_there = [key for key in pool.map(look_up, unlisted) if key is not None]
        if still_there:
            self.run.keys_seen += len(still_there)
            self.read_key_page(still_there, pool)

    def unlisted_keys(self, listed_before: datetime):
        """Known keys no listing of this sync has shown (queued keys were listed, though their
        marks are not written yet)."""
        return (
            ApiKey.objects.filter(connection_id=self.connection.pk, missing_since__isnull=True)
            .exclude(last_listed_at__gte=listed_before)
            .exclude(key_hash__in=list(self.pending_keys))
        )

    def read_key_page(self, page: list[KeyRecord], pool: ThreadPoolExecutor) -> None:
        """Fetch the activity of the page's stale keys and queue the page and that activity for
        writing, in batches of OPENROUTER_WRITE_BATCH_KEYS keys."""
        read_at = self.clock()
        known = {
            row["key_hash"]: row
            for row in rows.get_values(
                ApiKey,
                (*FETCH_MARKER_FIELDS[:3], "key_hash", "activity_fetched_through"),
                connection_id=self.connection.pk,
                key_hash__in=[k.hash for k in page],
            )
        }
        self.never_fetched.update(
            k.hash for k in page if k.hash not in known or known[k.hash]["activity_fetched_through"] is None
        )
        stale = [k for k in page if self.is_stale(k, known.get(k.hash))]
        # Keyed by hash: a key that shifts onto the next page while keys are created or deleted
        # is written once, as last read. Queued before the fetches, so a failing fetch still
        # leaves the page's keys to be written (by sync_keys) with the activity fetched before it.
        self.pending_keys.update((k.hash, (k, read_at)) for k in page)

        def fetch(key: KeyRecord):
            if self.stop_fetching.is_set():
                # Another fetch failed: the sync ends with its error, so none queued after it is sent.
                raise FetchStopped
            try:
                return key, *self.fetch_activity(api_key_hash=key.hash, default_workspace=key.workspace_id)
            except BaseException as exc:
                if isinstance(exc, ProviderError) and exc.code == "http_404":
                    return key, None, None  # deleted since it was listed
                self.fetch_failures.append(exc)  # before the flag: whoever sees it finds the failure
                self.stop_fetching.set()
                raise

        vanished = []
        # A failure in this thread (the soft time limit) stops the others in sync_keys.
        try:
            for key, activity, start in pool.map(fetch, stale):
                if activity is None:
                    vanished.append(key)
                else:
                    self.pending_activity[key.hash] = (key, activity, start)
        except FetchStopped:
            # Results come in order, but a fetch queued before the failing one can still start after
            # it failed (its thread had taken it from the queue, then waited for the CPU): the run
            # ends with the failure itself, not with "stopped" (an internal error, retried at once).
            if self.fetch_failures:
                raise self.fetch_failures[0] from None
            raise
        if vanished:
            self.report_vanished_keys(vanished)
        if len(self.pending_keys) >= settings.OPENROUTER_WRITE_BATCH_KEYS:
            self.write_pending()
        else:
            self.flush_events()

    def report_vanished_keys(self, keys: list[KeyRecord]) -> None:
        """Keys OpenRouter no longer knew (404) when their activity was asked for: deleted since
        the listing. Their rows stay as last fetched and their fetch markers unchanged; usage of
        theirs that OpenRouter reports account-wide beyond those rows is counted as unattributed,
        and the next listing marks them deleted."""
        names = ", ".join(sorted(key.name or key.label for key in keys)[:5])
        self.event(
            EventKind.SYNC,
            "keys_vanished",
            f"{len(keys)} key(s) were deleted in OpenRouter while this sync read them ({names}"
            f"{', …' if len(keys) > 5 else ''}); their newest usage is counted as unattributed.",
        )

    def write_pending(self, *then: Callable[[], object]) -> None:
        """Write what is queued (organization records, keys, their activity) and then `then`, in one
        transaction of a few statements, not one per key."""
        if not (self.pending_writes or self.pending_keys or self.pending_activity or then):
            return
        writes, self.pending_writes = self.pending_writes, []
        keys, activity = list(self.pending_keys.values()), list(self.pending_activity.values())
        self.pending_keys, self.pending_activity = {}, {}
        # Keys whose activity covers the same days are replaced together (all of them, but for
        # answers that came around midnight).
        by_start: dict[date, tuple[list[KeyRecord], dict]] = defaultdict(lambda: ([], {}))
        for key, key_rows, start in activity:
            group_keys, group_rows = by_start[start]
            group_keys.append(key)
            group_rows.update(key_rows)
        # Rows are made ready (rounded and summed) before the transaction, which then only writes.
        usages = [
            (
                group_keys,
                usage_prepare(**self.ids(), rows=group_rows.items(), start=start, end=self.window_end),
            )
            for start, (group_keys, group_rows) in sorted(by_start.items())
        ]

        def write():
            for each in writes:
                each()
            self.store_keys(keys)
            for group_keys, usage in usages:
                self.store_activity(group_keys, usage)
            for each in then:
                each()

        self.flush_events()
        if keys:
            self.queue_progress("reading keys and their activity", self.run.keys_seen)
        self.guarded(write)

    def store_keys(self, keys: list[tuple[KeyRecord, datetime]]) -> None:
        """Upsert the keys' state and their counter snapshot of the UTC day they were read on (on the
        sync's clock): a page read after midnight holds the new day's counters (usage_daily starts
        again from 0) and must not overwrite the previous day's snapshot."""
        if not keys:
            return
        page = [k for k, _read_at in keys]
        states = [self.key_state(k) for k in page]
        bulk.upsert(
            ApiKey,
            ("company_id", "connection_id", "key_hash", *states[0]),
            [
                (self.connection.company_id, self.connection.pk, k.hash, *state.values())
                for k, state in zip(page, states, strict=True)
            ],
            unique_fields=("connection_id", "key_hash"),
            update_fields=tuple(states[0]),
        )
        bulk.upsert(
            ApiKeySnapshot,
            (
                "company_id",
                "connection_id",
                "key_hash",
                "day",
                "taken_at",
                "limit_remaining",
                *COUNTER_FIELDS,
            ),
            [
                (
                    self.connection.company_id,
                    self.connection.pk,
                    k.hash,
                    read_at.astimezone(UTC).date(),
                    read_at,
                    k.limit_remaining,
                    *(getattr(k.counters, name) for name in COUNTER_FIELDS),
                )
                for k, read_at in keys
            ],
            unique_fields=("connection_id", "key_hash", "day"),
            update_fields=("taken_at", "limit_remaining", *COUNTER_FIELDS),
        )

    def key_state(self, k: KeyRecord) -> dict:
        """What a listing says of a key: every field an upsert of the key overwrites."""
        return {
            "name": k.name,
            "sort_name": normalize.name_sort_key(k.name or k.hash),
            "label": k.label,
            "workspace_id": k.workspace_id,
            "creator_user_id": k.creator_user_id or "",
            "disabled": k.disabled,
            "expires_at": k.expires_at,
            "limit": k.limit,
            "limit_remaining": k.limit_remaining,
            "limit_reset": k.limit_reset or "",
            "created_at": k.created_at,
            "updated_at": k.updated_at,
            "last_used_at": k.last_used_at,
            "missing_since": None,
            "last_listed_at": self.now,
            **{name: getattr(k.counters, name) for name in COUNTER_FIELDS},
        }

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
            known["fetched_usage"] != as_stored(key.counters.usage)
            or known["fetched_byok_usage"] != as_stored(key.counters.byok_usage)
            or known["fetched_last_used_at"] != key.last_used_at
        )

    def store_activity(self, keys: list[KeyRecord], usage: PreparedUsage) -> None:
        """Replace the keys' usage rows and mark them fresh, in the caller's transaction."""
        hashes = [key.hash for key in keys]
        self.run.rows_written += usage_replace(
            usage, api_key_hashes=hashes, new_key_hashes=self.never_fetched
        )
        # Mark the keys fresh in the same transaction as their rows: one statement per batch.
        bulk.update(
            ApiKey,
            FETCH_MARKER_FIELDS,
            [
                (
                    key.hash,
                    as_stored(key.counters.usage),
                    as_stored(key.counters.byok_usage),
                    key.last_used_at,
                    self.now,
                    self.window_end,
                )
                for key in keys
            ],
            match_fields=("key_hash",),
            scope={"connection_id": self.connection.pk},
        )
        self.never_fetched.difference_update(hashes)
        self.run.keys_fetched += len(keys)

    def reconcile_account(self, account: dict, start: date) -> None:
        """Account-wide activity minus listed keys' rows = usage of deleted or unlisted keys, for the
        days start..window_end that the account-wide answer covers. Runs after the keys' rows are
        written, in the same transaction as the last of them."""
        account = {key: values for key, values in account.items() if start <= key[0] <= self.window_end}
        attributed = {}
        for row in usage_attributed_sums(connection_id=self.connection.pk, start=start, end=self.window_end):
            values = normalize.UsageValues(model="")
            for name in METRICS:
                setattr(values, name, row[f"{name}_sum"] or 0)
            attributed[(row["day"], row["workspace_id"], row["model_permaslug"], row["provider_name"])] = (
                values
            )
        rest = normalize.unattributed(account, attributed)
        for (_day, _ws, _hash, permaslug, _provider), values in rest.items():
            if not values.model:
                values.model = permaslug
        negative = [k for k, v in rest.items() if v.spend_usd < 0 or v.requests < 0]
        if negative:
            self.event(
                EventKind.SYNC,
                "reconciliation_mismatch",
                f"Listed keys account for more than OpenRouter's account-wide activity on "
                f"{len(negative)} day/model rows; the difference is recorded so totals match OpenRouter.",
                level=EventLevel.WARNING,
            )
        usage = usage_prepare(**self.ids(), rows=rest.items(), start=start, end=self.window_end)
        self.run.rows_written += usage_replace(usage, api_key_hashes=[""])


def models_fresh(*, now: datetime) -> bool:
    """Whether the catalog was read within the last day."""
    newest = Model.objects.order_by("-refreshed_at").values_list("refreshed_at", flat=True).first()
    return newest is not None and newest > now - timedelta(days=1)


# Long enough for the slowest read of the catalog (its request's retries); a worker killed while
# holding it only delays the next read by this much.
MODELS_REFRESH_HOLD_SECONDS = 300


@contextmanager
def models_refresh_hold() -> Iterator[bool]:
    """Yields whether this process may read the catalog now, so that syncs that find it stale at
    the same time (a fresh database, the day it goes stale) read it once, not once each. The hold
    is an atomic add in the shared cache (Redis in production); it is keyed by database, since the
    catalog is one per database and test runs share a cache between databases. A cache that does
    not answer holds nothing back: a catalog read twice is harmless, one never read is not."""
    key = f"openrouter:models-refresh:{django_connection.settings_dict['NAME']}"
    try:
        taken = cache.add(key, 1, timeout=MODELS_REFRESH_HOLD_SECONDS)
    except Exception:  # Any backend's errors: redis-py's, the file cache's OSError.
        logger.warning("The cache did not answer; reading the model catalog without a hold")
        taken = None
    try:
        yield taken is not False
    finally:
        if taken:
            try:
                cache.delete(key)
            except Exception:  # the hold then ends with its timeout
                logger.warning("The cache did not answer; the model catalog's hold ends by itself")


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
