"""Reading usage rows (aggregation happens in the database; callers get small result sets) and alerts."""

from dataclasses import dataclass
from datetime import date, timedelta

from django.db.models import CharField, Count, Q, Sum, Value
from django.db.models.functions import Concat

from doow.models import Company
from integrations.models import Connection
from usage.models import Alert, AlertState, UsageDaily, UsageDailyByKey, UsageDailyByModel, UsageMonthlyByKey

METRICS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "spend_usd",
    "byok_spend_usd",
)


def usage_attributed_sums(*, connection_id: int, start: date, end: date):
    """Per (day, workspace, permaslug, provider): the sum over listed keys (unattributed rows excluded)."""
    return (
        UsageDaily.objects.filter(connection_id=connection_id, day__gte=start, day__lte=end)
        .exclude(api_key_hash="")
        .values("day", "workspace_id", "model_permaslug", "provider_name")
        .annotate(**{f"{name}_sum": Sum(name) for name in METRICS})
        .order_by()
    )


DIMENSIONS = {
    "day": ("day",),
    "workspace": ("workspace_id",),
    "key": ("api_key_hash",),
    "model": ("model_permaslug", "model"),
    "provider": ("provider_name",),
}
FILTERS = {
    "workspace": "workspace_id",
    "key": "api_key_hash",
    "model": "model_permaslug",
    "provider": "provider_name",
}


# Usage rows summed over the dimensions a summary leaves out (usage.models), by the dimensions it
# keeps: the same sums for any query that groups and filters by those alone, from far fewer rows.
# The first that covers a query answers it.
SUMMARIES = {
    UsageDailyByModel: ("day", "workspace", "model", "provider"),
    UsageDailyByKey: ("day", "workspace", "key"),
}
SUMMARY_DIMENSIONS = {
    summary: tuple(field for dimension in dimensions for field in DIMENSIONS[dimension])
    for summary, dimensions in SUMMARIES.items()
}


def summaries_current(connection) -> bool:
    """Whether reports may read the connection's usage summaries, as of the connection row the
    caller loaded (which also names the data version its cached figures are keyed by)."""
    return connection.usage_summaries_stale_from is None


def usage_source(dimensions, *, summarized: bool):
    """The smallest table that answers a query using these dimensions (grouped or filtered by).
    `summarized`: the caller checked that the connection's summaries are current."""
    if summarized:
        for summary, covered in SUMMARIES.items():
            if set(dimensions) <= set(covered):
                return summary
    return UsageDaily


def usage_rows(
    *,
    connection_ids,
    start: date,
    end: date,
    filters: dict | None = None,
    dimensions=(),
    summarized: bool = False,
):
    """Usage rows of the connections for days start..end (inclusive), narrowed by dimension filters
    (`{"key": hash, "model": permaslug, ...}`; an empty key hash means the unattributed rows).

    With `summarized` (one connection whose summaries are current), rows of a summary when it keeps
    every dimension filtered by or named in `dimensions`: sums over them equal sums over the rows."""
    filters = {
        name: value for name, value in (filters or {}).items() if value is not None and name in FILTERS
    }
    ids = list(connection_ids)
    source = usage_source([*dimensions, *filters], summarized=summarized and len(ids) == 1)
    rows = source.objects.filter(connection_id__in=ids, day__gte=start, day__lte=end)
    for name, value in filters.items():
        rows = rows.filter(**{FILTERS[name]: value})
    return rows


def usage_totals(**query) -> dict:
    totals = usage_rows(**query).aggregate(**{name: Sum(name) for name in METRICS})
    return {name: totals[name] or 0 for name in METRICS}


def usage_grouped(*, group_by: list[str], order_by: list[str] | None = None, metrics=METRICS, **query):
    """Sums (of `metrics`, every one by default) per combination of the named dimensions (see
    DIMENSIONS), computed in the database."""
    fields = [field for dimension in group_by for field in DIMENSIONS[dimension]]
    query["connection_ids"] = list(query["connection_ids"])
    rows = usage_rows(dimensions=group_by, **query)
    if rows.model is UsageDaily and groups_are_rows(group_by, query["connection_ids"]):
        grouped = rows.values(*fields, *metrics)
    else:
        grouped = rows.values(*fields).annotate(**{name: Sum(name) for name in metrics})
    return grouped.order_by(*(order_by or fields))


def groups_are_rows(group_by, connection_ids) -> bool:
    """Whether grouping one connection's usage rows by these dimensions leaves one row per group.
    A usage row is unique per connection by every dimension (its natural key), so the sums of such
    a grouping are the rows themselves: reading them skips the aggregate and the sort or hash that
    feeds it, which summed single rows (a 100k-row export took half as long without)."""
    return len(connection_ids) == 1 and set(group_by) >= set(DIMENSIONS)


def month_end(day: date) -> date:
    """The last day of `day`'s month."""
    if day.month == 12:
        return day.replace(day=31)
    return day.replace(day=1, month=day.month + 1) - timedelta(days=1)


@dataclass(frozen=True)
class MonthlyPlan:
    """How usage_by_key reads days start..end: the monthly sums of months first..last, plus the
    usage rows of the days in `added`, minus those of the days in `taken_away` (day ranges)."""

    first: date
    last: date
    added: tuple[tuple[date, date], ...]
    taken_away: tuple[tuple[date, date], ...]


# What a day at a range's end read from the usage rows costs, in per-key summary rows: a key's day has
# one usage row per model and provider it used.
END_DAY_COST = 5


def monthly_plan(start: date, end: date) -> MonthlyPlan | None:
    """Every month the range touches is read whole from its monthly sums; at either end, a month the
    range covers only part of is either left out and its days in the range added from the usage
    rows, or kept and its days outside the range taken away, whichever reads fewer days (so a
    range ending yesterday takes away only the rest of this month, which has no rows yet). None
    when the days read at the ends would cost more than the range's own per-key rows: a range of a
    few weeks reads the per-key summary as it is."""
    first, last = start.replace(day=1), end.replace(day=1)
    added, taken_away = [], []

    def adds_inside(inside: tuple[date, date], outside: tuple[date, date]) -> bool:
        """A partly covered month at one end: add its days inside the range, or take away those
        outside it, whichever are fewer. True if added (the month is then not read whole)."""
        if (inside[1] - inside[0]) < (outside[1] - outside[0]):
            added.append(inside)
            return True
        taken_away.append(outside)
        return False

    if first == last:
        taken_away = [
            (a, b)
            for a, b in ((first, start - timedelta(days=1)), (end + timedelta(days=1), month_end(end)))
            if a <= b
        ]
    else:
        if start != first and adds_inside((start, month_end(start)), (first, start - timedelta(days=1))):
            first = month_end(start) + timedelta(days=1)
        if end != month_end(end) and adds_inside((last, end), (end + timedelta(days=1), month_end(end))):
            last = (last - timedelta(days=1)).replace(day=1)
    end_days = sum((b - a).days + 1 for a, b in (*added, *taken_away))
    if END_DAY_COST * end_days >= (end - start).days + 1:
        return None
    return MonthlyPlan(first, last, tuple(added), tuple(taken_away))


def usage_by_key(
    *, connection_id: int, start: date, end: date, filters=None, metrics=METRICS, summarized: bool
):
    """Each key's sums of `metrics` over days start..end, as dicts with `api_key_hash`, in no
    particular order: what the key table sorts and pages, which sums every key of the range.

    With `summarized` (the caller checked that the connection's summaries are current), from one
    monthly row per key and month (UsageMonthlyByKey) and the usage rows of at most half a month at
    either end (monthly_plan): for a 90-day range ending yesterday, a few days' rows. Exactly the usage
    rows' sums, and only the keys with rows in the range (counted, so that a key whose rows there
    sum to zero stays and one with none there goes)."""
    filters = {
        name: value for name, value in (filters or {}).items() if value is not None and name in FILTERS
    }
    plan = monthly_plan(start, end) if summarized else None
    if plan is None or not set(filters) <= set(SUMMARIES[UsageDailyByKey]):
        query = {"connection_ids": [connection_id], "start": start, "end": end, "summarized": summarized}
        return list(usage_grouped(group_by=["key"], metrics=metrics, filters=filters, **query).order_by())

    def sums(rows, counted) -> list[dict]:
        for name, value in filters.items():
            rows = rows.filter(**{FILTERS[name]: value})
        per_key = rows.values("api_key_hash").annotate(**{name: Sum(name) for name in metrics}, rows=counted)
        return list(per_key.order_by())

    def daily(ranges, counted) -> list[dict]:
        """The usage rows' sums of these days, found by their (connection, day) index: the per-key
        summary has none (a sync re-sums its months through the natural key), and reading it
        without one scans all of a connection's days."""
        if not ranges:
            return []
        days = Q()
        for first, last in ranges:
            days |= Q(day__gte=first, day__lte=last)
        return sums(UsageDaily.objects.filter(days, connection_id=connection_id), counted)

    monthly = UsageMonthlyByKey.objects.filter(
        connection_id=connection_id, month__gte=plan.first, month__lte=plan.last
    )
    # A key is in the range if it has a row on a day added, or if its months have more per-key
    # rows than the days taken away: those are counted in per-key rows (distinct day and workspace).
    per_key_rows = Count(Concat("day", Value(" "), "workspace_id", output_field=CharField()), distinct=True)
    totals: dict[str, dict] = {}  # the first row read of each key, the others summed into it
    counts: dict[str, list[int]] = {}  # per key: per-key rows of its months less those taken away; rows added
    for sign, counter, part in (
        (1, 0, sums(monthly, Sum("days_with_rows"))),
        (1, 1, daily(plan.added, Count("id"))),
        (-1, 0, daily(plan.taken_away, per_key_rows)),
    ):
        for row in part:
            key, rows = row["api_key_hash"], row.pop("rows")
            known = totals.get(key)
            if known is None:
                known = totals[key] = row
                counts[key] = [0, 0]
                if sign < 0:
                    for name in metrics:
                        row[name] = -row[name]
            else:
                for name in metrics:
                    known[name] += sign * row[name]
            counts[key][counter] += sign * rows
    return [totals[key] for key, (rows, added) in counts.items() if rows > 0 or added > 0]


def alert_list(*, company: Company, state: str, connection: Connection | None = None):
    """The company's alerts, or one connection's, newest first: `state` is "active" (open and
    acknowledged), "all", or an AlertState (anything else reads as "all")."""
    alerts = Alert.objects.filter(company=company).select_related("connection", "acknowledged_by")
    if connection is not None:
        alerts = alerts.filter(connection=connection)
    if state == "active":
        alerts = alerts.exclude(state=AlertState.RESOLVED)
    elif state in AlertState.values:
        alerts = alerts.filter(state=state)
    return alerts.order_by("-created_at", "-id")
