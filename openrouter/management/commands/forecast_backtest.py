from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal

from django.core.management.base import BaseCommand, CommandError

from openrouter.emulator import Emulator, EmulatorConfig
from usage.backtest import backtest_month


def emulator_daily_spend(emulator: Emulator, start: date, end: date) -> dict[date, Decimal]:
    daily: dict[date, Decimal] = defaultdict(Decimal)
    for row in emulator.truth.activity_rows(start, end):
        daily[date.fromisoformat(row["date"])] += row["usage"]
    return dict(daily)


class Command(BaseCommand):
    help = "Backtest the month-end spend forecast on emulator organizations (the README reports its error)."

    def add_arguments(self, parser):
        parser.add_argument("--seeds", default="1,2,3", help="Comma list of emulator seeds (whole numbers)")
        parser.add_argument("--keys", type=int, default=60, help="Keys per organization (at least 1)")

    def handle(self, *args, **options):
        today = date(2026, 11, 24)
        try:
            seeds = [int(seed) for seed in options["seeds"].split(",")]
        except ValueError:
            raise CommandError(
                f"--seeds takes whole numbers separated by commas, not {options['seeds']!r}."
            ) from None
        if options["keys"] < 1:
            raise CommandError("--keys must be at least 1.")
        for seed in seeds:
            emulator = Emulator(EmulatorConfig(seed=seed, keys=options["keys"], days=120, today=today))
            daily = emulator_daily_spend(emulator, today - timedelta(days=119), today - timedelta(days=1))
            for year, month in ((2026, 9), (2026, 10)):
                result = backtest_month(daily=daily, year=year, month=month)
                self.stdout.write(
                    f"seed {seed} {result.month}: actual ${result.actual:.2f}, mean abs error "
                    f"{result.mean_abs_pct_error:.1%}, last week {result.final_week_abs_pct_error:.1%}, "
                    f"actual inside the range on {result.inside_range:.0%} of days"
                )
