import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.utils import timezone

BATCH = 2000


def move_live_sessions(apps, schema_editor):
    """Every live session of Django's table moves to doow_session with its user's id, so nobody is
    signed out by the upgrade; expired ones are left to go."""
    from django.contrib.auth import SESSION_KEY
    # The store that wrote them (doow.sessions.SessionStore signs as Django's db store does: the
    # same class name, the same salt).
    from django.contrib.sessions.backends.db import SessionStore as DjangoSessionStore

    DjangoSession = apps.get_model("sessions", "Session")
    Session = apps.get_model("doow", "Session")
    codec = DjangoSessionStore()
    live = DjangoSession.objects.filter(expire_date__gt=timezone.now()).order_by("session_key")
    batch = []
    for old in live.iterator(chunk_size=BATCH):
        # A session this SECRET_KEY cannot read decodes as empty: it moves signed out, as it would read.
        user_id = codec.decode(old.session_data).get(SESSION_KEY)
        batch.append(
            Session(
                session_key=old.session_key,
                session_data=old.session_data,
                expire_date=old.expire_date,
                user_id=int(user_id) if str(user_id).isdigit() else None,
            )
        )
        if len(batch) == BATCH:
            Session.objects.bulk_create(batch, ignore_conflicts=True)
            batch = []
    Session.objects.bulk_create(batch, ignore_conflicts=True)
    DjangoSession.objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("doow", "0001_initial"),
        ("sessions", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="Session",
            fields=[
                (
                    "session_key",
                    models.CharField(max_length=40, primary_key=True, serialize=False, verbose_name="session key"),
                ),
                ("session_data", models.TextField(verbose_name="session data")),
                ("expire_date", models.DateTimeField(db_index=True, verbose_name="expire date")),
                (
                    "user",
                    models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "verbose_name": "session",
                "verbose_name_plural": "sessions",
                "abstract": False,
            },
        ),
        migrations.RunPython(move_live_sessions, migrations.RunPython.noop),
    ]
