# Before 0008 makes it a constraint: one rule of a kind per connection (per budget for budget kinds).
# Two evaluations creating the default rules at once could each insert a set; keep the oldest rule of
# each (connection, kind, budget), move the duplicates' alerts to it, and drop an alert of a duplicate
# that repeats one the oldest rule already raised for the same subject and period (the same condition,
# raised twice). A migration of its own: on PostgreSQL each migration is one transaction, and this
# one's row changes are then committed before 0008 builds the unique indexes.

from django.db import migrations
from django.db.models import Count, Min


def merge_duplicates(apps, schema_editor):
    AlertRule = apps.get_model("usage", "AlertRule")
    Alert = apps.get_model("usage", "Alert")
    groups = (
        AlertRule.objects.values("connection_id", "kind", "budget_id")
        .annotate(rules=Count("id"), keep=Min("id"))
        .filter(rules__gt=1)
        .order_by()
    )
    for group in groups:
        duplicates = AlertRule.objects.filter(
            connection_id=group["connection_id"], kind=group["kind"], budget_id=group["budget_id"]
        ).exclude(pk=group["keep"])
        raised = set(Alert.objects.filter(rule_id=group["keep"]).values_list("subject", "period"))
        for alert in Alert.objects.filter(rule__in=duplicates).order_by("pk"):
            if (alert.subject, alert.period) in raised:
                alert.delete()
            else:
                Alert.objects.filter(pk=alert.pk).update(rule_id=group["keep"])
                raised.add((alert.subject, alert.period))
        duplicates.delete()


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0006_alert_rule_set_null"),
    ]

    operations = [
        migrations.RunPython(merge_duplicates, migrations.RunPython.noop),
    ]
