from django.core.management.base import BaseCommand, CommandError

from integrations.models import Connection
from usage.services import usage_summaries_recompute


class Command(BaseCommand):
    help = (
        "Rebuild the usage summaries of connections from their usage rows. Syncs keep them by "
        "themselves; this is for rows changed by other means (by hand, a restore, a bulk load)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--connection", type=int, action="append", help="Connection id (repeatable)")
        parser.add_argument("--all", action="store_true", help="Every connection")

    def handle(self, *args, **options):
        if bool(options["connection"]) == options["all"]:
            raise CommandError("Name connections with --connection ID, or pass --all.")
        ids = (
            list(Connection.objects.values_list("pk", flat=True).order_by("pk"))
            if options["all"]
            else options["connection"]
        )
        unknown = set(ids) - set(Connection.objects.filter(pk__in=ids).values_list("pk", flat=True))
        if unknown:
            raise CommandError(f"No connection with id {', '.join(map(str, sorted(unknown)))}.")
        for connection_id in ids:
            usage_summaries_recompute(connection_id=connection_id)
            self.stdout.write(f"Connection {connection_id}: summaries rebuilt.")
