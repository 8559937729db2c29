"""Reading usage rows. Aggregation happens in the database; callers get small result sets."""

from datetime import date

from django.db.models import Sum

from usage.models import UsageDaily

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


def usage_rows(*, connection_ids, start: date, end: date, filters: dict | None = None):
    """Usage rows of the connections for days start..end (inclusive), narrowed by dimension filters
    (`{"key": hash, "model": permaslug, ...}`; an empty key hash means the unattributed rows)."""
    rows = UsageDaily.objects.filter(connection_id__in=list(connection_ids), day__gte=start, day__lte=end)
    for name, value in (filters or {}).items():
        if value is not None and name in FILTERS:
            rows = rows.filter(**{FILTERS[name]: value})
    return rows


def usage_totals(**query) -> dict:
    totals = usage_rows(**query).aggregate(**{name: Sum(name) for name in METRICS})
    return {name: totals[name] or 0 for name in METRICS}


def usage_grouped(*, group_by: list[str], order_by: list[str] | None = None, **query):
    """Sums per combination of the named dimensions (see DIMENSIONS), computed in the database."""
    fields = [field for dimension in group_by for field in DIMENSIONS[dimension]]
    grouped = usage_rows(**query).values(*fields).annotate(**{name: Sum(name) for name in METRICS})
    return grouped.order_by(*(order_by or fields))
