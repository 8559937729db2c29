from django.db import migrations

from openrouter.normalize import name_sort_key

BATCH = 2000


def fill_sort_names(apps, schema_editor):
    """Keys and workspaces stored before the column existed. A sync fills the ones it lists, but
    deleted keys are never listed again, and until then they would all sort first."""
    shown_name = {
        "ApiKey": lambda key: key.name or key.key_hash,
        "Workspace": lambda workspace: workspace.name,
    }
    for model, name in shown_name.items():
        rows = apps.get_model("openrouter", model).objects
        batch = []
        for row in rows.order_by("pk").iterator(chunk_size=BATCH):
            row.sort_name = name_sort_key(name(row))
            batch.append(row)
            if len(batch) == BATCH:
                rows.bulk_update(batch, ["sort_name"])
                batch = []
        rows.bulk_update(batch, ["sort_name"])


class Migration(migrations.Migration):
    # Each batch commits on its own: one transaction over every key of every tenant would hold the
    # key table's rows locked against the syncs for the whole fill. Apart from the columns (0004), so
    # that a fill stopped halfway is simply run again.
    atomic = False

    dependencies = [("openrouter", "0004_sort_names")]

    operations = [migrations.RunPython(fill_sort_names, migrations.RunPython.noop)]
