import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from openrouter.management.commands._common import company_by_slug
from openrouter.services import ConnectError, openrouter_connect


class Command(BaseCommand):
    help = "Verify an OpenRouter key and connect it to a company (the key is read from a file or stdin, never argv)."

    def add_arguments(self, parser):
        parser.add_argument("--company", required=True, help="Company slug")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--key-file", help="Path of a file holding the key")
        source.add_argument("--key-stdin", action="store_true", help="Read the key from standard input")
        parser.add_argument("--name", default="", help="Connection name")

    def handle(self, *args, **options):
        company = company_by_slug(options["company"])
        if options["key_file"]:
            try:
                secret = Path(options["key_file"]).read_text().strip()
            except OSError as exc:
                raise CommandError(f"Cannot read the key file: {exc.strerror}") from None
        else:
            secret = sys.stdin.read().strip()
        try:
            connection, notice = openrouter_connect(company=company, secret=secret, name=options["name"])
        except ConnectError as exc:
            raise CommandError(str(exc)) from None
        summary = (
            f"Connected {connection.name} (id {connection.pk}) to {company.slug}: "
            f"{connection.get_scope_display().lower()} scope, key {connection.masked_secret}; initial sync queued."
        )
        self.stdout.write(summary + (f" Note: {notice}" if notice else ""))
