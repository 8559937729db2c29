"""What finance's OpenRouter detail page shows: a bounded number of aggregate queries per page view,
whatever the number of usage rows."""

import calendar
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from operator import itemgetter
from urllib.parse import urlencode

from django.core.paginator import Paginator
from django.db.models import F, OuterRef, Subquery, Sum
from django.utils import timezone

from integrations import coverage
from integrations.models import Connection, ConnectionState, CredentialScope, EventKind, SyncRunStatus
from openrouter.insights import counters_read_today
from openrouter.models import ApiKey, CreditsSnapshot, Member, Model, Workspace
from usage.cache import cache_get, cache_set_many, cached
from usage.models import UNATTRIBUTED_LABEL, UsageDaily
from usage.selectors import (
    DIMENSIONS,
    METRICS,
    summaries_current,
    usage_by_key,
    usage_grouped,
    usage_rows,
    usage_totals,
)

PRESETS = {
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    "90d": "Last 90 days",
    "this_month": "This month",
    "last_month": "Last month",
    "custom": "Custom",
}
DEFAULT_PRESET = "30d"
TABS = {
    "keys": "By API key",
    "models": "By model",
    "workspaces": "By workspace",
    "providers": "By provider",
    "days": "By day",
}
TAB_DIMENSION = {
    "keys": "key",
    "models": "model",
    "workspaces": "workspace",
    "providers": "provider",
    "days": "day",
}
FILTER_NAMES = ("workspace", "key", "model", "provider")


@dataclass(frozen=True)
class Column:
    name: str  # the ?sort= value
    label: str
    field: str  # key of the row dict
    kind: str = "int"  # int, money, date, datetime
    sortable: bool = True


METRIC_COLUMNS = {
    "spend": Column("spend", "Spend", "spend_usd", "money"),
    "byok": Column("byok", "BYOK", "byok_spend_usd", "money"),
    "requests": Column("requests", "Requests", "requests"),
    "prompt": Column("prompt", "Prompt", "prompt_tokens"),
    "completion": Column("completion", "Completion", "completion_tokens"),
    "tokens": Column("tokens", "Tokens", "total_tokens"),
}
# Each table shows what finance asks of it; the key table keeps narrow because it has the most labels.
TAB_METRICS = {
    "keys": ["spend", "requests", "tokens"],
    "models": ["spend", "requests", "prompt", "completion", "tokens"],
    "workspaces": ["spend", "byok", "requests", "prompt", "completion", "tokens"],
    "providers": ["spend", "byok", "requests", "prompt", "completion", "tokens"],
    "days": ["spend", "byok", "requests", "prompt", "completion", "tokens"],
}
TAB_DEFAULT_SORT = {"days": "-name"}
# Database expressions to order the grouped rows by; "name" and "last_used" depend on the tab.
SORT_FIELDS = {
    "spend": "spend_usd",
    "byok": "byok_spend_usd",
    "requests": "requests",
    "prompt": "prompt_tokens",
    "completion": "completion_tokens",
    "tokens": "total_tokens",
    "name": "sort_name",
    "last_used": "last_used_at",
}
CHART_METRICS = {"spend": "Spend (USD)", "tokens": "Tokens", "requests": "Requests"}
CHART_TITLES = {
    "spend": "Daily spend by model",
    "tokens": "Daily tokens by model",
    "requests": "Daily requests by model",
}
TOP_MODELS = 6
PAGE_SIZE = 25
# The key filter lists this many keys by name; the table's rows filter by any key.
KEY_CHOICES = 500
MAX_CUSTOM_DAYS = 3660  # between From and To: ten years
# Custom ranges stay where dates (and the period before them, for comparison) exist: OpenRouter
# has no usage before 2000, and a range far ahead only asks for overflowing date arithmetic.
EARLIEST_DAY = date(2000, 1, 1)
MAX_DAYS_AHEAD = 366


def _parse_date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def preset_range(preset: str, today: date) -> tuple[date, date]:
    """Rolling presets end yesterday, the last complete UTC day; "this month" runs through today."""
    yesterday = today - timedelta(days=1)
    if preset in ("7d", "30d", "90d"):
        return today - timedelta(days=int(preset[:-1])), yesterday
    if preset == "this_month":
        return today.replace(day=1), today
    if preset == "last_month":
        last = today.replace(day=1) - timedelta(days=1)
        return last.replace(day=1), last.replace(day=calendar.monthrange(last.year, last.month)[1])
    raise ValueError(preset)


@dataclass
class DetailQuery:
    """The page's state, all of it in the URL so a view can be shared."""

    preset: str = DEFAULT_PRESET
    start: date = field(default_factory=lambda: preset_range(DEFAULT_PRESET, timezone.now().date())[0])
    end: date = field(default_factory=lambda: preset_range(DEFAULT_PRESET, timezone.now().date())[1])
    filters: dict = field(default_factory=dict)
    tab: str = "keys"
    sort: str = "spend"
    descending: bool = True
    page: str = "1"
    metric: str = "spend"
    problem: str = ""  # what was wrong with the asked range, if anything (the page shows the default)
    today: date = field(default_factory=lambda: timezone.now().date())  # UTC, as the presets

    @classmethod
    def from_params(cls, params, *, today: date | None = None) -> "DetailQuery":
        today = today or timezone.now().date()
        query = cls(preset=params.get("range") or DEFAULT_PRESET, today=today)
        if query.preset not in PRESETS:
            query.preset, query.problem = DEFAULT_PRESET, "Unknown date range."
        typed_from, typed_to = params.get("from") or "", params.get("to") or ""
        start, end = _parse_date(typed_from), _parse_date(typed_to)
        # A date asked for and not understood, or one end of a range without the other, is said,
        # not replaced by the range picked: a download of other dates would pass for the asked ones.
        unreadable = [
            name
            for name, typed, day in (("From", typed_from, start), ("To", typed_to, end))
            if typed and day is None
        ]
        if unreadable:
            query.preset = DEFAULT_PRESET
            query.problem = f"{unreadable[0]} is not a date: pick one as YYYY-MM-DD."
        elif (start is None) != (end is None):
            query.preset, query.problem = DEFAULT_PRESET, "Pick both From and To."
        # Without JavaScript a range form sends back the dates it showed whatever was changed: dates
        # as shown (`shown`, "from..to") leave the range picked to decide; dates typed over a
        # preset's make a custom range.
        untouched = params.get("shown") == f"{start}..{end}"
        if query.preset != "custom" and start and end and (start, end) != preset_range(query.preset, today):
            query.preset = query.preset if untouched else "custom"
        if query.preset == "custom":
            if start is None or end is None:
                query.preset, query.problem = DEFAULT_PRESET, "Pick both From and To for a custom range."
            elif start > end:
                query.preset, query.problem = DEFAULT_PRESET, "Pick a From on or before To."
            elif (end - start).days > MAX_CUSTOM_DAYS:
                query.preset = DEFAULT_PRESET
                query.problem = f"Pick a range of at most {MAX_CUSTOM_DAYS // 366} years."
            elif start < EARLIEST_DAY or end > today + timedelta(days=MAX_DAYS_AHEAD):
                query.preset = DEFAULT_PRESET
                query.problem = (
                    f"Pick dates from {EARLIEST_DAY:%Y} on and at most {MAX_DAYS_AHEAD} days ahead."
                )
            else:
                query.start, query.end = start, end
        if query.preset != "custom":
            query.start, query.end = preset_range(query.preset, today)
        query.filters = {name: params.get(name) for name in FILTER_NAMES if params.get(name)}
        # "-" stands for the unattributed rows (deleted or unlisted keys) in the key filter.
        if query.filters.get("key") == "-":
            query.filters["key"] = ""
        query.tab = params.get("tab") if params.get("tab") in TABS else "keys"
        default_sort = default_sort_of(query.tab)
        sort = params.get("sort") or default_sort
        if sort.lstrip("-") not in {c.name for c in table_columns(query.tab) if c.sortable}:
            sort = default_sort
        query.sort, query.descending = sort.lstrip("-"), sort.startswith("-")
        query.page = params.get("page") or "1"
        query.metric = params.get("metric") if params.get("metric") in CHART_METRICS else "spend"
        return query

    @property
    def error(self) -> str:
        """The problem, said on the page that shows the default range instead."""
        return f"{self.problem[:-1]}; showing the last 30 days." if self.problem else ""

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def last_reported_day(self) -> date:
        """The range's last day OpenRouter has reported: it reports a UTC day once it has ended.
        Before the range's start when none has."""
        return min(self.end, self.today - timedelta(days=1))

    @property
    def reported_days(self) -> int:
        return max(0, (self.last_reported_day - self.start).days + 1)

    @property
    def previous(self) -> tuple[date, date] | None:
        """The period just before this one, as long as the range's reported days: a range running
        through today (this month) is compared day for day, not with one day more than it holds.
        None while no day of the range has ended. The page compares with `comparison_period`, which
        also leaves out the ended days no sync has read yet."""
        return self.period_before(self.reported_days)

    def period_before(self, days: int) -> tuple[date, date] | None:
        """The `days` days just before the range; None for none."""
        if days <= 0:
            return None
        return self.start - timedelta(days=days), self.start - timedelta(days=1)

    @property
    def filter_items(self) -> tuple:
        """The filters as a stable, hashable value (part of cache keys)."""
        return tuple(sorted(self.filters.items()))

    @property
    def sort_param(self) -> str:
        return ("-" if self.descending else "") + self.sort

    def params(self, **overrides) -> str:
        """This view's query string, with some values changed (None drops one)."""
        values = {"range": self.preset, "tab": self.tab, "metric": self.metric}
        if self.preset == "custom":
            values |= {"from": self.start.isoformat(), "to": self.end.isoformat()}
        for name, value in self.filters.items():
            values[name] = "-" if name == "key" and value == "" else value
        if self.sort_param != default_sort_of(self.tab):
            values["sort"] = self.sort_param
        values |= overrides
        # Defaults stay out of the URL, so a shared link says only what differs.
        defaults = {"range": DEFAULT_PRESET, "tab": "keys", "metric": "spend", "page": 1}
        return urlencode({k: v for k, v in values.items() if v not in (None, "") and defaults.get(k) != v})


def default_sort_of(tab: str) -> str:
    return TAB_DEFAULT_SORT.get(tab, "-spend")


def table_columns(tab: str) -> list[Column]:
    name_column = {
        "keys": Column("name", "API key", "key_name", "text"),
        "models": Column("name", "Model", "model", "text"),
        "workspaces": Column("name", "Workspace", "workspace_name", "text"),
        "providers": Column("name", "Provider / route", "provider_name", "text"),
        "days": Column("name", "Day (UTC)", "day", "date"),
    }[tab]
    columns = [name_column, *(METRIC_COLUMNS[name] for name in TAB_METRICS[tab])]
    if tab == "models":
        columns.append(Column("per_million", "Avg / 1M tokens", "cost_per_million", "money", sortable=False))
    if tab == "keys":
        columns.append(Column("last_used", "Last used (UTC)", "last_used_at", "datetime"))
    return columns


def _delta(current, previous) -> dict:
    current, previous = Decimal(current or 0), Decimal(previous or 0)
    direction = "up" if current > previous else "down" if current < previous else "flat"
    if previous <= 0:
        # No percentage of nothing, nor of a negative total (credits given back, the unattributed
        # remainder): its sign would turn a rise into a fall. The change is shown as an amount.
        change = abs(current - previous)
        return {
            "pct": None,
            "direction": direction,
            "previous": previous,
            "change": change,
            "new": not previous,
        }
    pct = (current - previous) / previous * 100
    # The change as shown, to a tenth of a percent, signed; one that rounds to 0.0 keeps its direction.
    tenths = abs(pct).quantize(Decimal("0.1"), ROUND_HALF_UP)
    if direction == "flat":
        shown = "0.0%"
    elif not tenths:
        shown = "under 0.1%"
    else:
        shown = f"{'+' if direction == 'up' else '−'}{tenths}%"
    return {"pct": pct, "direction": direction, "previous": previous, "shown": shown}


def detail_report(*, connection: Connection, query: DetailQuery) -> dict:
    base = {
        "connection_ids": [connection.pk],
        "filters": query.filters,
        "summarized": summaries_current(connection),
    }
    filters = query.filter_items
    totals = cached(
        connection,
        "totals",
        (query.start, query.end, filters),
        lambda: usage_totals(start=query.start, end=query.end, **base),
    )
    totals["total_tokens"] = totals["prompt_tokens"] + totals["completion_tokens"]
    # The whole range's average, for the model table's footer.
    totals["cost_per_million"] = (
        Decimal(totals["spend_usd"]) * 1_000_000 / totals["total_tokens"] if totals["total_tokens"] else None
    )
    previous, deltas, previous_range = None, {}, comparison_period(connection, query)
    # Compared only when Doow holds every day of the range and of the period before: a day it never
    # read would count as a day without spend, and the change would be an artefact of when the
    # organization was connected (coverage.py).
    range_unknown = unknown_days_in_range(connection, query)
    previous_unknown = _unknown_days(connection, *previous_range) if previous_range else []
    if previous_range and not previous_unknown and not range_unknown:
        prev_start, prev_end = previous_range
        previous = cached(
            connection,
            "totals",
            (prev_start, prev_end, filters),
            lambda: usage_totals(start=prev_start, end=prev_end, **base),
        )
        previous["total_tokens"] = previous["prompt_tokens"] + previous["completion_tokens"]
        deltas = {name: _delta(totals[name], previous[name]) for name in (*METRICS, "total_tokens")}
    has_usage = bool(totals["requests"] or totals["spend_usd"] or totals["byok_spend_usd"])
    status = connection_status(connection)
    # The workspace filter's choices and the key table's workspace column: one read for both.
    workspaces = list(
        Workspace.objects.filter(connection=connection)
        .order_by(*Workspace.LISTED_ORDER)
        .values_list("workspace_id", "name")
    )
    return {
        **status,
        "query": query,
        "presets": PRESETS,
        "tabs": TABS,
        "chart_metrics": CHART_METRICS,
        "chart_title": CHART_TITLES[query.metric],
        "totals": totals,
        "previous": previous,
        "previous_range": previous_range,
        "held_days": held_days(connection, query),
        "previous_range_text": stretches_text([previous_range]) if previous_range else "",
        "deltas": deltas,
        "previous_unknown": stretches_text(previous_unknown),
        "previous_unknown_all": bool(previous_range) and previous_unknown == [previous_range],
        "range_unknown": stretches_text(range_unknown),
        "range_unknown_all": range_unknown == [(query.start, _complete_through(connection, query))],
        # Unknown days after the history's first: the organization went unsynced for a while.
        "unknown_gap": any(
            last > connection.history_from for _first, last in range_unknown + previous_unknown
        ),
        "has_any_usage": has_usage,
        "chart": _chart(connection, query, base, range_unknown) if has_usage else None,
        "table": _table(connection, query, base, workspaces=dict(workspaces)),
        "options": _filter_options(connection, query, workspaces=workspaces),
        "today_partial": _today_partial(connection, query),
        "notices": _notices(connection, query, has_usage, status["latest_run"], range_unknown),
        "unattributed_label": UNATTRIBUTED_LABEL,
    }


def connection_status(connection: Connection) -> dict:
    """The header: who, what scope, how fresh. Cheap enough to poll while a sync runs."""
    latest_run = connection.runs.order_by("-started_at", "-id").first()
    return {
        "connection": connection,
        "credits": CreditsSnapshot.objects.filter(connection=connection).order_by("-taken_at").first(),
        "latest_run": latest_run,
        "is_single_key": connection.scope == CredentialScope.SINGLE_KEY,
        "is_loading": connection.shown_state in (ConnectionState.SYNCING, ConnectionState.VERIFYING)
        and connection.last_synced_at is None,
        "is_syncing": connection.shown_state in (ConnectionState.SYNCING, ConnectionState.VERIFYING),
        # Sent and not started yet ("Sync now"): the header polls until the sync has run, as the cards do.
        "is_queued": connection.sync_queued_since is not None,
    }


def _unknown_days(connection: Connection, first: date, last: date) -> list[tuple[date, date]]:
    """The stretches from `first` to `last` that OpenRouter never reported to Doow (before the
    organization's first sync, or while it went unsynced for longer than OpenRouter keeps activity).
    None are named for a single key (OpenRouter gives it no daily activity at all, as its notice
    says), nor before any sync has recorded the days it read (nothing is shown then, or the rows
    came from before Doow recorded them)."""
    if connection.scope == CredentialScope.SINGLE_KEY or not connection.reported_spans:
        return []
    return coverage.gaps(connection.reported_spans, first, last)


def days_unknown_notice(connection: Connection, unknown: list, *, shown: str) -> dict:
    """The notice naming a range's days OpenRouter never reported to Doow (`_unknown_days`);
    `shown`: how the page shows them."""
    first = connection.history_from
    why = (
        f"Doow's history of this organization starts on {first:%-d %b %Y}, the oldest day OpenRouter "
        "still kept at the first sync"
    )
    if unknown[-1][1] > first:
        why += ", with a gap where the organization went unsynced for longer than that"
    return {
        "level": "info",
        "code": "days_unknown",
        "title": f"No figures for {stretches_text(unknown)}",
        "text": f"OpenRouter keeps only its last 30 days of daily activity, and {why}. Those days are "
        f"unknown, not days without spend: the figures cover the rest of the range, and {shown}.",
    }


def unknown_days_in_range(connection: Connection, query: DetailQuery) -> list[tuple[date, date]]:
    """`_unknown_days` of the range's complete days: days after the last one a sync read are not
    unknown but not read yet (the next sync reads them; the chart names them apart)."""
    through = _complete_through(connection, query)
    return _unknown_days(connection, query.start, through) if query.start <= through else []


def range_notices(connection: Connection, query: DetailQuery, *, shown: str) -> list[dict]:
    """The days_unknown notice of a page showing the range's complete days (people, reconciliation)."""
    unknown = unknown_days_in_range(connection, query)
    return [days_unknown_notice(connection, unknown, shown=shown)] if unknown else []


def stretches_text(stretches: list[tuple[date, date]]) -> str:
    """ "25 Sep – 24 Oct 2026, 3 Nov 2026": each stretch of days, a lone day by itself."""

    def one(first: date, last: date) -> str:
        if first == last:
            return f"{first:%-d %b %Y}"
        start = f"{first:%-d %b %Y}" if first.year != last.year else f"{first:%-d %b}"
        return f"{start} – {last:%-d %b %Y}"

    return ", ".join(one(first, last) for first, last in stretches)


def _notices(
    connection: Connection, query: DetailQuery, has_usage: bool, latest_run, range_unknown: list
) -> list[dict]:
    """The troubleshooting list, narrowed to what explains this view. Each: level, code, title, text."""
    notices = []
    if connection.state == ConnectionState.NEEDS_ATTENTION:
        notices.append(
            {
                "level": "error",
                "code": "needs_attention",
                "title": "This connection needs attention",
                "text": f"{connection.attention_reason} Figures below are from the last successful sync.",
            }
        )
    if connection.state == ConnectionState.DISCONNECTED:
        notices.append(
            {
                "level": "info",
                "code": "disconnected",
                "title": "Disconnected",
                "text": "Doow no longer syncs this organization; the usage synced before is kept and shown. "
                "An admin can connect it again with a new key (Company settings → Connect again), and its "
                "history goes on in this same connection.",
            }
        )
    if connection.scope == CredentialScope.SINGLE_KEY:
        notices.append(
            {
                "level": "warning",
                "code": "single_key",
                "title": "A normal API key: single-key scope",
                "text": "OpenRouter only shows this key's own usage counters to a normal key, not daily "
                "activity by model, workspace or other keys, so this page shows those counters (today, "
                "this week, this month) and no daily figures to total or compare. Connect a management "
                "key for the whole organization.",
            }
        )
    if latest_run is not None and _was_rate_limited(latest_run):
        notices.append(
            {
                "level": "warning",
                "code": "rate_limited",
                "title": "OpenRouter rate-limited the last sync",
                "text": "Doow waited and retried; what was fetched is kept and the next sync completes the "
                "rest. Recent figures may lag until then.",
            }
        )
    elif latest_run is not None and latest_run.status in (SyncRunStatus.FAILED, SyncRunStatus.PARTIAL):
        notices.append(
            {
                "level": "error",
                "code": "sync_failed",
                "title": "The last sync did not finish",
                "text": "Figures may be missing recent days until a sync succeeds; it is retried "
                "automatically.",
            }
        )
    if range_unknown:
        notices.append(
            days_unknown_notice(
                connection, range_unknown, shown="the chart greys them; the exports hold no rows for them"
            )
        )
    complete = connection.complete_through
    through = _complete_through(connection, query)
    held = held_days(connection, query)
    # A range none of whose days has ended gets the notice that says so (no_reported_day) alone, and
    # one whose ended days no sync has read yet the one that says that (not_read_yet).
    if query.reported_days and not held:
        ended = stretches_text([(query.start, query.last_reported_day)])
        ended += " has" if query.start == query.last_reported_day else " have"
        if connection.state == ConnectionState.DISCONNECTED:
            when = "and this connection is no longer synced"
        else:
            when = "and the next sync reads them"
        notices.append(
            {
                "level": "info",
                "code": "not_read_yet",
                "title": "No day of this range has been read yet",
                "text": f"OpenRouter reports a UTC day once it has ended: {ended} ended, but Doow holds "
                f"daily figures through {complete:%-d %b %Y} UTC only, {when}. These days are not "
                "read yet, not days without spend, so there is no change to show.",
            }
        )
    elif held and query.end > through:
        through_text = f"through {complete:%-d %b} UTC" if complete else "for no day yet"
        notices.append(
            {
                "level": "info",
                "code": "reporting_delay",
                "title": "Today is not complete yet",
                "text": f"OpenRouter reports a UTC day once it has ended, so daily figures are complete "
                f"{through_text}. Today's partial spend, from the keys' counters, is shown separately below.",
            }
        )
    if not has_usage and connection.last_synced_at is not None:
        if not query.reported_days:
            notices.append(
                {
                    "level": "info",
                    "code": "no_reported_day",
                    "title": "No day of this range has ended yet",
                    "text": f"OpenRouter reports a UTC day once it has ended, and no day from "
                    f"{query.start:%-d %b %Y} to {query.end:%-d %b %Y} has yet. Pick a range with earlier "
                    "days to see their figures.",
                }
            )
        elif not held:
            pass  # Its ended days are not read yet: not_read_yet says so.
        elif range_unknown == [(query.start, through)]:
            pass  # No day of it is known: the days_unknown notice says why, and nothing more is.
        elif query.filters or UsageDaily.objects.filter(connection=connection).exists():
            # Only the days Doow holds are known to be without spend: not today, nor a day not read yet.
            days = (
                "on the days of this range Doow holds"
                if range_unknown
                else f"between {query.start:%-d %b %Y} and {min(query.end, through):%-d %b %Y}"
            )
            notices.append(
                {
                    "level": "info",
                    "code": "no_usage",
                    "title": "No usage in this range",
                    "text": "Nothing was spent"
                    + (" with these filters" if query.filters else "")
                    + f" {days}. Try a longer range or clear the filters.",
                }
            )
        elif connection.scope == CredentialScope.ORGANIZATION:
            notices.append(
                {
                    "level": "warning",
                    "code": "wrong_organization",
                    "title": "No usage at all in this organization",
                    "text": f"OpenRouter reports no activity for {connection.account_label or 'this account'}. "
                    "If your team's keys live in another OpenRouter organization, the management key was "
                    "created in the wrong one: create it in that organization and connect it instead.",
                }
            )
    return notices


def _was_rate_limited(run) -> bool:
    if run.status == SyncRunStatus.DEFERRED:
        return True
    return run.events.filter(kind=EventKind.RATE_LIMIT).exists()


def table_metrics(tab: str) -> list[str]:
    """The sums a tab's columns show (it is sorted by one of them) and the two every table's
    total_tokens adds up. The key table's query, summing every key's rows of the range, costs ~15%
    less without the three it does not show."""
    shown = {METRIC_COLUMNS[name].field for name in TAB_METRICS[tab]}
    fields = shown | {"prompt_tokens", "completion_tokens"}
    return [metric for metric in METRICS if metric in fields]


def _table(connection: Connection, query: DetailQuery, base: dict, *, workspaces: dict) -> dict:
    dimension = TAB_DIMENSION[query.tab]
    params = (
        query.tab,
        query.sort,
        query.descending,
        query.start,
        query.end,
        query.filter_items,
    )
    rows = CachedTableRows(connection, (*params, PAGE_SIZE), lambda: _table_rows(connection, query, base))
    page = Paginator(rows, PAGE_SIZE).get_page(query.page)
    rows = [dict(row) for row in page.object_list]
    _attach_labels(connection, query.tab, rows, workspaces=workspaces)
    return {"page": page, "rows": rows, "columns": table_columns(query.tab), "dimension": dimension}


def _table_rows(connection: Connection, query: DetailQuery, base: dict) -> list[dict]:
    """Every row of the tab's table over the range, in the order asked for."""
    dimension = TAB_DIMENSION[query.tab]
    if dimension == "key":
        return _key_rows(connection, query, base)
    grouped = usage_grouped(
        start=query.start, end=query.end, group_by=[dimension], metrics=table_metrics(query.tab), **base
    ).annotate(total_tokens=F("prompt_tokens") + F("completion_tokens"))
    if query.sort == "name":
        # Names live beside the usage rows: join them only to sort by them (the page's own rows
        # get their labels afterwards, 25 at a time).
        grouped = grouped.annotate(**_sort_annotations(connection, query.tab))
    order = SORT_FIELDS[query.sort]
    direction = "-" if query.descending else ""
    tiebreak = list(DIMENSIONS[dimension])
    ordered = grouped.order_by(f"{direction}{order}", *tiebreak)
    if query.sort == "name":
        # Unknown names last, whichever the direction.
        expression = F(order).desc(nulls_last=True) if query.descending else F(order).asc(nulls_last=True)
        ordered = grouped.order_by(expression, *tiebreak)
    return list(ordered)


def _key_rows(connection: Connection, query: DetailQuery, base: dict) -> list[dict]:
    """The key table: every key's sums (usage_by_key, which reads them mostly from monthly sums),
    ordered here as the database would order them: by a figure, ties by key hash; or by the key's
    name or last use, ties by key hash, keys with none (unlisted, never used) last by hash."""
    rows = usage_by_key(
        connection_id=connection.pk,
        start=query.start,
        end=query.end,
        filters=base["filters"],
        metrics=table_metrics(query.tab),
        summarized=base["summarized"],
    )
    for row in rows:
        row["total_tokens"] = row["prompt_tokens"] + row["completion_tokens"]
    rows.sort(key=itemgetter("api_key_hash"))
    field = SORT_FIELDS[query.sort]
    if query.sort not in ("name", "last_used"):
        rows.sort(key=itemgetter(field), reverse=query.descending)  # stable: ties stay by hash
        return rows
    if len(rows) < 2:  # a key's own view: nothing to rank, so no need to read every key's name
        return rows
    # The keys in the database's order of that field (its collation for names): summing every
    # per-key row of the range to join the names to them cost a 1M-row connection's page more than
    # the figures' sorts, which read monthly sums.
    order = F(field).desc() if query.descending else F(field).asc()
    ranked = (
        ApiKey.objects.filter(connection=connection, **{f"{field}__isnull": False})
        .order_by(order, "key_hash")
        .values_list("key_hash", flat=True)
    )
    rank = {key_hash: position for position, key_hash in enumerate(ranked)}
    rows.sort(key=lambda row: rank.get(row["api_key_hash"], len(rank)))  # stable: the rest by hash
    return rows


class CachedTableRows:
    """The ordered rows of one table view (one per key, model, day...) for Paginator, cached page by
    page: computing them once stores every page, and a repeat view loads only its own page, so it
    costs the same for 20 keys or 20,000."""

    def __init__(self, connection: Connection, params: tuple, compute):
        self.connection, self.params, self.compute = connection, params, compute
        self.rows: list | None = None
        self.total = cache_get(connection, "table_count", params)

    def fill(self) -> None:
        self.rows = self.compute()
        self.total = len(self.rows)
        pages = {
            ("table_page", (self.params, start // PAGE_SIZE)): self.rows[start : start + PAGE_SIZE]
            for start in range(0, max(self.total, 1), PAGE_SIZE)
        }
        cache_set_many(self.connection, {**pages, ("table_count", self.params): self.total})

    def count(self) -> int:
        if self.total is None:
            self.fill()
        return self.total

    def __len__(self) -> int:
        return self.count()

    def __getitem__(self, index: slice) -> list:
        if self.rows is None and index.start % PAGE_SIZE == 0:
            chunk = cache_get(self.connection, "table_page", (self.params, index.start // PAGE_SIZE))
            if chunk is not None:
                return chunk[: index.stop - index.start]
        if self.rows is None:
            self.fill()  # A page expired before the count did: compute them all again.
        return self.rows[index]


def _sort_annotations(connection: Connection, tab: str) -> dict:
    """Sortable names of the rows of a tab other than keys (a workspace's lives beside the usage rows)."""
    if tab == "workspaces":
        workspaces = Workspace.objects.filter(connection=connection, workspace_id=OuterRef("workspace_id"))
        return {"sort_name": Subquery(workspaces.values("sort_name")[:1])}
    return {"sort_name": F({"models": "model", "providers": "provider_name", "days": "day"}[tab])}


def _attach_labels(connection: Connection, tab: str, rows: list[dict], *, workspaces: dict) -> None:
    """Names for one page of rows: one query per kind of label, whatever the page size; `workspaces`
    maps the connection's workspace ids to their names."""
    if tab == "keys":
        hashes = [row["api_key_hash"] for row in rows if row["api_key_hash"]]
        keys = {k.key_hash: k for k in ApiKey.objects.filter(connection=connection, key_hash__in=hashes)}
        creators = {k.creator_user_id for k in keys.values() if k.creator_user_id}
        members = {m.user_id: m for m in Member.objects.filter(connection=connection, user_id__in=creators)}
        for row in rows:
            key = keys.get(row["api_key_hash"])
            row["key"] = key
            row["last_used_at"] = key.last_used_at if key else None
            row["key_name"] = key.shown_name() if key else UNATTRIBUTED_LABEL
            row["creator"] = members.get(key.creator_user_id) if key else None
            row["workspace_name"] = workspaces.get(key.workspace_id, key.workspace_id) if key else ""
            row["status"] = _key_status(key)
    elif tab == "models":
        permaslugs = [row["model_permaslug"] for row in rows]
        models = {m.permaslug: m for m in Model.objects.filter(permaslug__in=permaslugs)}
        for row in rows:
            row["catalog"] = models.get(row["model_permaslug"])
            tokens = row["total_tokens"]
            row["cost_per_million"] = Decimal(row["spend_usd"] or 0) * 1_000_000 / tokens if tokens else None
    elif tab == "workspaces":
        for row in rows:
            row["workspace_name"] = (
                workspaces.get(row["workspace_id"]) or row["workspace_id"] or "(no workspace)"
            )


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


CHART_FIELDS = {
    "spend": ("spend_usd",),
    "tokens": ("prompt_tokens", "completion_tokens"),
    "requests": ("requests",),
}


def _chart(connection: Connection, query: DetailQuery, base: dict, unknown: list) -> dict:
    """Daily series stacked by the top models of the range; the rest is summed as "other"."""
    # The finished series are cached, not the day-by-model rows behind them: at 10k usage rows those
    # were ~1,000 rows, whose pickling cost a first view more than stacking them did, and a repeat
    # view as much again to unpickle and stack.
    series = cached(
        connection,
        "chart_series",
        (query.start, query.end, query.filter_items, query.metric),
        lambda: _chart_series(query, base),
    )
    days = [query.start + timedelta(days=i) for i in range(query.days)]
    # Days not complete yet would read as days without spend: the page names them and the chart
    # greys their labels.
    through = _complete_through(connection, query)
    unreported = [day for day in days if day > through]
    return {
        "labels": [day.isoformat() for day in days],
        "series": series,
        "metric": query.metric,
        "unreported_from": unreported[0] if unreported else None,
        "unreported_days": len(unreported),
        # Days OpenRouter never reported to Doow: greyed too, and named under the chart.
        "unknown_days": [day.isoformat() for day in coverage.days_in(unknown)],
        "unknown": stretches_text(unknown),
    }


def _chart_series(query: DetailQuery, base: dict) -> list[dict]:
    """One grouped query (day by model) of the chart's metric alone; at most days * models rows,
    whatever the number of usage rows."""
    metric_fields = CHART_FIELDS[query.metric]
    rows = usage_grouped(
        start=query.start, end=query.end, group_by=["day", "model"], metrics=metric_fields, **base
    )
    per_model: dict[str, Decimal] = {}
    cells: dict[tuple[date, str], Decimal] = {}
    for row in rows:
        value = sum((Decimal(row[name] or 0) for name in metric_fields), Decimal(0))
        label = row["model"] or row["model_permaslug"]
        per_model[label] = per_model.get(label, Decimal(0)) + value
        cells[(row["day"], label)] = cells.get((row["day"], label), Decimal(0)) + value
    ranked = sorted(per_model.items(), key=lambda item: item[1], reverse=True)
    top = [name for name, _ in ranked[:TOP_MODELS]]
    others = [name for name, _ in ranked[TOP_MODELS:]]
    days = [query.start + timedelta(days=i) for i in range(query.days)]
    series = [{"label": name, "data": [str(cells.get((day, name), 0)) for day in days]} for name in top]
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
    return series


def _complete_through(connection: Connection, query: DetailQuery) -> date:
    """The range's last day whose figures are complete: OpenRouter has reported it (it reports a UTC
    day once the day has ended) and a sync has read it (`complete_through`)."""
    through = query.last_reported_day
    if connection.complete_through is not None:
        through = min(through, connection.complete_through)
    return through


def held_days(connection: Connection, query: DetailQuery) -> int:
    """How many of the range's days Doow holds complete, from its start through `_complete_through`.
    Fewer than the ended days (`query.reported_days`) between midnight and the first sync that reads
    the day just ended, or while syncs fail."""
    return max(0, (_complete_through(connection, query) - query.start).days + 1)


def comparison_period(connection: Connection, query: DetailQuery) -> tuple[date, date] | None:
    """The period the range is compared with: as many days just before it as it holds complete, so a
    day not read yet is not compared as a day without spend. None while it holds none."""
    return query.period_before(held_days(connection, query))


def _filter_options(connection: Connection, query: DetailQuery, *, workspaces: list) -> dict:
    """Choices for the filters: models and providers seen in the range, every workspace (`workspaces`,
    (id, name) in their listed order), keys by name."""
    # Models and providers from one pass over the range's by-model sums: two grouped queries read
    # the same rows twice.
    endpoints = cached(
        connection,
        "endpoint_choices",
        (query.start, query.end),
        lambda: list(
            usage_rows(
                connection_ids=[connection.pk],
                start=query.start,
                end=query.end,
                dimensions=["model", "provider"],
                summarized=summaries_current(connection),
            )
            .values_list("model_permaslug", "model", "provider_name")
            .distinct()
            .order_by()
        ),
    )
    models = [(permaslug, model) for permaslug, model, _provider in endpoints]
    providers = [provider for _permaslug, _model, provider in endpoints]
    keys, more_keys = key_choices(connection, chosen=query.filters.get("key") or "")
    options = {
        "workspaces": list(workspaces),
        "keys": keys,
        "more_keys": more_keys,
        "models": sorted(set(models), key=lambda item: (item[1], item[0])),
        "providers": [(provider, provider) for provider in sorted(set(providers))],
    }
    _offer_the_filters_applied(query, options)
    return options


def key_choices(connection: Connection, *, chosen: str = "", live_only: bool = False) -> tuple[list, bool]:
    """(key hash, name) of the first KEY_CHOICES keys by name, and of `chosen` if it is past them;
    and whether there are more. A list of every key of a large organization would weigh on each page."""
    keys = ApiKey.objects.filter(connection=connection).order_by(*ApiKey.LISTED_ORDER)
    if live_only:
        keys = keys.filter(missing_since__isnull=True)
    listed = list(keys.values_list("key_hash", "name")[: KEY_CHOICES + 1])
    more = len(listed) > KEY_CHOICES
    listed = listed[:KEY_CHOICES]
    if chosen and all(key_hash != chosen for key_hash, _name in listed):
        listed += keys.filter(key_hash=chosen).values_list("key_hash", "name")
    # A key with no name goes by its hash.
    return [(key_hash, name or key_hash) for key_hash, name in listed], more


def _offer_the_filters_applied(query: DetailQuery, options: dict) -> None:
    """Each filter applied is among its choices, so its list shows it selected: a model or provider
    with no usage in this range (a link from another range), a workspace deleted since, a key hash
    Doow does not know. Otherwise the list would read "All ..." over filtered figures."""
    for name, choices in (
        ("workspace", "workspaces"),
        ("key", "keys"),
        ("model", "models"),
        ("provider", "providers"),
    ):
        value = query.filters.get(name)
        if value and all(choice != value for choice, _label in options[choices]):
            options[choices] = [*options[choices], (value, value)]


def _today_partial(connection: Connection, query: DetailQuery) -> dict:
    """Today's spend so far, from the keys' own counters (OpenRouter's daily activity has no today yet).

    Only the counters a sync read today count (`counters_read_today`): from a sync on an earlier day,
    or one that read some keys before midnight and finished after it, they describe that day."""
    now = timezone.now()
    today = now.date()
    synced_today = bool(connection.last_synced_at and connection.last_synced_at.date() == today)
    result = {
        "synced_today": synced_today,
        "as_of": connection.last_synced_at,
        "spend": 0,
        "byok": 0,
        "top": [],
        "narrowed": bool(query.filters.get("model") or query.filters.get("provider")),
    }
    if not synced_today:
        return result
    workspace, key = query.filters.get("workspace"), query.filters.get("key")
    keys = counters_read_today(connection=connection, now=now, workspace=workspace, key=key)

    def compute():
        total = keys.aggregate(spend=Sum("usage_daily"), byok=Sum("byok_usage_daily"))
        return {
            "spend": total["spend"] or 0,
            "byok": total["byok"] or 0,
            "top": list(keys.filter(usage_daily__gt=0).order_by("-usage_daily", "name")[:10]),
        }

    result |= cached(connection, "today_partial", (today, workspace, key), compute)
    return result
