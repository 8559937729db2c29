"""Serve the OpenRouter management-API emulator on loopback for local development."""

import datetime
import signal

from django.core.management.base import BaseCommand, CommandError

from openrouter.emulator import Emulator, EmulatorConfig


class Command(BaseCommand):
    help = "Run an emulator of OpenRouter's management API (fake, seeded data) until Ctrl-C."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765)
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--keys", type=int, default=50)
        parser.add_argument("--workspaces", type=int, default=3)
        parser.add_argument("--members", type=int, default=4)
        parser.add_argument("--models", type=int, default=12)
        parser.add_argument("--days", type=int, default=30)
        parser.add_argument(
            "--today",
            help="emulated UTC date YYYY-MM-DD (default: the real UTC clock, today's usage growing with it)",
        )
        parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every response")

    def handle(self, *args, **options):
        follows = not options["today"]
        now = datetime.datetime.now(datetime.UTC)
        try:
            today = datetime.date.fromisoformat(options["today"]) if options["today"] else now.date()
            config = EmulatorConfig(
                seed=options["seed"],
                keys=options["keys"],
                workspaces=options["workspaces"],
                members=options["members"],
                models=options["models"],
                days=options["days"],
                today=today,
                time_of_day=now.time() if follows else None,
                latency=options["latency"],
            )
        except ValueError as err:
            raise CommandError(str(err)) from err
        emulator = Emulator(config)
        server = emulator.serve(options["host"], options["port"], follows_clock=follows)
        # These are the emulator's own fake keys, derived from the seed: printing them is the point.
        self.stdout.write(
            f"OpenRouter emulator serving at {server.base_url} (today {today}"
            f"{', following the UTC clock' if follows else ''}, seed {config.seed})"
        )
        self.stdout.write(f"management key: {emulator.management_key}")
        self.stdout.write(f"normal key:     {emulator.normal_key}")
        self.stdout.write("Ctrl-C to stop.")
        self.stdout.flush()
        # Ctrl-C and a process manager's SIGTERM both stop the server cleanly. Set explicitly: a
        # process started in the background by a non-interactive shell inherits SIGINT ignored.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            self.stdout.write("stopped")


def _interrupt(signum, frame):
    raise KeyboardInterrupt
