from datetime import date
from decimal import Decimal

from django.db import connection as db
from django.db import models
from django.db.models.functions import Cast
from django.db.models.signals import pre_delete
from django.dispatch import receiver
from django.utils import timezone

from doow.models import Company
from integrations.models import Connection

UNATTRIBUTED_KEY = ""  # api_key_hash of usage no listed key accounts for (deleted or unlisted keys)
UNATTRIBUTED_LABEL = "(deleted or unlisted keys)"


class UsageMetrics(models.Model):
    """The figures every usage table carries; sums of them are what reports show."""

    requests = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    spend_usd = models.DecimalField(max_digits=24, decimal_places=12, default=0)
    byok_spend_usd = models.DecimalField(max_digits=24, decimal_places=12, default=0)

    class Meta:
        abstract = True


class UsageDaily(UsageMetrics):
    """Usage of one UTC day, aggregated per (workspace, API key, model, provider).

    Values are absolute: a re-fetched day overwrites its rows, never adds to them. Empty strings
    (not NULL) stand for "none" so the natural key's unique constraint holds on every database.
    """

    # Neither foreign key is a database constraint. PostgreSQL checks one per inserted row when the
    # transaction commits, and that check cost a large write batch as much again as its rows
    # (README, "Performance"). Rows are written only by usage_replace, in a transaction that holds the
    # connection's row and has checked it is still connected; connections are never deleted (a
    # disconnect keeps the row, and purges usage under the same lock); deleting a company still
    # deletes its rows (Django cascades). `company` is a copy of connection.company for
    # tenant-scoped queries. No index on `connection` alone: every index below starts with it.
    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    connection = models.ForeignKey(
        Connection, on_delete=models.CASCADE, related_name="usage_rows", db_constraint=False, db_index=False
    )
    day = models.DateField()
    workspace_id = models.CharField(max_length=100, blank=True, default="")
    api_key_hash = models.CharField(max_length=100, blank=True, default="")
    model = models.CharField(max_length=200)
    model_permaslug = models.CharField(max_length=200)
    provider_name = models.CharField(max_length=100)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "connection",
                    "day",
                    "workspace_id",
                    "api_key_hash",
                    "model_permaslug",
                    "provider_name",
                ],
                name="usage_daily_natural_key",
            )
        ]
        indexes = [
            models.Index(fields=["connection", "day"], name="usage_conn_day_idx"),
            models.Index(fields=["connection", "api_key_hash", "day"], name="usage_conn_key_day_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.api_key_hash or UNATTRIBUTED_LABEL} {self.model_permaslug} {self.spend_usd}"


class UsageDailyByModel(UsageMetrics):
    """UsageDaily summed over API keys: what the totals, the chart, the filter choices and the
    model, provider, workspace and day tables read, in rows per day × model × provider × workspace
    however many keys an organization has. Rebuilt from UsageDaily by the sync that wrote the rows,
    in its last transaction (usage.services.usage_summaries_rebuild); read only while the
    connection's `usage_summaries_stale_from` is None."""

    # Not a database constraint, and not indexed alone, for the reasons UsageDaily gives.
    connection = models.ForeignKey(
        Connection, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False
    )
    day = models.DateField()
    workspace_id = models.CharField(max_length=100, blank=True, default="")
    model = models.CharField(max_length=200)
    model_permaslug = models.CharField(max_length=200)
    provider_name = models.CharField(max_length=100)

    class Meta:
        indexes = [models.Index(fields=["connection", "day"], name="usage_by_model_conn_day_idx")]

    def __str__(self) -> str:
        return f"{self.day} {self.model_permaslug} {self.provider_name} {self.spend_usd}"


class UsageDailyByKey(UsageMetrics):
    """UsageDaily summed over models and providers: what the key table (and anything else by key,
    workspace and day alone) reads, in one row per key and day instead of one per model and provider.
    Unlike UsageDailyByModel it is not rebuilt at the end of a sync: usage_replace keeps it, for the
    keys and days whose rows it replaces, in the same transaction. Every sync re-writes the
    unattributed rows of the whole window, so a rebuild from the first stale day would redo every
    key's window on every sync; keeping the replaced slices costs in proportion to what was written.
    Read, like every summary, only while the connection's `usage_summaries_stale_from` is None."""

    # Not a database constraint, and not indexed alone, for the reasons UsageDaily gives.
    connection = models.ForeignKey(
        Connection, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False
    )
    day = models.DateField()
    workspace_id = models.CharField(max_length=100, blank=True, default="")
    api_key_hash = models.CharField(max_length=100, blank=True, default="")

    class Meta:
        constraints = [
            # Also the index a replaced slice (keys × days) is deleted by.
            models.UniqueConstraint(
                fields=["connection", "api_key_hash", "day", "workspace_id"], name="usage_by_key_natural_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.api_key_hash or UNATTRIBUTED_LABEL} {self.spend_usd}"


class UsageMonthlyByKey(UsageMetrics):
    """UsageDailyByKey summed over each calendar month (`month` is its first day): the key table of
    a range reads each month of a key in one row, and from the usage rows only the days that
    make up the difference at either end (usage.selectors.usage_by_key). Kept with
    UsageDailyByKey by usage_replace, for the keys and months of the slice it writes, and read,
    like every summary, only while the connection's `usage_summaries_stale_from` is None."""

    # Not a database constraint, and not indexed alone, for the reasons UsageDaily gives.
    connection = models.ForeignKey(
        Connection, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False
    )
    month = models.DateField()
    workspace_id = models.CharField(max_length=100, blank=True, default="")
    api_key_hash = models.CharField(max_length=100, blank=True, default="")
    # Its UsageDailyByKey rows (days and workspaces with usage): whether a key has rows in a range
    # read partly from these sums.
    days_with_rows = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "api_key_hash", "month", "workspace_id"],
                name="usage_by_key_month_natural_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.month:%Y-%m} {self.api_key_hash or UNATTRIBUTED_LABEL} {self.spend_usd}"


class BudgetScope(models.TextChoices):
    CONNECTION = "connection", "Whole connection"
    WORKSPACE = "workspace", "Workspace"
    KEY = "key", "API key"


class Budget(models.Model):
    """A monthly spend budget (USD, OpenRouter credits) for a connection, a workspace or an API key."""

    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="+")
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="budgets")
    scope = models.CharField(max_length=20, choices=BudgetScope.choices)
    target = models.CharField(
        max_length=100, blank=True, help_text="Workspace id or key hash; empty for the connection."
    )
    target_label = models.CharField(max_length=300, blank=True)
    monthly_usd = models.DecimalField(max_digits=14, decimal_places=2)
    # The amount before the last change, for the months before `monthly_usd_since` (the first day of the
    # month the change was made in): the month that has just ended is checked against its own budget.
    previous_monthly_usd = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    monthly_usd_since = models.DateField(null=True, blank=True)
    created_by = models.ForeignKey("doow.User", null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["connection", "scope", "target"], name="one_budget_per_target")
        ]
        ordering = ["scope", "target_label"]

    def __str__(self) -> str:
        return f"{self.label}: ${self.monthly_usd}/month"

    def amount_for_month(self, first: date) -> Decimal:
        """The budget of the month starting on `first`."""
        if (
            self.previous_monthly_usd is not None
            and self.monthly_usd_since
            and first < self.monthly_usd_since
        ):
            return self.previous_monthly_usd
        return self.monthly_usd

    @property
    def label(self) -> str:
        """What the budget covers, as its alerts (and their mails) name it."""
        if self.scope == BudgetScope.CONNECTION:
            return self.get_scope_display()
        return f"{self.get_scope_display()} {self.target_label}".strip()


class AlertKind(models.TextChoices):
    BUDGET_80 = "budget_80", "Budget 80% reached"
    BUDGET_100 = "budget_100", "Budget reached"
    BUDGET_PROJECTED = "budget_projected", "Projected to exceed budget"
    CREDIT_LOW = "credit_low", "Credit balance below threshold"
    CREDIT_RUNWAY = "credit_runway", "Credits projected to run out"
    KEY_LIMIT = "key_limit", "API key limit almost used"
    SYNC_FAILING = "sync_failing", "Sync failing"
    ANOMALY = "anomaly", "Unusual spend"
    NEW_SPENDER = "new_spender", "New key or model with material spend"


# What a threshold may be, by kind: (lowest, whether the lowest itself is allowed, highest or None,
# what is expected). Budget kinds have no threshold.
THRESHOLD_RANGES = {
    AlertKind.CREDIT_LOW: (Decimal(0), True, None, "a USD balance of 0 or more"),
    AlertKind.CREDIT_RUNWAY: (Decimal(0), False, Decimal(365), "a number of days above 0, at most 365"),
    AlertKind.KEY_LIMIT: (
        Decimal(0),
        False,
        Decimal(1),
        "a fraction of the key's limit left, above 0 and at most 1 (0.1 means 10%)",
    ),
    # OpenRouter keeps 30 days of activity: a sync failing for longer loses data for good.
    AlertKind.SYNC_FAILING: (
        Decimal(0),
        False,
        Decimal(168),
        "a number of hours above 0, at most 168 (a week)",
    ),
    AlertKind.ANOMALY: (
        Decimal(0),
        False,
        Decimal(100),
        "a robust z-score above 0, at most 100 (6 is usual)",
    ),
    AlertKind.NEW_SPENDER: (Decimal(0), True, None, "a USD amount of 0 or more"),
}


def threshold_problem(kind: str, threshold: Decimal) -> str | None:
    """Why `threshold` cannot be a rule of this kind's threshold, or None if it can."""
    if kind not in THRESHOLD_RANGES:
        return "This alert has no threshold: leave it empty."
    lowest, lowest_allowed, highest, expected = THRESHOLD_RANGES[kind]
    too_low = threshold < lowest or (threshold == lowest and not lowest_allowed)
    if too_low or (highest is not None and threshold > highest):
        return f"Enter {expected}; {threshold.normalize():f} is out of range."
    return None


class AlertRule(models.Model):
    """What to watch on a connection and whom to tell. `threshold` means, by kind: USD balance
    (credit_low), days (credit_runway), fraction of the limit left (key_limit), hours (sync_failing),
    robust z-score (anomaly), USD per day (new_spender); unused for budget kinds."""

    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="+")
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="alert_rules")
    kind = models.CharField(max_length=30, choices=AlertKind.choices)
    budget = models.ForeignKey(Budget, null=True, blank=True, on_delete=models.CASCADE, related_name="rules")
    threshold = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    notify_roles = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    # The newest day an anomaly or new-spender rule has judged. A day read by a sync after a gap
    # (OpenRouter down, the key revoked for a while) is judged on its own, not skipped for the newest.
    judged_through = models.DateField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        # One rule of a kind per connection (budget kinds: per budget), so two evaluations creating the
        # default rules at once (the post-sync task and a budgets page) cannot raise everything twice.
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "kind"],
                condition=models.Q(budget__isnull=True),
                name="one_connection_rule_per_kind",
            ),
            models.UniqueConstraint(
                fields=["connection", "kind", "budget"],
                condition=models.Q(budget__isnull=False),
                name="one_budget_rule_per_kind",
            ),
        ]
        ordering = ["kind", "id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.connection_id})"


class AlertState(models.TextChoices):
    OPEN = "open", "Open"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    RESOLVED = "resolved", "Resolved"


# Alert.detail key set when someone resolved the alert by hand (see Alert).
DISMISSED = "dismissed"


class Alert(models.Model):
    """One alert per rule, subject and period (a month, a day…): re-evaluating after every sync never
    raises it twice, and one that resolved and holds again is reopened (openrouter/alerts.py).

    Resolved by hand, an alert is `detail[DISMISSED]`: not reopened while its condition holds on,
    only after it cleared (evaluation then drops the mark) and holds again.

    An alert outlives its rule (deleting a budget deletes its rules): `rule` becomes NULL, the alert
    keeps its kind, subject and text, and is resolved if it was not (see alert_rule_deleted)."""

    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="+")
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="alerts")
    rule = models.ForeignKey(
        AlertRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="alerts"
    )
    kind = models.CharField(max_length=30, choices=AlertKind.choices)
    subject = models.CharField(max_length=300, blank=True)
    period = models.CharField(max_length=40)
    state = models.CharField(max_length=20, choices=AlertState.choices, default=AlertState.OPEN)
    title = models.CharField(max_length=300)
    message = models.TextField()
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    emailed_to = models.JSONField(default=list, blank=True)
    # When an evaluation took the sending of the email on (claimed by a conditional update, so two
    # overlapping evaluations never both send it); None once a send failed, so the next one retries.
    email_attempted_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey("doow.User", null=True, blank=True, on_delete=models.SET_NULL)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["rule", "subject", "period"], name="one_alert_per_rule_period")
        ]
        indexes = [models.Index(fields=["company", "state", "-created_at"], name="alert_company_state_idx")]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.title


# Alerts resolved (or their ids listed) per UPDATE: three parameters each, within SQLite's 999.
RESOLVE_BATCH = 300


def alerts_resolve(alerts, *, reason: str, now=None) -> int:
    """Resolve these alerts (Alert instances) unless already resolved, saying why in
    detail["resolved_reason"] (the Alerts page shows it). Returns how many it resolved.

    One UPDATE per RESOLVE_BATCH alerts, each alert's detail set by a CASE on its id (as bulk_update
    writes it), still only where the alert is not resolved by then: a dismissal made meanwhile keeps
    its detail."""
    now = now or timezone.now()
    alerts = list(alerts)
    resolved = 0
    for first in range(0, len(alerts), RESOLVE_BATCH):
        batch = alerts[first : first + RESOLVE_BATCH]
        detail = alert_details(batch, lambda alert: {**alert.detail, "resolved_reason": reason})
        resolved += (
            Alert.objects.filter(pk__in=[alert.pk for alert in batch])
            .exclude(state=AlertState.RESOLVED)
            .update(state=AlertState.RESOLVED, resolved_at=now, detail=detail)
        )
    return resolved


def alert_details(alerts, detail_of) -> models.Expression:
    """The value of Alert.detail that sets `detail_of(alert)` on each of these alerts (at most
    RESOLVE_BATCH) in one UPDATE: a CASE on the alert's id, as bulk_update writes it."""
    field = Alert._meta.get_field("detail")
    detail = models.Case(
        *(
            models.When(pk=alert.pk, then=models.Value(detail_of(alert), output_field=field))
            for alert in alerts
        ),
        output_field=field,
    )
    if db.features.requires_casted_case_in_updates:  # PostgreSQL: a CASE of parameters is text
        detail = Cast(detail, output_field=field)
    return detail


@receiver(pre_delete, sender=AlertRule, dispatch_uid="usage.alert_rule_deleted")
def alert_rule_deleted(sender, instance: AlertRule, **kwargs) -> None:
    """Deleting a rule (or the budget it watches) keeps its alerts as history (Alert.rule is SET_NULL);
    no alert stays open with no rule left to resolve it. Runs in the deletion's transaction."""
    reason = "Its budget was deleted." if instance.budget_id else "Its alert rule was deleted."
    alerts_resolve(Alert.objects.filter(rule=instance).exclude(state=AlertState.RESOLVED), reason=reason)
