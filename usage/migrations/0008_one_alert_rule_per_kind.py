# One rule of a kind per connection, or per budget for the budget kinds (0007 merged duplicates).

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0007_alert_rule_duplicates_merge"),
    ]

    operations = [
        migrations.AddConstraint(
            model_name="alertrule",
            constraint=models.UniqueConstraint(
                condition=models.Q(budget__isnull=True),
                fields=("connection", "kind"),
                name="one_connection_rule_per_kind",
            ),
        ),
        migrations.AddConstraint(
            model_name="alertrule",
            constraint=models.UniqueConstraint(
                condition=models.Q(budget__isnull=False),
                fields=("connection", "kind", "budget"),
                name="one_budget_rule_per_kind",
            ),
        ),
    ]
