from django.core.management.base import BaseCommand, CommandError

from integrations.services import connections_rotate_secrets


class Command(BaseCommand):
    # It repairs what the key-ring check (integrations.E001) reports, so that check must not stop it.
    requires_system_checks: list = []
    help = (
        "Re-encrypt every stored secret under the first key of DOOW_ENCRYPTION_KEYS (idempotent). "
        "A secret that does not decrypt is left as it was and named on stderr; the others are still "
        "re-encrypted, and the command then exits non-zero."
    )

    def handle(self, *args, **options):
        result = connections_rotate_secrets()
        for failure in result.failed:
            # Named by id and company only: never the secret or its ciphertext.
            self.stderr.write(
                f"Connection {failure.connection_id} (company {failure.company_slug}): {failure.reason}"
            )
        summary = f"Re-encrypted {result.rotated} secret(s); {result.current} already used the primary key."
        if result.failed:
            summary += f" {len(result.failed)} could not be decrypted and were left as they were."
        self.stdout.write(summary)
        if result.failed:
            ids = ", ".join(str(failure.connection_id) for failure in result.failed)
            raise CommandError(
                f"{len(result.failed)} stored secret(s) do not decrypt with DOOW_ENCRYPTION_KEYS "
                f"(connection id(s) {ids}). Put the key they were encrypted with back in the key ring and "
                "run this command again, or reconnect those connections."
            )
