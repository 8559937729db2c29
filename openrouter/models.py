"""What Doow keeps of an OpenRouter organization besides daily usage rows (usage.UsageDaily)."""

from django.db import models

from doow.models import Company
from integrations.models import Connection
from openrouter.normalize import NAME_SORT_KEY_LENGTH, name_sort_key

MONEY = {"max_digits": 24, "decimal_places": 12}


class ListedByName(models.Model):
    """Listed by the name the pages show: `sort_name` is its name_sort_key, kept by every save (and
    written beside the name by the sync's bulk writes), so the database sorts as people read."""

    sort_name = models.CharField(max_length=NAME_SORT_KEY_LENGTH, blank=True, default="")
    # order_by(*LISTED_ORDER): by sort name, then the subclass's identifier for names that tie.
    LISTED_ORDER: tuple[str, str]

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.shown_name()

    def save(self, *args, **kwargs):
        self.sort_name = name_sort_key(self.shown_name())
        update_fields = kwargs.get("update_fields")
        if update_fields is not None:
            kwargs["update_fields"] = {*update_fields, "sort_name"}
        super().save(*args, **kwargs)

    def shown_name(self) -> str:
        return self.name


class Workspace(ListedByName):
    LISTED_ORDER = ("sort_name", "workspace_id")

    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="+")
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="openrouter_workspaces")
    workspace_id = models.CharField(max_length=100)
    name = models.CharField(max_length=200)
    slug = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["connection", "workspace_id"], name="or_workspace_key")
        ]


class Member(models.Model):
    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="+")
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="openrouter_members")
    user_id = models.CharField(max_length=100)
    email = models.CharField(max_length=254, blank=True)
    first_name = models.CharField(max_length=150, blank=True)
    last_name = models.CharField(max_length=150, blank=True)
    role = models.CharField(max_length=50, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["connection", "user_id"], name="or_member_key")]

    def __str__(self) -> str:
        return self.display_name

    @property
    def display_name(self) -> str:
        return (
            " ".join(part for part in (self.first_name, self.last_name) if part) or self.email or self.user_id
        )


class ApiKey(ListedByName):
    """The current state of one OpenRouter API key, plus when its activity was last fetched."""

    LISTED_ORDER = ("sort_name", "key_hash")

    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="+")
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="openrouter_keys")
    key_hash = models.CharField(max_length=100)
    name = models.CharField(max_length=300, blank=True)
    label = models.CharField(max_length=300, blank=True)
    workspace_id = models.CharField(max_length=100, blank=True)
    creator_user_id = models.CharField(max_length=100, blank=True)
    disabled = models.BooleanField(default=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    limit = models.DecimalField(null=True, blank=True, **MONEY)
    limit_remaining = models.DecimalField(null=True, blank=True, **MONEY)
    limit_reset = models.CharField(max_length=40, blank=True)
    usage = models.DecimalField(default=0, **MONEY)
    usage_daily = models.DecimalField(default=0, **MONEY)
    usage_weekly = models.DecimalField(default=0, **MONEY)
    usage_monthly = models.DecimalField(default=0, **MONEY)
    byok_usage = models.DecimalField(default=0, **MONEY)
    byok_usage_daily = models.DecimalField(default=0, **MONEY)
    byok_usage_weekly = models.DecimalField(default=0, **MONEY)
    byok_usage_monthly = models.DecimalField(default=0, **MONEY)
    created_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_listed_at = models.DateTimeField(null=True, blank=True)
    # No longer listed by OpenRouter (deleted); its synced usage stays.
    missing_since = models.DateTimeField(null=True, blank=True)
    # Incremental sync: the counters seen when this key's activity was last fetched.
    fetched_usage = models.DecimalField(null=True, blank=True, **MONEY)
    fetched_byok_usage = models.DecimalField(null=True, blank=True, **MONEY)
    fetched_last_used_at = models.DateTimeField(null=True, blank=True)
    activity_fetched_at = models.DateTimeField(null=True, blank=True)
    activity_fetched_through = models.DateField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["connection", "key_hash"], name="or_apikey_key")]
        indexes = [
            models.Index(fields=["connection", "workspace_id"], name="or_apikey_ws_idx"),
            # Key lists show a connection's first keys by name: an index scan, not a sort of them all.
            models.Index(fields=["connection", "sort_name", "key_hash"], name="or_apikey_sort_idx"),
        ]

    def shown_name(self) -> str:
        return self.name or self.key_hash


class ApiKeySnapshot(models.Model):
    """A key's counters as seen on one UTC day (last sync of that day wins): per-key history beyond
    OpenRouter's 30-day activity window, and today's partial spend."""

    # No database constraint on the company copy, as on usage.UsageDaily: the connection ties it.
    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    key_hash = models.CharField(max_length=100)
    day = models.DateField()
    taken_at = models.DateTimeField()
    usage = models.DecimalField(default=0, **MONEY)
    usage_daily = models.DecimalField(default=0, **MONEY)
    usage_weekly = models.DecimalField(default=0, **MONEY)
    usage_monthly = models.DecimalField(default=0, **MONEY)
    byok_usage = models.DecimalField(default=0, **MONEY)
    byok_usage_daily = models.DecimalField(default=0, **MONEY)
    byok_usage_weekly = models.DecimalField(default=0, **MONEY)
    byok_usage_monthly = models.DecimalField(default=0, **MONEY)
    limit_remaining = models.DecimalField(null=True, blank=True, **MONEY)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["connection", "key_hash", "day"], name="or_apikey_snapshot_key")
        ]

    def __str__(self) -> str:
        return f"{self.key_hash} {self.day}"


class CreditsSnapshot(models.Model):
    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="+")
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="openrouter_credits")
    taken_at = models.DateTimeField(db_index=True)
    total_credits = models.DecimalField(**MONEY)
    total_usage = models.DecimalField(**MONEY)

    class Meta:
        ordering = ["-taken_at"]
        get_latest_by = "taken_at"
        # A connection's latest balance (every page header, the credit alerts, reconciliation): by
        # taken_at alone, PostgreSQL walked every tenant's snapshots back to a stalled connection's.
        indexes = [models.Index(fields=["connection", "-taken_at"], name="credits_conn_taken_idx")]

    def __str__(self) -> str:
        return f"{self.taken_at:%Y-%m-%d %H:%M} {self.total_credits - self.total_usage}"

    @property
    def balance(self):
        return self.total_credits - self.total_usage


class Model(models.Model):
    """OpenRouter's model catalog, shared by every connection."""

    slug = models.CharField(max_length=200, unique=True)
    permaslug = models.CharField(max_length=200, db_index=True)
    name = models.CharField(max_length=300)
    context_length = models.PositiveIntegerField(null=True, blank=True)
    prompt_price = models.DecimalField(null=True, blank=True, max_digits=24, decimal_places=14)
    completion_price = models.DecimalField(null=True, blank=True, max_digits=24, decimal_places=14)
    refreshed_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.name


class KeyOwner(models.Model):
    """An admin's hand-made answer to "whose key is this?". Syncs never touch it, so it outlives them."""

    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="+")
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="openrouter_key_owners")
    key_hash = models.CharField(max_length=100)
    user = models.ForeignKey("doow.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    set_by = models.ForeignKey(
        "doow.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    set_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["connection", "key_hash"], name="or_key_owner_key")]

    def __str__(self) -> str:
        return f"{self.key_hash} → {self.user or 'nobody'}"
