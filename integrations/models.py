from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from doow.models import Company
from integrations import coverage

# How long the cards call a requested sync queued while no worker has started it.
SYNC_QUEUED_SHOWN_FOR = timedelta(minutes=15)


class ConnectionState(models.TextChoices):
    VERIFYING = "verifying", "Verifying"
    CONNECTED = "connected", "Connected"
    SYNCING = "syncing", "Syncing"
    NEEDS_ATTENTION = "needs_attention", "Needs attention"
    DISCONNECTED = "disconnected", "Disconnected"


class CredentialScope(models.TextChoices):
    ORGANIZATION = "organization", "Organization"
    SINGLE_KEY = "single_key", "Single key"


SUMMARIES_NEVER_BUILT = date(1, 1, 1)


class Connection(models.Model):
    """One company's connection to one provider account (a company may connect several)."""

    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="connections")
    provider = models.CharField(max_length=40)
    name = models.CharField(max_length=120)
    state = models.CharField(
        max_length=20, choices=ConnectionState.choices, default=ConnectionState.VERIFYING
    )
    scope = models.CharField(
        max_length=20, choices=CredentialScope.choices, default=CredentialScope.ORGANIZATION
    )
    # The provider's id for the account (OpenRouter organization, or the key hash for single-key scope),
    # so the same account is not connected twice in one company.
    external_account_id = models.CharField(max_length=200, blank=True)
    account_label = models.CharField(max_length=200, blank=True)
    config = models.JSONField(default=dict, blank=True, help_text="Non-secret provider configuration only.")
    # The ciphertext (integrations.crypto); never decrypted for display.
    secret = models.TextField(blank=True, editable=False)
    secret_last4 = models.CharField(max_length=4, blank=True, editable=False)
    # Bumped on disconnect and on a replaced key: a sync that started under an older generation must not write.
    generation = models.PositiveIntegerField(default=0)
    # Bumped by every transaction that writes the provider's data of this connection (usage rows,
    # keys): report caches are keyed by it, so a cached figure is never older than the data.
    data_version = models.PositiveBigIntegerField(default=0)
    # The first day whose usage summaries (usage.selectors.SUMMARIES) may differ from the usage
    # rows; None = all current, so reports may read them. Moved back by every usage write, cleared
    # when a sync rebuilds the summaries from that day. The default (year 1) means never built.
    usage_summaries_stale_from = models.DateField(null=True, blank=True, default=SUMMARIES_NEVER_BUILT)
    attention_reason = models.TextField(blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    last_sync_attempt_at = models.DateTimeField(null=True, blank=True)
    # When a sync was last sent to the workers by hand (or at connect): until one starts, the cards
    # say it is queued.
    sync_requested_at = models.DateTimeField(null=True, blank=True)
    next_sync_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # Last completed UTC day covered by the provider's daily activity.
    complete_through = models.DateField(null=True, blank=True)
    # The UTC days whose daily activity a successful sync read, as [first, last] spans
    # (integrations.coverage): a provider keeps only recent days, so a day outside them is unknown.
    # Nullable: code on the schema before it (a rolling deploy's old processes) inserts rows without it.
    reported_spans = models.JSONField(default=list, blank=True, null=True)
    sync_progress = models.JSONField(default=dict, blank=True)
    # Single flight: a worker holds the connection while sync_lease_until is in the future.
    sync_lease_until = models.DateTimeField(null=True, blank=True)
    sync_lease_token = models.CharField(max_length=40, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    disconnected_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["company", "name", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["company", "provider", "external_account_id"],
                condition=~Q(state="disconnected") & ~Q(external_account_id=""),
                name="one_live_connection_per_account",
            )
        ]
        indexes = [models.Index(fields=["state", "next_sync_at"], name="connection_due_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.provider})"  # no company lookup: reprs must not query

    @property
    def secret_context(self) -> str:
        """Associated data binding the ciphertext to this row."""
        return f"doow:{self.company_id}:{self.pk}:{self.provider}"

    @property
    def masked_secret(self) -> str:
        from integrations.crypto import mask

        return mask(self.secret_last4)

    @property
    def history_from(self):
        """The first UTC day a sync read (None before any): Doow holds the provider's days from it."""
        return coverage.first_day(self.reported_spans)

    @property
    def is_live(self) -> bool:
        return self.state != ConnectionState.DISCONNECTED

    @property
    def sync_queued_since(self) -> datetime | None:
        """When the sync requested last was sent, if no worker has started a sync since. Shown for a
        while only: a message the broker lost leaves the next scheduled sync to run."""
        requested = self.sync_requested_at
        if requested is None or self.state in (ConnectionState.SYNCING, ConnectionState.DISCONNECTED):
            return None
        if self.last_sync_attempt_at is not None and self.last_sync_attempt_at >= requested:
            return None
        return requested if requested > timezone.now() - SYNC_QUEUED_SHOWN_FOR else None

    @property
    def is_syncing(self) -> bool:
        """A worker holds the sync lease now. The state alone can say syncing after its worker died."""
        return self.sync_lease_until is not None and self.sync_lease_until > timezone.now()

    @property
    def shown_state(self) -> str:
        """The state as pages show it: not "syncing" once the lease of the worker that claimed the
        sync has lapsed. That worker died (killed, out of memory, its host lost) and left the state
        saying syncing: the card would poll a frozen progress and keep "Sync now" off until the next
        scheduled sync. (Syncing with no lease at all is a first sync queued after a connect.)"""
        lease = self.sync_lease_until
        if self.state == ConnectionState.SYNCING and lease is not None and lease <= timezone.now():
            return ConnectionState.CONNECTED
        return self.state

    @property
    def shown_state_label(self) -> str:
        return ConnectionState(self.shown_state).label


class SyncRunStatus(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    PARTIAL = "partial", "Partial"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    ABORTED = "aborted", "Aborted"
    DEFERRED = "deferred", "Deferred"


class SyncRun(models.Model):
    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="+")
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="runs")
    trigger = models.CharField(max_length=20)  # initial, scheduled, manual, command, retry
    status = models.CharField(max_length=20, choices=SyncRunStatus.choices, default=SyncRunStatus.RUNNING)
    started_at = models.DateTimeField(
        default=timezone.now
    )  # given when the run is created finished (skipped)
    finished_at = models.DateTimeField(null=True, blank=True)
    requests_made = models.PositiveIntegerField(default=0)
    rows_written = models.PositiveIntegerField(default=0)
    keys_seen = models.PositiveIntegerField(default=0)
    keys_fetched = models.PositiveIntegerField(default=0)
    attempt = models.PositiveSmallIntegerField(default=1)
    error_summary = models.TextField(blank=True)
    # The connection's generation the run started under: a run of an older one still marked running
    # was stopped by a disconnect or a replaced key, not lost with its worker.
    generation = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [
            models.Index(fields=["connection", "-started_at"], name="syncrun_conn_started_idx"),
            # Every sync start looks for its connection's runs still marked running (a dead worker's):
            # a handful of rows, where the index above reads the connection's whole history.
            models.Index(
                fields=["connection"], condition=Q(status="running"), name="syncrun_conn_running_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.connection_id}: {self.status}"

    @property
    def duration(self):
        return (self.finished_at - self.started_at) if self.finished_at else None


class EventLevel(models.TextChoices):
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    ERROR = "error", "Error"


class EventKind(models.TextChoices):
    CREDENTIAL = "credential", "Credential"
    SYNC = "sync", "Sync"
    RETRY = "retry", "Retry"
    RATE_LIMIT = "rate_limit", "Rate limit"
    SCOPE = "scope", "Scope"
    DISCONNECT = "disconnect", "Disconnect"
    ALERT = "alert", "Alert"


class SyncEvent(models.Model):
    """The ops log. Messages and details never hold a secret."""

    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="+")
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="events")
    run = models.ForeignKey(SyncRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="events")
    created_at = models.DateTimeField(auto_now_add=True)
    level = models.CharField(max_length=10, choices=EventLevel.choices, default=EventLevel.INFO)
    kind = models.CharField(max_length=20, choices=EventKind.choices)
    code = models.CharField(max_length=60)
    message = models.TextField()
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["company", "-id"], name="event_company_idx"),
            models.Index(fields=["connection", "-id"], name="event_connection_idx"),
            # The event log's day filter: one day's events, not a walk back through the company's log.
            models.Index(fields=["company", "created_at"], name="event_company_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.level} {self.code}"
