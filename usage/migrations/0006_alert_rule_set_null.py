# Alerts outlive their rule (deleting a budget deletes its rules): the alert keeps its kind, subject
# and text, and its rule becomes NULL.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0005_usage_by_key"),
    ]

    operations = [
        migrations.AlterField(
            model_name="alert",
            name="rule",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="alerts",
                to="usage.alertrule",
            ),
        ),
    ]
