from django.core.management.base import BaseCommand, CommandError

from integrations.crypto import DecryptionError
from integrations.services import connections_rotate_secrets


class Command(BaseCommand):
    help = "Re-encrypt every stored secret under the first key of DOOW_ENCRYPTION_KEYS (idempotent)."

    def handle(self, *args, **options):
        try:
            rotated, current = connections_rotate_secrets()
        except DecryptionError as exc:
            raise CommandError(f"A stored secret does not decrypt with the key ring: {exc}") from None
        self.stdout.write(f"Re-encrypted {rotated} secret(s); {current} already used the primary key.")
