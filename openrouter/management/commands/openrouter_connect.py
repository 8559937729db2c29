import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from integrations.models import Connection
from openrouter.management.commands._common import company_by_slug
from openrouter.services import ConnectError, openrouter_connect, openrouter_replace_key


class Command(BaseCommand):
    # It repairs what the key-ring check (integrations.E001) reports, so that check must not stop it.
    requires_system_checks: list = []
    help = "Verify an OpenRouter key and connect it to a company (the key is read from a file or stdin, never argv)."

    def add_arguments(self, parser):
        parser.add_argument("--company", required=True, help="Company slug")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--key-file", help="Path of a file holding the key")
        source.add_argument("--key-stdin", action="store_true", help="Read the key from standard input")
        parser.add_argument("--name", default="", help="Connection name (with --connection: its new name)")
        parser.add_argument(
            "--connection",
            type=int,
            help="Replace this connection's key with the new one (same organization), or connect it again "
            "after a disconnect, keeping its history",
        )

    def handle(self, *args, **options):
        company = company_by_slug(options["company"])
        if options["key_file"]:
            try:
                secret = Path(options["key_file"]).read_text().strip()
            except OSError as exc:
                raise CommandError(f"Cannot read the key file: {exc.strerror}") from None
        else:
            secret = sys.stdin.read().strip()
        if options["connection"] is not None:
            self._replace(company, options["connection"], secret, options["name"])
            return
        try:
            connection, notice, again, _same_key = openrouter_connect(
                company=company, secret=secret, name=options["name"]
            )
        except ConnectError as exc:
            raise CommandError(str(exc)) from None
        summary = (
            f"{'Connected again' if again else 'Connected'} {connection.name} (id {connection.pk}) to "
            f"{company.slug}: {connection.get_scope_display().lower()} scope, key {connection.masked_secret}; "
            f"{'sync' if again else 'initial sync'} queued."
        )
        self.stdout.write(summary + (f" Note: {notice}" if notice else ""))

    def _replace(self, company, connection_id: int, secret: str, name: str) -> None:
        connection = Connection.objects.filter(
            company=company, provider="openrouter", pk=connection_id
        ).first()
        if connection is None:
            raise CommandError(f"{company.slug} has no OpenRouter connection with id {connection_id}.")
        try:
            connection, _notice, again, same_key = openrouter_replace_key(
                connection=connection, secret=secret, name=name
            )
        except ConnectError as exc:
            raise CommandError(str(exc)) from None
        done = (
            "Connected again" if again else "Checked the key in use of" if same_key else "Replaced the key of"
        )
        self.stdout.write(
            f"{done} {connection.name} (id {connection.pk}) of {company.slug}: key {connection.masked_secret}; "
            "sync queued."
        )
