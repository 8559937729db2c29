from django.db import models

from doow.models import Company
from integrations.models import Connection

UNATTRIBUTED_KEY = ""  # api_key_hash of usage no listed key accounts for (deleted or unlisted keys)
UNATTRIBUTED_LABEL = "(deleted or unlisted keys)"


class UsageDaily(models.Model):
    """Usage of one UTC day, aggregated per (workspace, API key, model, provider).

    Values are absolute: a re-fetched day overwrites its rows, never adds to them. Empty strings
    (not NULL) stand for "none" so the natural key's unique constraint holds on every database.
    """

    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="+")
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="usage_rows")
    day = models.DateField()
    workspace_id = models.CharField(max_length=100, blank=True, default="")
    api_key_hash = models.CharField(max_length=100, blank=True, default="")
    model = models.CharField(max_length=200)
    model_permaslug = models.CharField(max_length=200)
    provider_name = models.CharField(max_length=100)
    requests = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    spend_usd = models.DecimalField(max_digits=24, decimal_places=12, default=0)
    byok_spend_usd = models.DecimalField(max_digits=24, decimal_places=12, default=0)

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
