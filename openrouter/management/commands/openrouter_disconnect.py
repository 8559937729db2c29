import sys

from django.core.management.base import BaseCommand, CommandError

from integrations.services import connection_disconnect
from openrouter.management.commands._common import company_by_slug
from usage.models import UsageDaily


class Command(BaseCommand):
    # It repairs what the key-ring check (integrations.E001) reports, so that check must not stop it.
    requires_system_checks: list = []
    help = "Disconnect a company's OpenRouter connection(s): the stored key is deleted at once."

    def add_arguments(self, parser):
        parser.add_argument("--company", required=True, help="Company slug")
        parser.add_argument(
            "--connection", type=int, help="Connection id (required if the company has several)"
        )
        parser.add_argument(
            "--delete-usage", action="store_true", help="Also delete the synced usage history (asks first)"
        )
        parser.add_argument(
            "--yes", action="store_true", help="Delete the usage history without asking (scripts)"
        )

    def handle(self, *args, **options):
        company = company_by_slug(options["company"])
        live = company.connections.filter(provider="openrouter").exclude(state="disconnected")
        if options["connection"] is not None:
            live = live.filter(pk=options["connection"])
        connections = list(live)
        if not connections:
            raise CommandError("No live OpenRouter connection matches.")
        if len(connections) > 1:
            ids = ", ".join(str(c.pk) for c in connections)
            raise CommandError(
                f"{company.slug} has several OpenRouter connections ({ids}); pass --connection ID."
            )
        connection = connections[0]
        if options["delete_usage"] and not options["yes"]:
            self.confirm_deleting_usage(connection)
        deleted = connection_disconnect(connection=connection, delete_usage=options["delete_usage"])
        self.stdout.write(
            f"Disconnected {connection.name} (id {connection.pk}); stored key deleted"
            + (f", {deleted} usage rows deleted" if options["delete_usage"] else ", usage history kept")
            + ". Revoke the key in OpenRouter too."
        )

    def confirm_deleting_usage(self, connection) -> None:
        """OpenRouter keeps 30 days of activity: history older than that is gone for good once deleted."""
        rows = UsageDaily.objects.filter(connection=connection).count()
        question = (
            f"Delete {rows} usage rows of {connection.name} (id {connection.pk}) for good? OpenRouter "
            f"gives back only its last 30 days. Type the connection id to confirm: "
        )
        if not sys.stdin.isatty():
            raise CommandError(
                f"--delete-usage deletes {rows} usage rows of {connection.name} for good: confirm at a "
                "terminal, or pass --yes. Nothing was changed."
            )
        if input(question).strip() != str(connection.pk):
            raise CommandError("Not confirmed. Nothing was changed.")
