"""Reading usage rows (aggregation happens in the database; callers get small result sets) and alerts."""

from datetime import date, timedelta

from django.db.models import Q, Sum

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


def whole_months(start: date, end: date) -> tuple[date, date] | None:
    """The first days of the first and the last calendar month lying wholly inside start..end;
    None if none does."""
    first = start if start.day == 1 else month_end(start) + timedelta(days=1)
    last = (
        end.replace(day=1)
        if end == month_end(end)
        else (end.replace(day=1) - timedelta(days=1)).replace(day=1)
    )
    return (first, last) if first <= last else None


def usage_by_key(
    *, connection_id: int, start: date, end: date, filters=None, metrics=METRICS, summarized: bool
):
    """Each key's sums of `metrics` over days start..end, as dicts with `api_key_hash`, in no
    particular order: what the key table sorts and pages, which sums every key of the range.

    With `summarized` (the caller checked that the connection's summaries are current), from one
    monthly row per key for each whole month of the range (UsageMonthlyByKey) and the daily rows of
    the days at either end: a third of the rows of a 90-day range. The same sums as the usage rows'."""
    filters = {
        name: value for name, value in (filters or {}).items() if value is not None and name in FILTERS
    }
    months = whole_months(start, end) if summarized else None
    if months is None or not set(filters) <= set(SUMMARIES[UsageDailyByKey]):
        query = {"connection_ids": [connection_id], "start": start, "end": end, "summarized": summarized}
        return list(usage_grouped(group_by=["key"], metrics=metrics, filters=filters, **query).order_by())
    first, last = months

    def sums(rows) -> list[dict]:
        for name, value in filters.items():
            rows = rows.filter(**{FILTERS[name]: value})
        return list(rows.values("api_key_hash").annotate(**{name: Sum(name) for name in metrics}).order_by())

    by_month = UsageMonthlyByKey.objects.filter(
        connection_id=connection_id, month__gte=first, month__lte=last
    )
    ends = Q(day__gte=start, day__lt=first) | Q(day__gt=month_end(last), day__lte=end)
    by_day = UsageDailyByKey.objects.filter(ends, connection_id=connection_id)
    totals: dict[str, dict] = {}
    for row in [*sums(by_month), *sums(by_day)]:
        known = totals.setdefault(row["api_key_hash"], row)
        if known is not row:
            for name in metrics:
                known[name] += row[name]
    return list(totals.values())


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
