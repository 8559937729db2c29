"""What finance's OpenRouter detail page shows: a bounded number of aggregate queries per page view,
whatever the number of usage rows."""

import calendar
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from urllib.parse import urlencode

from django.core.paginator import Paginator
from django.db.models import Sum
from django.utils import timezone

from integrations.models import Connection, CredentialScope
from openrouter.models import ApiKey, CreditsSnapshot, Member, Model, Workspace
from usage.models import UNATTRIBUTED_LABEL
from usage.selectors import METRICS, usage_grouped, usage_totals

PRESETS = {
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    "90d": "Last 90 days",
    "this_month": "This month",
    "last_month": "Last month",
    "custom": "Custom",
}
TABS = {
    "keys": "By API key",
    "models": "By model",
    "workspaces": "By workspace",
    "providers": "By provider",
    "days": "By day",
}
TAB_DIMENSIONS = {
    "keys": ["key"],
    "models": ["model"],
    "workspaces": ["workspace"],
    "providers": ["provider"],
    "days": ["day"],
}
SORTS = {
    "spend": "spend_usd",
    "byok": "byok_spend_usd",
    "requests": "requests",
    "prompt": "prompt_tokens",
    "completion": "completion_tokens",
    "tokens": "total_tokens",
}
CHART_METRICS = {"spend": "Spend (USD)", "tokens": "Tokens", "requests": "Requests"}
TOP_MODELS = 6
PAGE_SIZE = 25


def _parse_date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


@dataclass
class DetailQuery:
    preset: str = "30d"
    start: date = field(default_factory=lambda: timezone.now().date() - timedelta(days=30))
    end: date = field(default_factory=lambda: timezone.now().date() - timedelta(days=1))
    filters: dict = field(default_factory=dict)
    tab: str = "keys"
    sort: str = "spend"
    descending: bool = True
    page: str = "1"
    metric: str = "spend"
    error: str = ""

    @classmethod
    def from_params(cls, params, *, today: date | None = None) -> "DetailQuery":
        today = today or timezone.now().date()
        yesterday = today - timedelta(days=1)
        query = cls(preset=params.get("range") or "30d")
        if query.preset not in PRESETS:
            query.preset, query.error = "30d", "Unknown date range; showing the last 30 days."
        if query.preset in ("7d", "30d", "90d"):
            days = int(query.preset[:-1])
            query.start, query.end = today - timedelta(days=days), yesterday
        elif query.preset == "this_month":
            query.start, query.end = today.replace(day=1), today
        elif query.preset == "last_month":
            last = today.replace(day=1) - timedelta(days=1)
            query.start, query.end = (
                last.replace(day=1),
                last.replace(day=calendar.monthrange(last.year, last.month)[1]),
            )
        else:
            start, end = _parse_date(params.get("from")), _parse_date(params.get("to"))
            if start is None or end is None or start > end or (end - start).days > 3660:
                query.preset, query.error = (
                    "30d",
                    "Pick a valid custom range (from ≤ to); showing the last 30 days.",
                )
                query.start, query.end = today - timedelta(days=30), yesterday
            else:
                query.start, query.end = start, end
        query.filters = {
            name: params.get(name)
            for name in ("workspace", "key", "model", "provider")
            if params.get(name) is not None
        }
        # "-" stands for the unattributed rows (deleted or unlisted keys) in the key filter.
        if query.filters.get("key") == "-":
            query.filters["key"] = ""
        query.tab = params.get("tab") if params.get("tab") in TABS else "keys"
        sort = params.get("sort") or "-spend"
        query.descending = sort.startswith("-")
        query.sort = sort.lstrip("-") if sort.lstrip("-") in SORTS else "spend"
        query.page = params.get("page") or "1"
        query.metric = params.get("metric") if params.get("metric") in CHART_METRICS else "spend"
        return query

    @property
    def previous(self) -> tuple[date, date]:
        length = (self.end - self.start).days + 1
        return self.start - timedelta(days=length), self.start - timedelta(days=1)

    def params(self, **overrides) -> str:
        values = {"range": self.preset, "tab": self.tab, "metric": self.metric}
        if self.preset == "custom":
            values |= {"from": self.start.isoformat(), "to": self.end.isoformat()}
        for name, value in self.filters.items():
            values[name] = "-" if name == "key" and value == "" else value
        values["sort"] = ("-" if self.descending else "") + self.sort
        values |= overrides
        return urlencode({k: v for k, v in values.items() if v not in (None, "")})


def _delta(current, previous) -> dict:
    current, previous = Decimal(current or 0), Decimal(previous or 0)
    if not previous:
        return {"pct": None, "direction": "up" if current else "flat"}
    pct = (current - previous) / previous * 100
    return {"pct": pct, "direction": "up" if pct > 0 else "down" if pct < 0 else "flat"}


def _with_totals(row: dict) -> dict:
    row["total_tokens"] = (row.get("prompt_tokens") or 0) + (row.get("completion_tokens") or 0)
    return row


def detail_report(*, connection: Connection, query: DetailQuery) -> dict:
    ids = [connection.pk]
    base = {"connection_ids": ids, "filters": query.filters}
    totals = usage_totals(start=query.start, end=query.end, **base)
    prev_start, prev_end = query.previous
    previous = usage_totals(start=prev_start, end=prev_end, **base)
    deltas = {name: _delta(totals[name], previous[name]) for name in METRICS}
    tokens_total = totals["prompt_tokens"] + totals["completion_tokens"]

    table = _table(connection, query, base)
    return {
        "connection": connection,
        "query": query,
        "presets": PRESETS,
        "tabs": TABS,
        "chart_metrics": CHART_METRICS,
        "credits": CreditsSnapshot.objects.filter(connection=connection).order_by("-taken_at").first(),
        "totals": totals,
        "tokens_total": tokens_total,
        "previous": previous,
        "deltas": deltas,
        "chart": _chart(query, base),
        "table": table,
        "options": _filter_options(connection, query),
        "today_partial": _today_partial(connection, query),
        "is_single_key": connection.scope == CredentialScope.SINGLE_KEY,
        "has_any_usage": bool(totals["requests"] or totals["spend_usd"] or totals["byok_spend_usd"]),
        "unattributed_label": UNATTRIBUTED_LABEL,
    }


def _table(connection: Connection, query: DetailQuery, base: dict) -> dict:
    dimensions = TAB_DIMENSIONS[query.tab]
    order = SORTS[query.sort]
    grouped = usage_grouped(start=query.start, end=query.end, group_by=dimensions, **base)
    if order == "total_tokens":
        grouped = grouped.annotate(total_tokens=Sum("prompt_tokens") + Sum("completion_tokens"))
    ordering = [("-" if query.descending else "") + order]
    if query.tab == "days":
        ordering = ["-day"] if query.sort == "spend" and query.descending else ordering
    paginator = Paginator(
        grouped.order_by(*ordering, *[f for d in dimensions for f in _dimension_fields(d)]), PAGE_SIZE
    )
    page = paginator.get_page(query.page)
    rows = [_with_totals(dict(row)) for row in page.object_list]
    _attach_labels(connection, query.tab, rows)
    return {"page": page, "rows": rows, "dimensions": dimensions}


def _dimension_fields(dimension: str) -> list[str]:
    from usage.selectors import DIMENSIONS

    return list(DIMENSIONS[dimension])


def _attach_labels(connection: Connection, tab: str, rows: list[dict]) -> None:
    if tab == "keys":
        hashes = [row["api_key_hash"] for row in rows if row["api_key_hash"]]
        keys = {k.key_hash: k for k in ApiKey.objects.filter(connection=connection, key_hash__in=hashes)}
        members = {
            m.user_id: m
            for m in Member.objects.filter(
                connection=connection,
                user_id__in=[k.creator_user_id for k in keys.values() if k.creator_user_id],
            )
        }
        workspaces = _workspace_names(connection)
        for row in rows:
            key = keys.get(row["api_key_hash"])
            row["key"] = key
            row["creator"] = members.get(key.creator_user_id) if key else None
            row["workspace_name"] = workspaces.get(key.workspace_id, key.workspace_id) if key else ""
            row["status"] = _key_status(key)
    elif tab == "models":
        models = {
            m.permaslug: m
            for m in Model.objects.filter(permaslug__in=[row["model_permaslug"] for row in rows])
        }
        for row in rows:
            row["catalog"] = models.get(row["model_permaslug"])
            tokens = row["total_tokens"]
            row["cost_per_million"] = (
                (Decimal(row["spend_usd"] or 0) * 1_000_000 / tokens) if tokens else None
            )
    elif tab == "workspaces":
        workspaces = _workspace_names(connection)
        for row in rows:
            row["workspace_name"] = workspaces.get(
                row["workspace_id"], row["workspace_id"] or "(no workspace)"
            )


def _workspace_names(connection: Connection) -> dict:
    return dict(Workspace.objects.filter(connection=connection).values_list("workspace_id", "name"))


def _key_status(key: ApiKey | None) -> str:
    if key is None:
        return "deleted or unlisted"
    if key.missing_since:
        return "deleted"
    if key.disabled:
        return "disabled"
    if key.expires_at and key.expires_at <= timezone.now():
        return "expired"
    return "active"


def _chart(query: DetailQuery, base: dict) -> dict:
    """Daily series stacked by the top models of the range; the rest is summed as "other"."""
    metric_fields = {
        "spend": ("spend_usd",),
        "tokens": ("prompt_tokens", "completion_tokens"),
        "requests": ("requests",),
    }[query.metric]
    rows = usage_grouped(start=query.start, end=query.end, group_by=["day", "model"], **base)
    per_model: dict[str, Decimal] = {}
    cells: dict[tuple[date, str], Decimal] = {}
    for row in rows:
        value = sum(Decimal(row[name] or 0) for name in metric_fields)
        label = row["model"] or row["model_permaslug"]
        per_model[label] = per_model.get(label, Decimal(0)) + value
        cells[(row["day"], label)] = cells.get((row["day"], label), Decimal(0)) + value
    top = [name for name, _ in sorted(per_model.items(), key=lambda item: item[1], reverse=True)[:TOP_MODELS]]
    days = [query.start + timedelta(days=i) for i in range((query.end - query.start).days + 1)]
    series = []
    for name in top:
        series.append({"label": name, "data": [str(cells.get((day, name), 0)) for day in days]})
    others = [name for name in per_model if name not in top]
    if others:
        series.append(
            {
                "label": "other",
                "data": [
                    str(sum((cells.get((day, name), Decimal(0)) for name in others), Decimal(0)))
                    for day in days
                ],
            }
        )
    return {"labels": [day.isoformat() for day in days], "series": series, "metric": query.metric}


def _filter_options(connection: Connection, query: DetailQuery) -> dict:
    """Choices for the filters: models and providers seen in the range, every workspace, keys by name."""
    in_range = {"connection_ids": [connection.pk], "start": query.start, "end": query.end}
    usage = usage_grouped(group_by=["model"], **in_range).values_list("model_permaslug", "model")
    return {
        "workspaces": list(
            Workspace.objects.filter(connection=connection)
            .order_by("name")
            .values_list("workspace_id", "name")
        ),
        "keys": list(
            ApiKey.objects.filter(connection=connection)
            .order_by("name")
            .values_list("key_hash", "name")[:500]
        ),
        "models": sorted({(permaslug, model) for permaslug, model in usage}, key=lambda item: item[1]),
        "providers": sorted(
            set(usage_grouped(group_by=["provider"], **in_range).values_list("provider_name", flat=True))
        ),
    }


def _today_partial(connection: Connection, query: DetailQuery) -> dict:
    keys = ApiKey.objects.filter(connection=connection, missing_since__isnull=True)
    if query.filters.get("workspace"):
        keys = keys.filter(workspace_id=query.filters["workspace"])
    if query.filters.get("key"):
        keys = keys.filter(key_hash=query.filters["key"])
    total = keys.aggregate(spend=Sum("usage_daily"), byok=Sum("byok_usage_daily"))
    top = list(keys.filter(usage_daily__gt=0).order_by("-usage_daily")[:10])
    return {
        "spend": total["spend"] or 0,
        "byok": total["byok"] or 0,
        "top": top,
        "as_of": connection.last_synced_at,
    }
