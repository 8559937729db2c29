from datetime import UTC, timedelta

from django.db import migrations, models
from django.db.models.functions import TruncDate

# OpenRouter's /activity window when this migration was written: the 30 UTC days before the sync's.
ACTIVITY_DAYS = 30


def reported_spans_from_runs(apps, schema_editor):
    """Each successful sync of an organization read the 30 days before its own: their union is
    what OpenRouter reported to Doow before the field existed."""
    from integrations import coverage

    Connection = apps.get_model("integrations", "Connection")
    SyncRun = apps.get_model("integrations", "SyncRun")
    days_synced: dict[int, list] = {}
    runs = (
        SyncRun.objects.filter(
            status="succeeded", connection__provider="openrouter", connection__scope="organization"
        )
        .annotate(day=TruncDate("started_at", tzinfo=UTC))
        .values_list("connection_id", "day")
        .distinct()
    )
    for connection_id, day in runs:
        days_synced.setdefault(connection_id, []).append(day)
    for connection_id, days in days_synced.items():
        spans: list = []
        for day in sorted(days):
            spans = coverage.add(spans, day - timedelta(days=ACTIVITY_DAYS), day - timedelta(days=1))
        Connection.objects.filter(pk=connection_id).update(reported_spans=spans)


class Migration(migrations.Migration):
    dependencies = [
        ("integrations", "0003_usage_summaries"),
    ]

    operations = [
        migrations.AddField(
            model_name="connection",
            name="reported_spans",
            field=models.JSONField(blank=True, default=list, null=True),
        ),
        migrations.RunPython(reported_spans_from_runs, migrations.RunPython.noop),
    ]
