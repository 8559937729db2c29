"""Turning synced OpenRouter data into decisions: month-to-date and forecast, budgets, people,
reconciliation. Reads only; alert evaluation (openrouter/alerts.py) builds on these."""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.db.models import Count, F, Max, OuterRef, Q, Subquery, Sum, Value
from django.utils import timezone

from doow.models import Membership, User
from integrations.models import Connection, CredentialScope
from openrouter.formatting import usd
from openrouter.models import ApiKey, ApiKeySnapshot, CreditsSnapshot, KeyOwner, Member, Workspace
from usage.cache import cached
from usage.forecast import RUN_RATE_DAYS, Forecast, month_end_forecast
from usage.models import UNATTRIBUTED_LABEL, Budget, BudgetScope
from usage.selectors import FILTERS, summaries_current, usage_by_key, usage_rows


def _day_fraction(now: datetime) -> float:
    now = now.astimezone(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return min(1.0, (now - midnight).total_seconds() / 86400)


def _utc_date(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def listed_keys(*, connection: Connection, workspace: str | None = None, key: str | None = None):
    """The keys OpenRouter still lists, in one workspace or just one key: their own counters
    (`usage_daily`...) are the only source of today's spend before the UTC day ends."""
    keys = ApiKey.objects.filter(connection=connection, missing_since__isnull=True)
    if workspace is not None:
        keys = keys.filter(workspace_id=workspace)
    if key is not None:
        keys = keys.filter(key_hash=key)
    return keys


def _any(keys) -> bool:
    """Whether any of these keys is listed, read in the order of the (connection, key) index.
    exists() let the planner scan the key table from its start, as if each connection's keys were
    spread evenly through it, where they sit together as their first sync wrote them: 7 ms on the
    bench for 2,200 keys stored behind 15,000 of another connection, and more with every tenant."""
    return keys.order_by("key_hash").values_list("key_hash", flat=True).first() is not None


def counters_read_today(
    *,
    connection: Connection,
    now: datetime | None = None,
    workspace: str | None = None,
    key: str | None = None,
):
    """The listed keys whose counters a sync read on `now`'s UTC day. A sync files each key's
    counter snapshot under the UTC day it read the key on (sync.store_keys), so a key with a
    snapshot of today holds today's counters; any other still holds an earlier day's (its
    `usage_daily` is that day's spend, its `usage_monthly` perhaps last month's)."""
    today = _utc_date(now or timezone.now())
    return listed_keys(connection=connection, workspace=workspace, key=key).filter(
        key_hash__in=ApiKeySnapshot.objects.filter(connection=connection, day=today).values("key_hash")
    )


def today_partial(
    *,
    connection: Connection,
    workspace: str | None = None,
    key: str | None = None,
    now: datetime | None = None,
) -> Decimal:
    """Spend so far today (UTC) from the keys' counters read today: 0 until a sync reads them today
    (after midnight, the last sync's counters describe yesterday)."""
    now = now or timezone.now()
    keys = counters_read_today(connection=connection, now=now, workspace=workspace, key=key)
    return cached(
        connection,
        "today_total",
        (_utc_date(now), workspace, key),
        lambda: keys.aggregate(total=Sum("usage_daily"))["total"] or Decimal(0),
    )


# ApiKey's field for each slice forecasts are grouped by (None: the whole connection).
_KEY_FIELDS = {None: None, "workspace": "workspace_id", "key": "key_hash"}


def forecasts(
    *, connection: Connection, by: str | None = None, targets=("",), now: datetime | None = None
) -> dict[str, Forecast]:
    """Month-end forecasts of many workspaces (by="workspace") or keys (by="key") at once, or of the
    whole connection (by=None, target ""), in three grouped queries whatever the number of targets.

    A slice without a key OpenRouter still lists (a deleted key, a workspace whose keys were all
    deleted) can spend no more: its month ends at its month to date."""
    now = (now or timezone.now()).astimezone(UTC)
    today = now.date()
    targets = tuple(sorted(set(targets)))
    if not targets:
        return {}
    start = min(today.replace(day=1), today - timedelta(days=RUN_RATE_DAYS))
    end = today - timedelta(days=1)
    key_field = _KEY_FIELDS[by]

    def of_targets(queryset, field):
        return queryset.filter(**{f"{field}__in": targets}) if field else queryset

    def compute():
        usage_field = FILTERS[by] if by else None
        rows = usage_rows(
            connection_ids=[connection.pk],
            start=start,
            end=end,
            dimensions=["day", by] if by else ["day"],
            summarized=summaries_current(connection),
        )
        daily: dict[str, dict[date, Decimal]] = defaultdict(dict)
        names = [usage_field, "day"] if usage_field else ["day"]
        for row in of_targets(rows, usage_field).values(*names).annotate(spend=Sum("spend_usd")).order_by():
            daily[row[usage_field] if usage_field else ""][row["day"]] = row["spend"] or Decimal(0)
        counted = _counter_days(connection, key_field, targets, start, today)
        partial = {target: days.pop(today, Decimal(0)) for target, days in counted.items()}
        for target, days in counted.items():
            for day, spend in days.items():
                daily[target].setdefault(day, spend)
        return dict(daily), partial

    from_counters = connection.scope == CredentialScope.SINGLE_KEY
    if from_counters:
        daily, month = cached(
            connection,
            "forecasts_from_counters",
            (by, start, today),
            lambda: _counter_history(connection=connection, key_field=key_field, start=start, today=today),
        )
        partial = {}
    else:
        daily, partial = cached(connection, "forecasts", (by, targets, start, end), compute)
        month = {}
    # Whether each slice can still spend, read each time (one small indexed query).
    listed = of_targets(listed_keys(connection=connection), key_field)
    spending = (
        set(listed.values_list(key_field, flat=True).distinct().order_by())
        if key_field
        else ({""} if _any(listed) else set())
    )
    return {
        target: month_end_forecast(
            daily=daily.get(target, {}),
            today=today,
            today_partial=partial.get(target, Decimal(0)),
            day_fraction=_day_fraction(now),
            stopped=target not in spending,
            month_to_date=month.get(target, Decimal(0)) if from_counters else None,
            missing_days_unknown=from_counters,
        )
        for target in targets
    }


def _counter_days(
    connection: Connection, key_field: str | None, targets: tuple[str, ...], start: date, today: date
) -> dict[str, dict[date, Decimal]]:
    """The keys' daily counters by target and day, in one query: today's of the listed keys read
    today (the day so far), and those of the ended days OpenRouter's daily activity has not given
    Doow yet (the hour after midnight before a sync reads the day, or days a failing sync could not
    read), each as the day's last sync read it. Without the latter, the month to date dropped by
    yesterday's spend every night (by the whole month on the 2nd) and the run-rate took it as $0.
    A key's snapshot of the day it was read on holds the same counters as the key (sync.store_keys)."""
    complete = connection.complete_through
    first = max(start, complete + timedelta(days=1)) if complete else start
    listed_today = listed_keys(connection=connection).values("key_hash")
    snapshots = ApiKeySnapshot.objects.filter(connection=connection, day__gte=first, day__lte=today).filter(
        Q(day__lt=today) | Q(key_hash__in=listed_today)
    )
    if key_field == "workspace_id":
        workspace = ApiKey.objects.filter(connection=connection, key_hash=OuterRef("key_hash")).values(
            key_field
        )
        snapshots = snapshots.annotate(target=Subquery(workspace[:1]))
    elif key_field:
        snapshots = snapshots.annotate(target=F("key_hash"))
    else:
        snapshots = snapshots.annotate(target=Value(""))
    counted: dict[str, dict[date, Decimal]] = defaultdict(dict)
    grouped = snapshots.filter(target__in=targets).values("target", "day").annotate(spend=Sum("usage_daily"))
    for row in grouped.order_by():
        counted[row["target"]][row["day"]] = row["spend"] or Decimal(0)
    return counted


def _counter_history(
    *, connection: Connection, key_field: str | None, start: date, today: date
) -> tuple[dict[str, dict[date, Decimal]], dict[str, Decimal]]:
    """Daily spend and month to date of a normal key's connection, which has no daily activity
    (OpenRouter shows /activity only to a management key): each completed day is the key's daily
    counter as the last sync of that day read it, and the month to date is OpenRouter's own month
    counter as last read this month (0 before the month's first read)."""
    target_of = {
        key.key_hash: getattr(key, key_field) if key_field else ""
        for key in ApiKey.objects.filter(connection=connection).only("key_hash", "workspace_id")
    }
    daily: dict[str, dict[date, Decimal]] = defaultdict(dict)
    latest_this_month: dict[str, tuple[str, Decimal]] = {}
    snapshots = (
        ApiKeySnapshot.objects.filter(connection=connection, day__gte=start, day__lte=today)
        .order_by("day")
        .values_list("key_hash", "day", "usage_daily", "usage_monthly")
    )
    for key_hash, day, usage_daily, usage_monthly in snapshots:
        target = target_of.get(key_hash)
        if target is None:
            continue
        if day < today:
            daily[target][day] = daily[target].get(day, Decimal(0)) + usage_daily
        if day >= today.replace(day=1):
            latest_this_month[key_hash] = (target, usage_monthly)  # ordered by day: the newest wins
    month: dict[str, Decimal] = defaultdict(Decimal)
    for target, usage_monthly in latest_this_month.values():
        month[target] += usage_monthly
    return dict(daily), dict(month)


def forecast(
    *,
    connection: Connection,
    now: datetime | None = None,
    workspace: str | None = None,
    key: str | None = None,
) -> Forecast:
    """The month-end forecast of the connection, one workspace or one key (a key given, the
    workspace is not needed)."""
    if key is not None:
        return forecasts(connection=connection, by="key", targets=[key], now=now)[key]
    if workspace is not None:
        return forecasts(connection=connection, by="workspace", targets=[workspace], now=now)[workspace]
    return forecasts(connection=connection, now=now)[""]


def month_of_filters(*, connection: Connection, filters: dict) -> dict:
    """This month's spend and forecast for the key or workspace the page is filtered by, or else the
    connection's, and what it covers when that is not what the page shows (key counters and
    forecasts cannot be split by model or provider)."""
    key, workspace = filters.get("key"), filters.get("workspace")
    if key is not None:
        month, covers = forecast(connection=connection, key=key), "this key" if key else UNATTRIBUTED_LABEL
    elif workspace:
        month, covers = forecast(connection=connection, workspace=workspace), "this workspace"
    else:
        month, covers = forecast(connection=connection), "the whole connection" if filters else ""
    if filters.get("model") or filters.get("provider"):
        covers += ": the model and provider filters do not apply here"
    return {"forecast": month, "covers": covers}


_BUDGET_SLICES = {BudgetScope.CONNECTION: None, BudgetScope.WORKSPACE: "workspace", BudgetScope.KEY: "key"}


def _budget_filters(budget: Budget) -> dict:
    if budget.scope == BudgetScope.WORKSPACE:
        return {"workspace": budget.target}
    if budget.scope == BudgetScope.KEY:
        return {"key": budget.target}
    return {}


def budget_forecasts(*, connection: Connection, budgets, now: datetime | None = None) -> dict[int, Forecast]:
    """Each budget's forecast by its id: a few grouped queries per scope, whatever the number of
    budgets (one forecast() per budget would cost queries per budget)."""
    now = now or timezone.now()
    slices = {budget.pk: _budget_slice(budget) for budget in budgets}
    targets: dict[str | None, set[str]] = defaultdict(set)
    for by, target in slices.values():
        targets[by].add(target)
    by_slice = {
        by: forecasts(connection=connection, by=by, targets=slice_targets, now=now)
        for by, slice_targets in targets.items()
    }
    return {pk: by_slice[by][target] for pk, (by, target) in slices.items()}


def budget_month_spend(*, connection: Connection, budgets, first: date, last: date) -> dict[int, Decimal]:
    """What each budget's slice spent from `first` to `last` (a month that has ended), by budget id:
    one grouped query per scope."""
    slices = {budget.pk: _budget_slice(budget) for budget in budgets}
    spend: dict[str | None, dict[str, Decimal]] = {}
    for by in {by for by, _ in slices.values()}:
        rows = usage_rows(
            connection_ids=[connection.pk],
            start=first,
            end=last,
            dimensions=[by] if by else [],
            summarized=summaries_current(connection),
        )
        if by is None:
            spend[by] = {"": rows.aggregate(total=Sum("spend_usd"))["total"] or Decimal(0)}
            continue
        field_name = FILTERS[by]
        targets = {target for slice_by, target in slices.values() if slice_by == by}
        grouped = (
            rows.filter(**{f"{field_name}__in": targets}).values(field_name).annotate(total=Sum("spend_usd"))
        )
        spend[by] = {row[field_name]: row["total"] or Decimal(0) for row in grouped.order_by()}
    return {pk: spend[by].get(target, Decimal(0)) for pk, (by, target) in slices.items()}


def _budget_slice(budget: Budget) -> tuple[str | None, str]:
    """(by, target) of forecasts() for a budget."""
    by = _BUDGET_SLICES[budget.scope]
    return by, budget.target if by else ""


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
    budgets = list(Budget.objects.filter(connection=connection))
    by_budget = budget_forecasts(connection=connection, budgets=budgets, now=now)
    return [BudgetStatus(budget=budget, forecast=by_budget[budget.pk]) for budget in budgets]


# --- People


# How a key was matched to its person (Person.source), as the People page names it.
PERSON_SOURCE_LABELS = {
    "manual": "Set by an admin",
    "member": "OpenRouter key creator",
    "unknown": "No known creator",
    "unattributed": "No listed key",
}


@dataclass
class Person:
    label: str
    email: str = ""
    user: User | None = None
    source: str = "unknown"  # a key of PERSON_SOURCE_LABELS, or several joined by ", "

    @property
    def source_label(self) -> str:
        # A person matched several ways (spend_by_person joins them) shows each way's label.
        return ", ".join(PERSON_SOURCE_LABELS[source] for source in self.source.split(", "))


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


def spend_by_person(
    *, connection: Connection, start: date, end: date, people: dict[str, Person] | None = None
) -> list[dict]:
    """Spend per person over start..end. `people`: key_people() of the connection when the caller
    has it already (the People page lists the keys' owners too, and a large organization's keys and
    members are read once instead of twice)."""
    if people is None:
        people = key_people(connection=connection)
    totals: dict[tuple, dict] = {}
    # Only the sums by key are cached: who owns a key changes without a sync (a manual owner).
    rows = cached(
        connection,
        "sums_by_key",  # named anew when the rows' fields changed: no entry of the old shape is read
        (start, end),
        lambda: usage_by_key(
            connection_id=connection.pk,
            start=start,
            end=end,
            metrics=("requests", "spend_usd", "byok_spend_usd"),
            summarized=summaries_current(connection),
        ),
    )
    for row in rows:
        if not row["api_key_hash"]:
            person = Person(UNATTRIBUTED_LABEL, source="unattributed")
        else:
            person = people.get(row["api_key_hash"], Person("Unknown creator"))
        # One row per person: the Doow user when known (a manual owner and an OpenRouter member
        # with that email are the same person), else the email whatever its case.
        if person.user is not None:
            identity = ("user", person.user.pk)
        elif person.email:
            identity = ("email", person.email.lower())
        else:
            identity = ("label", person.label)
        entry = totals.get(identity)
        if entry is None:
            entry = totals[identity] = {
                "person": person,
                "spend": Decimal(0),
                "byok": Decimal(0),
                "requests": 0,
                "keys": 0,
            }
        elif person.source not in entry["person"].source.split(", "):
            # Matched several ways: show the Doow user's own name and email, and every way.
            sources = ", ".join(sorted({*entry["person"].source.split(", "), person.source}))
            user = person.user
            entry["person"] = (
                Person(user.display_name, user.email, user, sources)
                if user is not None
                else Person(entry["person"].label, entry["person"].email, None, sources)
            )
        entry["spend"] += row["spend_usd"]
        entry["byok"] += row["byok_spend_usd"]
        entry["requests"] += row["requests"]
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
    if connection.scope == CredentialScope.SINGLE_KEY:
        return _single_key_reconciliation(connection=connection, now=now)
    query = {
        "connection_ids": [connection.pk],
        "start": start,
        "end": end,
        "summarized": summaries_current(connection),
    }

    def totals():
        account = usage_rows(**query).aggregate(total=Sum("spend_usd"))["total"] or Decimal(0)
        # The listed keys' sum is the account's less the unattributed rows: those are read through
        # the per-key summary's (connection, key, day) index, where summing the keys reads every key.
        unattributed = usage_rows(**query, filters={"key": ""}).aggregate(total=Sum("spend_usd"))[
            "total"
        ] or Decimal(0)
        return account, unattributed

    account_total, remainder = cached(connection, "reconciliation_totals", (start, end), totals)
    keys_total = account_total - remainder
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
    start_at = datetime.combine(start, time.min, tzinfo=UTC)
    end_at = datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC)
    snapshots = CreditsSnapshot.objects.filter(connection=connection)
    first = snapshots.filter(taken_at__gte=start_at).order_by("taken_at").first()
    last = snapshots.filter(taken_at__lte=end_at).order_by("-taken_at").first()
    if first and last and last.taken_at > first.taken_at:
        by_day = cached(
            connection,
            "spend_by_day",
            (start, end),
            lambda: dict(
                usage_rows(**query, dimensions=["day"])
                .values("day")
                .annotate(total=Sum("spend_usd"))
                .values_list("day", "total")
                .order_by()
            ),
        )
        shares = _day_shares(first.taken_at, last.taken_at)
        expected = sum(
            ((by_day.get(day) or Decimal(0)) * share for day, share in shares.items()), Decimal(0)
        ).quantize(Decimal("0.01"))
        drawn = last.total_usage - first.total_usage
        difference = drawn - expected
        first_day, last_day = min(shares), max(shares)
        lines.append(
            ReconciliationLine(
                f"Credits used between snapshots ({first.taken_at:%d %b %H:%M} → {last.taken_at:%d %b %H:%M} UTC)",
                drawn,
                "Change of /credits total_usage between the two snapshots, against the activity of the same "
                f"span ({usd(expected)}): the whole UTC days between them, plus the share of "
                f"{first_day:%d %b} after the first and of {last_day:%d %b} before the last, prorated by "
                "the snapshots' times as if a day's spend were spread evenly over it. BYOK inference does "
                "not draw credits beyond OpenRouter's fee.",
                flagged=expected > 0 and abs(difference) > max(Decimal("0.05") * expected, Decimal(1)) * 3,
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
    lines.append(_month_counters_line(connection=connection, now=now))
    return lines


def _single_key_reconciliation(*, connection: Connection, now: datetime) -> list[ReconciliationLine]:
    """A normal key sees its own counters only: what it cannot see is said, not shown as $0.00, and
    its month counter has no daily activity to be compared with."""
    hidden = "Not visible to a normal key: OpenRouter shows {} only to a management key."
    counters = counters_read_today(connection=connection, now=now).aggregate(month=Sum("usage_monthly"))
    return [
        ReconciliationLine("OpenRouter account-wide activity", None, hidden.format("/activity")),
        ReconciliationLine("Sum over listed API keys", None, hidden.format("each key's /activity")),
        ReconciliationLine("Credits used between snapshots", None, hidden.format("/credits")),
        ReconciliationLine(
            "Key counters this month (usage_monthly)",
            counters["month"],
            "OpenRouter's own month-to-date counter of the key, read today."
            if counters["month"] is not None
            else "No sync has read the key's counters today yet.",
        ),
    ]


def _day_shares(start_at: datetime, end_at: datetime) -> dict[date, Decimal]:
    """How much of each UTC day (0–1) the span start_at → end_at covers."""
    start_at, end_at = start_at.astimezone(UTC), end_at.astimezone(UTC)
    shares = {}
    day = start_at.date()
    while day <= end_at.date():
        day_start = datetime.combine(day, time.min, tzinfo=UTC)
        covered = min(end_at, day_start + timedelta(days=1)) - max(start_at, day_start)
        if covered > timedelta(0):
            shares[day] = Decimal(covered // timedelta(seconds=1)) / Decimal(86400)
        day += timedelta(days=1)
    return shares


def _month_counters_line(*, connection: Connection, now: datetime) -> ReconciliationLine:
    """The listed keys' month counters against this month's completed days by key plus today's
    partial. Only counters read today are compared: after midnight the last sync's counters describe
    its own day (and on the 1st, last month)."""
    label = "Key counters this month (usage_monthly)"
    today = _utc_date(now)
    month_start = today.replace(day=1)
    listed = listed_keys(connection=connection)
    read_today = counters_read_today(connection=connection, now=now)
    counters = read_today.aggregate(month=Sum("usage_monthly"), today=Sum("usage_daily"), keys=Count("pk"))
    if not counters["keys"]:
        last_read = listed.aggregate(last=Max("last_listed_at"))["last"]
        return ReconciliationLine(
            label,
            None,
            (
                f"The keys' counters are from the last sync on {last_read:%d %b %Y}, not today: they are "
                "compared with this month's activity once a sync reads them today."
            )
            if last_read
            else "No sync has read the keys' counters yet.",
        )
    # The keys read today change only with a sync's write, which moves the data version.
    month_activity = cached(
        connection,
        "month_activity_of_keys_read_today",
        (month_start, today),
        lambda: (
            usage_rows(
                connection_ids=[connection.pk],
                start=month_start,
                end=today - timedelta(days=1),
                dimensions=["key"],
                summarized=summaries_current(connection),
            )
            .filter(api_key_hash__in=read_today.values("key_hash"))
            .aggregate(total=Sum("spend_usd"))["total"]
            or Decimal(0)
        ),
    )
    month_counters = counters["month"] or Decimal(0)
    today_counters = counters["today"] or Decimal(0)
    gap = month_counters - today_counters - month_activity
    left_out = listed.count() - counters["keys"]
    return ReconciliationLine(
        label,
        month_counters,
        f"Listed keys' month-to-date counters, read today: this month's completed days by key "
        f"({usd(month_activity)}) plus today's partial ({usd(today_counters)})."
        + (f" {left_out} listed key(s) not read today are left out." if left_out else ""),
        flagged=abs(gap) > max(Decimal("0.01") * month_counters, Decimal("0.05")),
    )


def key_series(
    *, connection: Connection, start: date, end: date, by: str, subjects=None
) -> dict[str, dict[date, Decimal]]:
    """Daily spend per key (by="api_key_hash") or per model (by="model_permaslug"); of these
    `subjects` only, when given."""
    series: dict[str, dict[date, Decimal]] = defaultdict(dict)
    rows = _series_rows(connection=connection, start=start, end=end, by=by)
    if subjects is not None:
        rows = rows.filter(**{f"{by}__in": list(subjects)})
    for row in rows.values(by, "day").annotate(spend=Sum("spend_usd")).order_by():
        series[row[by]][row["day"]] = row["spend"] or Decimal(0)
    return series


def _series_rows(*, connection: Connection, start: date, end: date, by: str, by_day: bool = False):
    """The rows key_series sums: the per-key (or per-model) summary while it is current. `by_day`:
    for a query that finds a few days' rows, which the per-key summary (not indexed by day) would
    find by reading all of the connection's; the usage rows' sums per key and day are the same."""
    dimension = next(name for name, field in FILTERS.items() if field == by)
    return usage_rows(
        connection_ids=[connection.pk],
        start=start,
        end=end,
        dimensions=["day", dimension],
        summarized=summaries_current(connection) and not (by_day and by == FILTERS["key"]),
    )


def series_subjects(
    *, connection: Connection, start: date, end: date, by: str, spent_at_least: Decimal | None = None
) -> list[str]:
    """The keys or models (`by`) key_series would return for these days, in order. With
    `spent_at_least`, only those whose spend on `end` sums to at least that: one grouped query over
    that day's rows (by the connection and day index), for the rules that judge a day's spend, so
    that a series is read only for a subject that could fire."""
    if spent_at_least is None:
        rows = _series_rows(connection=connection, start=start, end=end, by=by)
        return list(rows.values_list(by, flat=True).distinct().order_by(by))
    rows = (
        _series_rows(connection=connection, start=end, end=end, by=by, by_day=True)
        .values(by)
        .annotate(spend=Sum("spend_usd"))
        .filter(spend__gte=spent_at_least)
        .order_by(by)
    )
    return [row[by] for row in rows]


def series_exist(*, connection: Connection, start: date, end: date, by: str) -> bool:
    """Whether key_series would return any day from start to end."""
    return _series_rows(connection=connection, start=start, end=end, by=by, by_day=True).exists()


def snapshot_history(*, connection: Connection, key_hash: str, start: date) -> list[ApiKeySnapshot]:
    return list(
        ApiKeySnapshot.objects.filter(connection=connection, key_hash=key_hash, day__gte=start).order_by(
            "day"
        )
    )


def budget_target_of_filters(*, connection, filters: dict) -> tuple[str, str] | None:
    """(scope, target) of a budget for the live key, or else the workspace, a view is filtered by."""
    key, workspace = filters.get("key"), filters.get("workspace")
    if key:
        live = ApiKey.objects.filter(connection=connection, key_hash=key, missing_since__isnull=True)
        return (BudgetScope.KEY, key) if live.exists() else None
    if workspace and Workspace.objects.filter(connection=connection, workspace_id=workspace).exists():
        return BudgetScope.WORKSPACE, workspace
    return None
