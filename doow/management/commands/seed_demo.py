from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from doow.models import Company, Membership, Role, User

DEMO_PASSWORD = "doow-demo"  # Development-only logins, documented in the README.
DEMO_USERS = [
    ("admin@demo.test", "Ada", "Admin", Role.ADMIN),
    ("finance@demo.test", "Fin", "Ance", Role.FINANCE),
    ("ops@demo.test", "Olive", "Ops", Role.OPS),
]
EMULATOR_SEED = 1
EMULATOR_KEYS = 60


class Command(BaseCommand):
    help = "Create the demo company and its users (idempotent; development only), optionally connected to the emulator."

    def add_arguments(self, parser):
        parser.add_argument(
            "--connect-emulator",
            action="store_true",
            help="Connect the demo company to the built-in OpenRouter emulator (seed 1) if it is not connected yet.",
        )

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("seed_demo creates well-known passwords: it only runs with DEBUG=true.")
        with transaction.atomic():
            company, _ = Company.objects.update_or_create(slug="demo", defaults={"name": "Demo Inc"})
            for email, first, last, role in DEMO_USERS:
                user, created = User.objects.get_or_create(
                    email=email, defaults={"first_name": first, "last_name": last}
                )
                if created or not user.check_password(DEMO_PASSWORD):
                    user.set_password(DEMO_PASSWORD)
                    user.save()
                Membership.objects.update_or_create(user=user, company=company, defaults={"role": role})
        if options["connect_emulator"]:
            self._connect_emulator(company)
        self.stdout.write(
            self.style.SUCCESS("Demo company 'Demo Inc' (slug demo) is ready. Development-only logins:")
        )
        for email, _first, _last, role in DEMO_USERS:
            self.stdout.write(f"  {email:<20} password {DEMO_PASSWORD}   role {role}")

    def _connect_emulator(self, company: Company) -> None:
        from integrations.models import Connection
        from openrouter.emulator import Emulator, EmulatorConfig
        from openrouter.services import ConnectError, openrouter_connect

        if (
            Connection.objects.filter(company=company, provider="openrouter")
            .exclude(state="disconnected")
            .exists()
        ):
            self.stdout.write("Demo company is already connected to OpenRouter (emulator).")
            return
        emulator = Emulator(EmulatorConfig(seed=EMULATOR_SEED, keys=EMULATOR_KEYS))
        admin = User.objects.get(email=DEMO_USERS[0][0])
        try:
            # Verified against the same deterministic emulator organization the emulator server serves.
            connection = openrouter_connect(
                company=company,
                secret=emulator.management_key,
                name="Demo organization (emulator)",
                actor=admin,
                transport=emulator.transport(),
            ).connection
        except ConnectError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"Connected the demo company to the emulator organization (connection {connection.pk})."
        )
