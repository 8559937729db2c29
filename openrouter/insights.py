"""Turning synced OpenRouter data into decisions: month-to-date and forecast, budgets, people,
reconciliation. Reads only; alert evaluation (openrouter/alerts.py) builds on these."""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.db.models import Q, Sum
from django.utils import timezone

from doow.models import Membership, User
from integrations.models import Connection
from openrouter.models import ApiKey, ApiKeySnapshot, CreditsSnapshot, KeyOwner, Member, Workspace
from usage.cache import cached
from usage.forecast import RUN_RATE_DAYS, Forecast, month_end_forecast
from usage.models import UNATTRIBUTED_LABEL, Budget, BudgetScope, UsageDaily
from usage.selectors import FILTERS, summaries_current, usage_rows


def _day_fraction(now: datetime) -> float:
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return min(1.0, (now - midnight).total_seconds() / 86400)


def daily_spend(
    *, connection: Connection, start: date, end: date, workspace: str | None = None, key: str | None = None
) -> dict[date, Decimal]:
    rows = usage_rows(
        connection_ids=[connection.pk],
        start=start,
        end=end,
        filters={"workspace": workspace, "key": key},
        dimensions=["day"],
        summarized=summaries_current(connection),
    )
    return cached(
        connection,
        "daily_spend",
        (start, end, workspace, key),
        lambda: {
            row["day"]: row["spend"] for row in rows.values("day").annotate(spend=Sum("spend_usd")).order_by()
        },
    )


def listed_keys(*, connection: Connection, workspace: str | None = None, key: str | None = None):
    """The keys OpenRouter still lists, in one workspace or just one key: their own counters
    (`usage_daily`...) are the only source of today's spend before the UTC day ends."""
    keys = ApiKey.objects.filter(connection=connection, missing_since__isnull=True)
    if workspace is not None:
        keys = keys.filter(workspace_id=workspace)
    if key is not None:
        keys = keys.filter(key_hash=key)
    return keys


def today_partial(*, connection: Connection, workspace: str | None = None, key: str | None = None) -> Decimal:
    """Spend so far today (UTC) from the keys' counters, as of the last sync."""
    keys = listed_keys(connection=connection, workspace=workspace, key=key)
    return cached(
        connection,
        "today_total",
        (workspace, key),
        lambda: keys.aggregate(total=Sum("usage_daily"))["total"] or Decimal(0),
    )


def forecast(
    *,
    connection: Connection,
    now: datetime | None = None,
    workspace: str | None = None,
    key: str | None = None,
) -> Forecast:
    now = now or timezone.now()
    today = now.date()
    start = min(today.replace(day=1), today - timedelta(days=RUN_RATE_DAYS))
    daily = daily_spend(
        connection=connection, start=start, end=today - timedelta(days=1), workspace=workspace, key=key
    )
    return month_end_forecast(
        daily=daily,
        today=today,
        today_partial=today_partial(connection=connection, workspace=workspace, key=key),
        day_fraction=_day_fraction(now),
    )


def _budget_filters(budget: Budget) -> dict:
    if budget.scope == BudgetScope.WORKSPACE:
        return {"workspace": budget.target}
    if budget.scope == BudgetScope.KEY:
        return {"key": budget.target}
    return {}


@dataclass
class BudgetStatus:
    budget: Budget
    forecast: Forecast
    spent: Decimal = field(init=False)
    fraction: Decimal = field(init=False)
    projected_fraction: Decimal = field(init=False)

    def __post_init__(self):
        amount = self.budget.monthly_usd or Decimal(1)
        self.spent = self.forecast.month_to_date
        self.fraction = self.spent / amount
        self.projected_fraction = self.forecast.expected / amount

    @property
    def percent(self) -> int:
        return int(self.fraction * 100)

    @property
    def bar_value(self) -> Decimal:
        return min(self.spent, self.budget.monthly_usd)


def budget_statuses(*, connection: Connection, now: datetime | None = None) -> list[BudgetStatus]:
    return [
        BudgetStatus(
            budget=budget, forecast=forecast(connection=connection, now=now, **_budget_filters(budget))
        )
        for budget in Budget.objects.filter(connection=connection)
    ]


# --- People


@dataclass
class Person:
    label: str
    email: str = ""
    user: User | None = None
    source: str = "unknown"  # manual, member, unknown


def key_people(*, connection: Connection) -> dict[str, Person]:
    """Who each key belongs to: an admin's manual mapping first, then OpenRouter's creator → member →
    the Doow user with that email when there is one."""
    members = {m.user_id: m for m in Member.objects.filter(connection=connection)}
    emails = {m.email.lower() for m in members.values() if m.email}
    doow_users = {
        membership.user.email.lower(): membership.user
        for membership in Membership.objects.filter(
            company_id=connection.company_id, user__email__in=emails
        ).select_related("user")
    }
    manual = {o.key_hash: o for o in KeyOwner.objects.filter(connection=connection).select_related("user")}
    people: dict[str, Person] = {}
    for key_hash, creator in ApiKey.objects.filter(connection=connection).values_list(
        "key_hash", "creator_user_id"
    ):
        owner = manual.get(key_hash)
        if owner is not None and owner.user is not None:
            people[key_hash] = Person(owner.user.display_name, owner.user.email, owner.user, "manual")
            continue
        member = members.get(creator)
        if member is not None:
            user = doow_users.get(member.email.lower()) if member.email else None
            people[key_hash] = Person(member.display_name, member.email, user, "member")
        else:
            people[key_hash] = Person("Unknown creator")
    return people


def spend_by_person(*, connection: Connection, start: date, end: date) -> list[dict]:
    people = key_people(connection=connection)
    totals: dict[str, dict] = {}
    rows = (
        UsageDaily.objects.filter(connection=connection, day__gte=start, day__lte=end)
        .values("api_key_hash")
        .annotate(spend=Sum("spend_usd"), byok=Sum("byok_spend_usd"), requests=Sum("requests"))
        .order_by()
    )
    for row in rows:
        if not row["api_key_hash"]:
            person = Person(UNATTRIBUTED_LABEL, source="unattributed")
        else:
            person = people.get(row["api_key_hash"], Person("Unknown creator"))
        entry = totals.setdefault(
            person.email or person.label,
            {"person": person, "spend": Decimal(0), "byok": Decimal(0), "requests": 0, "keys": 0},
        )
        entry["spend"] += row["spend"] or 0
        entry["byok"] += row["byok"] or 0
        entry["requests"] += row["requests"] or 0
        entry["keys"] += 1
    return sorted(totals.values(), key=lambda entry: entry["spend"], reverse=True)


def key_owner_set(
    *, connection: Connection, key_hash: str, user: User | None, actor: User | None
) -> KeyOwner:
    if not ApiKey.objects.filter(connection=connection, key_hash=key_hash).exists():
        raise ApiKey.DoesNotExist
    if (
        user is not None
        and not Membership.objects.filter(company_id=connection.company_id, user=user).exists()
    ):
        raise ValueError("The owner must be a member of this company.")
    owner, _ = KeyOwner.objects.update_or_create(
        connection=connection,
        key_hash=key_hash,
        defaults={"company_id": connection.company_id, "user": user, "set_by": actor},
    )
    return owner


# --- Reconciliation


@dataclass
class ReconciliationLine:
    label: str
    amount: Decimal | None
    explanation: str
    flagged: bool = False


def reconciliation(
    *, connection: Connection, start: date, end: date, now: datetime | None = None
) -> list[ReconciliationLine]:
    """The figures finance signs off on, each difference explained or flagged."""
    now = now or timezone.now()
    rows = UsageDaily.objects.filter(connection=connection, day__gte=start, day__lte=end)
    account = rows.aggregate(total=Sum("spend_usd"), byok=Sum("byok_spend_usd"))
    account_total = account["total"] or Decimal(0)
    keys_total = rows.exclude(api_key_hash="").aggregate(total=Sum("spend_usd"))["total"] or Decimal(0)
    remainder = account_total - keys_total
    lines = [
        ReconciliationLine(
            "OpenRouter account-wide activity",
            account_total,
            "Sum of OpenRouter's /activity for the whole account over the completed UTC days in the range.",
        ),
        ReconciliationLine("Sum over listed API keys", keys_total, "Each key's own /activity, summed."),
        ReconciliationLine(
            "Unattributed remainder",
            remainder,
            "Usage of keys deleted before Doow saw them, or not listed: shown as "
            f"“{UNATTRIBUTED_LABEL}”. Account-wide = keys + remainder.",
            flagged=remainder < 0,
        ),
    ]
    # Credits consumed between the snapshots closest to the range's ends (UTC midnights).
    start_at = datetime.combine(start, datetime.min.time(), tzinfo=now.tzinfo)
    end_at = datetime.combine(end + timedelta(days=1), datetime.min.time(), tzinfo=now.tzinfo)
    snapshots = CreditsSnapshot.objects.filter(connection=connection)
    first = snapshots.filter(taken_at__gte=start_at).order_by("taken_at").first()
    last = snapshots.filter(taken_at__lte=end_at).order_by("-taken_at").first()
    if first and last and last.taken_at > first.taken_at:
        covered = rows.filter(day__gte=first.taken_at.date(), day__lt=last.taken_at.date()).aggregate(
            total=Sum("spend_usd")
        )["total"] or Decimal(0)
        drawn = last.total_usage - first.total_usage
        difference = drawn - covered
        lines.append(
            ReconciliationLine(
                f"Credits used between snapshots ({first.taken_at:%d %b %H:%M} → {last.taken_at:%d %b %H:%M} UTC)",
                drawn,
                "Change of /credits total_usage. It includes the partial days at both ends "
                f"(activity for the whole days between: {covered:.2f}); BYOK inference does not draw credits "
                "beyond OpenRouter's fee.",
                flagged=covered > 0 and abs(difference) > max(Decimal("0.05") * covered, Decimal(1)) * 3,
            )
        )
    else:
        lines.append(
            ReconciliationLine(
                "Credits used between snapshots",
                None,
                "Doow has fewer than two credit snapshots inside this range yet (one is taken every sync).",
            )
        )
    month_start = now.date().replace(day=1)
    counters = ApiKey.objects.filter(connection=connection, missing_since__isnull=True).aggregate(
        month=Sum("usage_monthly"), today=Sum("usage_daily")
    )
    month_rows = UsageDaily.objects.filter(connection=connection, day__gte=month_start).exclude(
        api_key_hash=""
    )
    month_activity = month_rows.aggregate(total=Sum("spend_usd"))["total"] or Decimal(0)
    month_counters = counters["month"] or Decimal(0)
    today_counters = counters["today"] or Decimal(0)
    deleted_month = UsageDaily.objects.filter(connection=connection, day__gte=month_start).filter(
        Q(
            api_key_hash__in=ApiKey.objects.filter(connection=connection, missing_since__isnull=False).values(
                "key_hash"
            )
        )
    ).aggregate(total=Sum("spend_usd"))["total"] or Decimal(0)
    gap = month_counters - today_counters - (month_activity - deleted_month)
    lines.append(
        ReconciliationLine(
            "Key counters this month (usage_monthly)",
            month_counters,
            f"Listed keys' month-to-date counters: this month's completed days by key ({month_activity - deleted_month:.2f}) "
            f"plus today's partial ({today_counters:.2f}), as of the last sync.",
            flagged=abs(gap) > max(Decimal("0.01") * month_counters, Decimal("0.05")),
        )
    )
    return lines


def workspace_names(*, connection: Connection) -> dict[str, str]:
    return dict(Workspace.objects.filter(connection=connection).values_list("workspace_id", "name"))


def key_series(*, connection: Connection, start: date, end: date, by: str) -> dict[str, dict[date, Decimal]]:
    """Daily spend per key (by="api_key_hash") or per model (by="model_permaslug")."""
    series: dict[str, dict[date, Decimal]] = defaultdict(dict)
    dimension = next(name for name, field in FILTERS.items() if field == by)
    rows = (
        usage_rows(
            connection_ids=[connection.pk],
            start=start,
            end=end,
            dimensions=["day", dimension],
            summarized=summaries_current(connection),
        )
        .values(by, "day")
        .annotate(spend=Sum("spend_usd"))
        .order_by()
    )
    for row in rows:
        series[row[by]][row["day"]] = row["spend"] or Decimal(0)
    return series


def snapshot_history(*, connection: Connection, key_hash: str, start: date) -> list[ApiKeySnapshot]:
    return list(
        ApiKeySnapshot.objects.filter(connection=connection, key_hash=key_hash, day__gte=start).order_by(
            "day"
        )
    )
