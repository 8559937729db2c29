from datetime import date, timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from openrouter import exports
from openrouter.management.commands._common import company_by_slug
from openrouter.report import EARLIEST_DAY, MAX_CUSTOM_DAYS, MAX_DAYS_AHEAD


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{value!r} is not a date (YYYY-MM-DD).") from None


class Command(BaseCommand):
    help = "Write a company's OpenRouter usage rows to stdout as CSV or JSON (money exact, dates UTC)."

    def add_arguments(self, parser):
        parser.add_argument("--company", required=True)
        parser.add_argument("--from", dest="start", help="First day (UTC), default 30 days ago")
        parser.add_argument("--to", dest="end", help="Last day (UTC), default today")
        parser.add_argument("--group-by", default="", help="Comma list of day,workspace,key,model,provider")
        parser.add_argument("--format", choices=["csv", "json"], default="csv")

    def handle(self, *args, **options):
        company = company_by_slug(options["company"])
        default_start, default_end = exports.default_range()
        start = _date(options["start"]) if options["start"] else default_start
        end = _date(options["end"]) if options["end"] else default_end
        if start > end:
            raise CommandError("--from must not be after --to.")
        # The bounds the page's download keeps (openrouter.report): an export of other dates than
        # asked for, or of days that cannot have usage, would pass for the asked ones.
        latest = timezone.now().date() + timedelta(days=MAX_DAYS_AHEAD)
        if start < EARLIEST_DAY or end > latest:
            raise CommandError(
                f"Pick dates from {EARLIEST_DAY} to {latest} (at most {MAX_DAYS_AHEAD} days ahead)."
            )
        if (end - start).days > MAX_CUSTOM_DAYS:
            raise CommandError(f"A range spans at most {MAX_CUSTOM_DAYS} days; export a longer one in parts.")
        try:
            group_by = exports.parse_group_by(options["group_by"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        connection_ids = list(company.connections.filter(provider="openrouter").values_list("pk", flat=True))
        selection = {"connection_ids": connection_ids, "start": start, "end": end, "group_by": group_by}
        if options["format"] == "csv":
            chunks = exports.csv_chunks(**selection)
        else:
            chunks = exports.write_json(exports.export_records(**selection))
        for chunk in chunks:
            self.stdout.write(chunk, ending="")
