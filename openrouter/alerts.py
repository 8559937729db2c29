"""Alert evaluation after each sync: budgets, credits, key limits, failing syncs, spend anomalies.

Each firing condition gets one Alert per (rule, subject, period), so evaluating after every sync
never raises it twice; an open alert whose condition no longer holds is resolved, and a resolved one
whose condition holds again in the same period is reopened and emailed again. Alerts of a rule that
was turned off or deleted, or of a disconnected connection, are resolved: nothing watches them.
An alert whose email failed is emailed again on later evaluations while it is open and still holds.
"""

import logging
import unicodedata
from collections import defaultdict
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import cached_property

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from doow.access import HEALTH_READERS, USAGE_READERS
from doow.models import Membership, Role
from integrations.models import (
    Connection,
    ConnectionState,
    CredentialScope,
    EventKind,
    EventLevel,
    SyncRun,
    SyncRunStatus,
)
from integrations.services import sync_event_add
from openrouter import insights
from openrouter.formatting import usd
from openrouter.models import ApiKey, CreditsSnapshot
from usage.anomalies import DEFAULT_Z, MIN_AMOUNT, detect_spike, new_spenders
from usage.forecast import Forecast, runway_days
from usage.models import (
    DISMISSED,
    RESOLVE_BATCH,
    UNATTRIBUTED_LABEL,
    Alert,
    AlertKind,
    AlertRule,
    AlertState,
    Budget,
    alert_details,
    alerts_resolve,
    threshold_problem,
)

logger = logging.getLogger(__name__)

DEFAULT_ROLES = [Role.ADMIN, Role.FINANCE]
# Conditions that hold from one day to the next (their firings are dated by the day they are seen):
# one alert for as long as they hold.
ONGOING_KINDS = (AlertKind.CREDIT_LOW, AlertKind.CREDIT_RUNWAY, AlertKind.KEY_LIMIT)
BUDGET_KINDS = (AlertKind.BUDGET_80, AlertKind.BUDGET_100, AlertKind.BUDGET_PROJECTED)
DAY_KINDS = (AlertKind.ANOMALY, AlertKind.NEW_SPENDER)  # each judges the spend of a day
ANOMALY_DAYS = 41  # the day judged and the 40 days before it
NEW_SPENDER_DAYS = 30  # the day judged and the 29 days before it
# Series are read this many keys or models at a time.
SERIES_BATCH = 500
# Subjects are narrowed in the database to those whose spend on the day reaches a rule's minimum,
# less this: SQLite sums decimals as doubles, which Python reads rounded to the column's 12 places,
# so a sum read as the minimum may compare a hair below it in SQL. Looser only reads a few more.
SPEND_TOLERANCE = Decimal("0.000001")
# A month's last day is read after midnight, in the next month: its budgets are checked once more on
# the next month's first days, when the month's spend is final. A week covers syncs that failed for
# a few days at the turn of the month.
ENDED_MONTH_CHECKED_DAYS = 7
# The days an anomaly or new-spender rule judges at most in one evaluation, the newest included: the
# days a gap in syncing kept from being judged on their own, back to a week.
CATCH_UP_DAYS = 7


def budget_create(
    *,
    connection: Connection,
    scope: str,
    target: str,
    target_label: str,
    monthly_usd,
    actor=None,
    now: datetime | None = None,
) -> Budget:
    """A budget comes with its three rules: 80% reached, 100% reached, projected to exceed. A new
    amount holds from the month under way; the months before keep the one they had."""
    month = (now or timezone.now()).date().replace(day=1)
    with transaction.atomic():
        same = Budget.objects.select_for_update().filter(connection=connection, scope=scope, target=target)
        before = same.first()
        history = {}
        if before and before.monthly_usd != monthly_usd and (before.monthly_usd_since or date.min) < month:
            history = {"previous_monthly_usd": before.monthly_usd, "monthly_usd_since": month}
        budget, _ = Budget.objects.update_or_create(
            connection=connection,
            scope=scope,
            target=target,
            defaults={
                "company_id": connection.company_id,
                "target_label": target_label,
                "monthly_usd": monthly_usd,
                "created_by": actor,
                **history,
            },
        )
        for kind in BUDGET_KINDS:
            AlertRule.objects.get_or_create(
                connection=connection,
                budget=budget,
                kind=kind,
                defaults={"company_id": connection.company_id, "notify_roles": DEFAULT_ROLES},
            )
    return budget


def default_rules_ensure(*, connection: Connection) -> None:
    """Every connection watches its credits, key limits, sync health and anomalies by default."""
    defaults = {
        AlertKind.CREDIT_LOW: Decimal(10),
        AlertKind.CREDIT_RUNWAY: Decimal(7),
        AlertKind.KEY_LIMIT: Decimal("0.1"),
        AlertKind.SYNC_FAILING: Decimal(6),
        AlertKind.ANOMALY: DEFAULT_Z,
        AlertKind.NEW_SPENDER: Decimal(5),
    }
    # One read after every sync; writes only the first time (or after an admin deleted a rule).
    existing = set(
        AlertRule.objects.filter(connection=connection, budget=None, kind__in=list(defaults)).values_list(
            "kind", flat=True
        )
    )
    missing = [
        AlertRule(
            company_id=connection.company_id,
            connection=connection,
            kind=kind,
            threshold=threshold,
            notify_roles=DEFAULT_ROLES,
        )
        for kind, threshold in defaults.items()
        if kind not in existing
    ]
    if missing:
        # Another evaluation may insert the same rules between the read and this write: the
        # one_connection_rule_per_kind constraint keeps one of each, and its rows are skipped here.
        AlertRule.objects.bulk_create(missing, ignore_conflicts=True)


class _Reads:
    """What several rules read, read once per evaluation (it runs after every sync)."""

    def __init__(self, connection: Connection, now: datetime, budgets=()):
        self.connection, self.now = connection, now
        self.day = connection.complete_through or now.date() - timedelta(days=1)  # last complete day
        self.budgets = list(budgets)  # the budgets the enabled rules watch
        self._recipients: dict[tuple, list[str]] = {}

    @cached_property
    def ended_month(self) -> tuple[date, date] | None:
        """The first and last day of the month that has just ended, while its budgets are still
        checked; None after the new month's first week. A normal key's connection has no daily
        activity: its month counter reset at midnight and nothing more of the month will be read."""
        today = self.now.date()
        if today.day > ENDED_MONTH_CHECKED_DAYS or self.connection.scope == CredentialScope.SINGLE_KEY:
            return None
        last = today.replace(day=1) - timedelta(days=1)
        return last.replace(day=1), last

    @cached_property
    def ended_month_spend(self) -> dict[int, Decimal]:
        first, last = self.ended_month
        return insights.budget_month_spend(
            connection=self.connection, budgets=self.budgets, first=first, last=last
        )

    def budget_periods(self) -> set[str]:
        """The months whose budget alerts are still evaluated: older ones are closed."""
        ended = self.ended_month
        return {_month(self.now)} | ({f"{ended[0]:%Y-%m}"} if ended else set())

    @property
    def days_missing(self) -> bool:
        """Whether a completed day (yesterday) is not in the stored activity yet."""
        complete = self.connection.complete_through
        return complete is None or complete < self.now.date() - timedelta(days=1)

    @cached_property
    def budget_forecasts(self) -> dict[int, Forecast]:
        # Grouped queries per budget scope, not two per budget.
        return insights.budget_forecasts(connection=self.connection, budgets=self.budgets, now=self.now)

    def recipients(self, roles) -> list[str]:
        """Emails of the company's active members in these roles."""
        key = tuple(sorted(roles))
        if key not in self._recipients:
            emails = (
                Membership.objects.filter(
                    company_id=self.connection.company_id, role__in=key, user__is_active=True
                )
                .exclude(user__email="")
                .values_list("user__email", flat=True)
            )
            self._recipients[key] = sorted(set(emails))
        return self._recipients[key]

    @cached_property
    def credits(self) -> CreditsSnapshot | None:
        return CreditsSnapshot.objects.filter(connection=self.connection).order_by("-taken_at").first()

    def key_names(self, key_hashes) -> dict[str, str]:
        """Names of these keys (those an alert names, not every key of the connection)."""
        key_hashes = list(key_hashes)
        if not key_hashes:
            return {}
        keys = ApiKey.objects.filter(connection=self.connection, key_hash__in=key_hashes)
        return dict(keys.values_list("key_hash", "name"))

    @cached_property
    def forecast(self):
        return insights.forecast(connection=self.connection, now=self.now)

    def days_to_judge(self, rule: AlertRule) -> list[date]:
        """The days a rule on one day's spend judges now: the newest complete day, as at every
        evaluation (a later sync may have revised it), after the days since the rule last judged one,
        which a gap in syncing would otherwise skip; at most CATCH_UP_DAYS in all (older news than a
        week is no alert). A rule never evaluated, or turned on again, starts at the newest day."""
        day, judged = self.day, rule.judged_through
        if judged is None or judged >= day:
            return [day]
        first = max(judged + timedelta(days=1), day - timedelta(days=CATCH_UP_DAYS - 1))
        return [first + timedelta(days=offset) for offset in range((day - first).days + 1)]

    def subjects(
        self, by: str, days: int, *, through: date, spent_at_least: Decimal | None = None
    ) -> list[str]:
        """The keys or models (`by`) with spend rows in the `days` days through `through`; with
        `spent_at_least` above 0, only those whose spend on `through` reaches it (a rule that needs
        that much on the day cannot fire for the others)."""
        if spent_at_least is not None and spent_at_least - SPEND_TOLERANCE > 0:
            spent_at_least -= SPEND_TOLERANCE
        else:
            spent_at_least = None  # Nothing to narrow by: a day with no spend would qualify.
        return insights.series_subjects(
            connection=self.connection,
            start=_start(days, through),
            end=through,
            by=by,
            spent_at_least=spent_at_least,
        )

    def series(self, by: str, days: int, subjects: list[str], *, through: date) -> Iterator[dict[str, dict]]:
        """Daily spend of these keys or models (`by`) over the `days` days through `through`, one
        batch of SERIES_BATCH subjects at a time: a worker never holds every key's history."""
        for first in range(0, len(subjects), SERIES_BATCH):
            batch = subjects[first : first + SERIES_BATCH]
            loaded = insights.key_series(
                connection=self.connection, start=_start(days, through), end=through, by=by, subjects=batch
            )
            yield {subject: loaded[subject] for subject in batch if subject in loaded}

    def series_exist(self, by: str, days: int, *, through: date, until: date) -> bool:
        """Whether the `days` days through `through` hold any spend row (of `by`) up to `until`."""
        return insights.series_exist(
            connection=self.connection, start=_start(days, through), end=until, by=by
        )


def _start(days: int, through: date) -> date:
    return through - timedelta(days=days - 1)


def _one_line(text: str) -> str:
    """`text` with control characters and line or paragraph separators as spaces: titles name keys,
    models and budgets named in OpenRouter by anyone holding a key, and a title is an email subject
    (a header: a newline in it is refused, or would start another header)."""
    return "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)


class _Firing:
    def __init__(self, subject: str, period: str, title: str, message: str, detail: dict | None = None):
        title_field = Alert._meta.get_field("title")
        self.subject, self.period, self.message = subject, period, message
        self.title = _one_line(title)[: title_field.max_length]
        # Money stays exact in JSON as text.
        self.detail = {k: str(v) if isinstance(v, Decimal) else v for k, v in (detail or {}).items()}


def evaluate_alerts(*, connection: Connection, now: datetime | None = None) -> list[Alert]:
    """Evaluate every enabled rule of the connection; returns the alerts raised (new or reopened)."""
    now = now or timezone.now()
    unresolved = Alert.objects.filter(connection=connection).exclude(state=AlertState.RESOLVED)
    if connection.state == ConnectionState.DISCONNECTED:
        alerts_resolve(unresolved, reason="The connection was disconnected.", now=now)
        return []
    default_rules_ensure(connection=connection)
    rules = list(AlertRule.objects.filter(connection=connection).select_related("budget"))
    enabled = [rule for rule in rules if rule.enabled]
    reads = _Reads(connection, now, budgets={r.budget_id: r.budget for r in enabled if r.budget}.values())
    raised = []
    open_alerts: dict[int | None, dict[tuple[str, str], Alert]] = defaultdict(dict)
    for alert in unresolved:
        open_alerts[alert.rule_id][(alert.subject, alert.period)] = alert
    # Resolved by hand while their condition held: not reopened until it has cleared.
    dismissed: dict[int | None, dict[tuple[str, str], Alert]] = defaultdict(dict)
    for alert in Alert.objects.filter(
        connection=connection, state=AlertState.RESOLVED, **{f"detail__{DISMISSED}": True}
    ):
        dismissed[alert.rule_id][(alert.subject, alert.period)] = alert
    # A budget reached supersedes its 80% alert of the same month: one budget alert open per period.
    firings_of = {rule.pk: list(_check(rule, reads)) for rule in enabled if rule.kind == AlertKind.BUDGET_100}
    reached = {(rule.budget_id, f.period) for rule in enabled for f in firings_of.get(rule.pk, ())}
    for rule in enabled:
        firings = firings_of[rule.pk] if rule.pk in firings_of else list(_check(rule, reads))
        keep = set()
        superseded = []
        if rule.kind in BUDGET_KINDS and reads.days_missing:
            # No sync has read yesterday yet: the month to date lacks it, and a budget alert whose
            # condition seems to have cleared may only be short of that day. It stays as it is.
            periods = reads.budget_periods()
            keep |= {key for key in (*open_alerts[rule.pk], *dismissed[rule.pk]) if key[1] in periods}
        for firing in firings:
            if rule.kind in ONGOING_KINDS:
                firing.period = _ongoing_period(firing, open_alerts[rule.pk], dismissed[rule.pk])
            keep.add((firing.subject, firing.period))
            if (firing.subject, firing.period) in dismissed[rule.pk]:
                continue
            if rule.kind == AlertKind.BUDGET_80 and (rule.budget_id, firing.period) in reached:
                # Kept (its condition holds) but not raised: evaluating again does not reopen it.
                if (existing := open_alerts[rule.pk].get((firing.subject, firing.period))) is not None:
                    superseded.append(existing)
                continue
            alert = _raise(rule, reads, firing, open_alerts[rule.pk].get((firing.subject, firing.period)))
            if alert is not None:
                raised.append(alert)
        alerts_resolve(superseded, reason="Superseded: the budget was reached in the same month.", now=now)
        if rule.kind in DAY_KINDS:
            # Its firings are raised: the days it judged are done (the newest is judged at every evaluation).
            _mark_judged(rule, reads.day)
        # Conditions that stopped holding resolve their open alerts, and end a dismissal.
        if rule.kind not in DAY_KINDS:
            cleared = [alert.pk for key, alert in open_alerts[rule.pk].items() if key not in keep]
            for first in range(0, len(cleared), RESOLVE_BATCH):
                Alert.objects.filter(pk__in=cleared[first : first + RESOLVE_BATCH]).update(
                    state=AlertState.RESOLVED, resolved_at=now
                )
        _undismiss(alert for key, alert in dismissed[rule.pk].items() if key not in keep)
    # Nothing resolves the alerts of a rule turned off (or deleted without alert_rule_deleted) any more.
    enabled_ids = {rule.pk for rule in enabled}
    _undismiss(
        alert
        for rule_id, alerts in dismissed.items()
        if rule_id not in enabled_ids
        for alert in alerts.values()
    )
    disabled_ids = {rule.pk for rule in rules if not rule.enabled}
    for rule_id, alerts in open_alerts.items():
        if rule_id in disabled_ids:
            alerts_resolve(alerts.values(), reason="Its alert rule was turned off.", now=now)
        elif rule_id not in enabled_ids:
            alerts_resolve(alerts.values(), reason="Its alert rule was deleted.", now=now)
    return raised


def _ongoing_period(firing: _Firing, open_alerts: dict, dismissed: dict) -> str:
    """The period of the alert already raised for this subject (open, acknowledged or resolved by
    hand) while its condition has held since: a balance or a key limit that stays low is one alert,
    not a new one each UTC day. Once the condition clears, that alert resolves (or its dismissal
    ends), and the next time it holds starts a period of its own."""
    for alerts in (open_alerts, dismissed):
        ongoing = sorted(period for subject, period in alerts if subject == firing.subject)
        if ongoing:
            return ongoing[0]
    return firing.period


def _mark_judged(rule: AlertRule, day: date) -> None:
    """Only forward: an evaluation that read less than a concurrent one does not take its days back."""
    if rule.judged_through is None or rule.judged_through < day:
        AlertRule.objects.filter(
            Q(judged_through__isnull=True) | Q(judged_through__lt=day), pk=rule.pk
        ).update(judged_through=day)
        rule.judged_through = day


def _undismiss(alerts) -> None:
    """The condition of these alerts resolved by hand no longer holds (or no rule watches them): the
    next time it holds, they are raised again. One UPDATE per RESOLVE_BATCH alerts, each still only
    where it is resolved by then (one reopened meanwhile keeps its detail)."""
    alerts = list(alerts)
    for first in range(0, len(alerts), RESOLVE_BATCH):
        batch = alerts[first : first + RESOLVE_BATCH]
        detail = alert_details(batch, lambda alert: {k: v for k, v in alert.detail.items() if k != DISMISSED})
        Alert.objects.filter(pk__in=[alert.pk for alert in batch], state=AlertState.RESOLVED).update(
            detail=detail
        )


def _raise(rule: AlertRule, reads: _Reads, firing: _Firing, existing: Alert | None) -> Alert | None:
    """Raise the firing's alert, or reopen it if it was resolved this period; None if it is already
    open or acknowledged (only an open one whose email never went out is emailed again)."""
    connection = reads.connection
    if existing is not None:
        if existing.state == AlertState.OPEN and not existing.emailed_to and _email_claimed(existing):
            _email(existing, connection, reads.recipients(rule.notify_roles), first_attempt=False)
        return None
    with transaction.atomic():
        # Under the connection row's lock, which a disconnect takes too: an alert raised after the
        # disconnect resolved the open ones would stay open (and emailed) with nothing to watch it.
        watched = (
            Connection.objects.select_for_update()
            .filter(pk=connection.pk, generation=connection.generation)
            .exclude(state=ConnectionState.DISCONNECTED)
            .values_list("pk", flat=True)
        )
        if not watched:
            return None
        try:
            with transaction.atomic():
                alert = Alert.objects.create(
                    company_id=connection.company_id,
                    connection=connection,
                    rule=rule,
                    kind=rule.kind,
                    subject=firing.subject,
                    period=firing.period,
                    title=firing.title,
                    message=firing.message,
                    detail=firing.detail,
                    email_attempted_at=timezone.now(),
                )
        except IntegrityError:
            alert = _reopen(rule, firing, reads.now)
            if alert is None:
                return None  # Raised by a concurrent evaluation.
    sync_event_add(
        connection=connection,
        kind=EventKind.ALERT,
        code=f"alert_{rule.kind}",
        level=EventLevel.WARNING,
        message=f"Alert: {firing.title}",
        detail={"alert": alert.pk, **firing.detail},
    )
    _email(alert, connection, reads.recipients(rule.notify_roles), first_attempt=True)
    return alert


def _reopen(rule: AlertRule, firing: _Firing, now: datetime) -> Alert | None:
    """The period's alert resolved (its condition cleared, its rule was off, or a dismissal ended)
    and holds again: open it as if newly raised, dated now (the Alerts page sorts by created_at). The
    update claims it, so of two evaluations at once only one reopens and emails."""
    same = Alert.objects.filter(rule=rule, subject=firing.subject, period=firing.period)
    reopened = same.filter(state=AlertState.RESOLVED).update(
        state=AlertState.OPEN,
        title=firing.title,
        message=firing.message,
        detail=firing.detail,
        created_at=now,
        emailed_to=[],
        acknowledged_by=None,
        acknowledged_at=None,
        resolved_at=None,
        email_attempted_at=timezone.now(),
    )
    return same.get() if reopened else None


# Longer than any send takes (SMTP timeouts included): an email claimed longer ago than this whose
# alert was never marked emailed had its worker die during the send.
EMAIL_SEND_ABANDONED_AFTER = timedelta(minutes=10)


def _email_claimed(alert: Alert) -> bool:
    """Take on resending the email of an open alert never emailed: True for one evaluation only.
    Another evaluation may be sending it right now (it raised the alert a moment ago)."""
    attempted = alert.email_attempted_at
    if attempted is not None and attempted > timezone.now() - EMAIL_SEND_ABANDONED_AFTER:
        return False
    claimed = (
        Alert.objects.filter(pk=alert.pk, email_attempted_at=attempted)
        if attempted
        else (Alert.objects.filter(pk=alert.pk, email_attempted_at__isnull=True))
    )
    return claimed.update(email_attempted_at=timezone.now()) == 1


def _links(alert: Alert, connection: Connection) -> str:
    """Where to act on the alert and read the figures behind it, once Doow knows its public address."""
    base = settings.DOOW_PUBLIC_URL
    if not base:
        return ""
    slug = connection.company.slug
    if alert.kind == AlertKind.SYNC_FAILING:
        what, path, readers = (
            "The sync's events",
            f"{reverse('integrations:events', args=[slug])}?connection={connection.pk}",
            HEALTH_READERS,
        )
    elif alert.kind in BUDGET_KINDS:
        what, path = "The budget and its forecast", reverse("openrouter:budgets", args=[slug, connection.pk])
        readers = USAGE_READERS
    else:
        what, path = "The figures", reverse("openrouter:detail", args=[slug, connection.pk])
        readers = USAGE_READERS
    # One email goes to every role ticked: say whom the page opens for when some cannot open it.
    if set(alert.rule.notify_roles) - readers:
        what += (
            " (opens for " + " and ".join(label for value, label in Role.choices if value in readers) + ")"
        )
    return (
        f"\nAcknowledge or resolve it: {base}{reverse('usage:alerts', args=[slug])}\n{what}: {base}{path}\n"
    )


def _email(alert: Alert, connection: Connection, recipients: list[str], *, first_attempt: bool) -> bool:
    """Email the alert; on failure log it (the error's class, nothing it carries) and leave emailed_to
    empty, so the next evaluation tries again while the alert is open and its condition holds. The
    event log says so once per alert, not on every retry."""
    if not recipients:
        return False
    try:
        send_mail(
            subject=_one_line(f"[Doow] {alert.title}"),
            message=f"{alert.message}\n\nConnection: {connection.name}\n{_links(alert, connection)}",
            from_email=None,
            recipient_list=recipients,
        )
    except Exception as error:  # any failure of one email must not stop the evaluation
        error_name = type(error).__name__
        logger.warning(
            "Could not send the email of alert %s (%s); retried after the next sync", alert.pk, error_name
        )
        if first_attempt:
            sync_event_add(
                connection=connection,
                kind=EventKind.ALERT,
                code="alert_email_failed",
                level=EventLevel.ERROR,
                message=f"Could not email alert “{alert.title}” ({error_name}). Doow tries again after each "
                "sync while the alert is open.",
                detail={"alert": alert.pk, "error": error_name},
            )
        Alert.objects.filter(pk=alert.pk).update(email_attempted_at=None)  # the next evaluation retries
        return False
    Alert.objects.filter(pk=alert.pk).update(emailed_to=recipients)
    alert.emailed_to = recipients
    return True


def _month(now: datetime) -> str:
    return now.strftime("%Y-%m")


def _check(rule: AlertRule, reads: _Reads):
    checks = {
        AlertKind.BUDGET_80: _budget_check,
        AlertKind.BUDGET_100: _budget_check,
        AlertKind.BUDGET_PROJECTED: _budget_check,
        AlertKind.CREDIT_LOW: _credit_low,
        AlertKind.CREDIT_RUNWAY: _credit_runway,
        AlertKind.KEY_LIMIT: _key_limit,
        AlertKind.SYNC_FAILING: _sync_failing,
        AlertKind.ANOMALY: _anomalies,
        AlertKind.NEW_SPENDER: _new_spenders,
    }
    return checks[rule.kind](rule, reads)


def _budget_check(rule: AlertRule, reads: _Reads):
    now, budget = reads.now, rule.budget
    if budget is None:
        return
    forecast = reads.budget_forecasts[budget.pk]
    amount = budget.monthly_usd
    spent = forecast.month_to_date
    detail = {"spent": spent, "budget": amount, "projected": forecast.expected}
    used = _budget_used(rule, spent, amount, _month(now), detail, during="this month")
    if used is not None:
        yield used
    elif rule.kind == AlertKind.BUDGET_PROJECTED and forecast.expected > amount and spent < amount:
        yield _Firing(
            budget.target,
            _month(now),
            f"{budget.label}: projected to exceed the {usd(amount)} budget",
            f"At the current run-rate of {usd(forecast.daily_rate)}/day the month ends near {usd(forecast.expected)} "
            f"(range {usd(forecast.low)}–{usd(forecast.high)}).",
            detail,
        )
    yield from _ended_month_budget_check(rule, reads)


def _ended_month_budget_check(rule: AlertRule, reads: _Reads):
    """The month that has just ended, now that its last day is read: 80% and 100% of its budget (a
    projection has nothing left to project)."""
    budget = rule.budget
    if reads.ended_month is None or budget is None:
        return
    first, last = reads.ended_month
    if budget.created_at.date() > last:
        return  # Set after that month ended: it was no budget of that month's.
    spent, amount = reads.ended_month_spend[budget.pk], budget.amount_for_month(first)
    detail = {"spent": spent, "budget": amount, "month": f"{first:%Y-%m}"}
    used = _budget_used(rule, spent, amount, f"{first:%Y-%m}", detail, during=f"in {first:%B %Y}")
    if used is not None:
        yield used


def _budget_used(
    rule: AlertRule, spent: Decimal, amount: Decimal, period: str, detail: dict, *, during: str
) -> _Firing | None:
    """The 80% or 100% rule's firing for a month's spend against that month's budget (`during`:
    "this month", "in November 2026"), or None."""
    budget = rule.budget
    label = budget.label
    named = "" if during == "this month" else f" {during}"
    if rule.kind == AlertKind.BUDGET_80 and spent >= amount * Decimal("0.8"):
        return _Firing(
            budget.target,
            period,
            f"{label}: 80% of the {usd(amount)} monthly budget used{named}",
            f"Spent {usd(spent)} of {usd(amount)} {during} ({spent / amount:.0%}).",
            detail,
        )
    if rule.kind == AlertKind.BUDGET_100 and spent >= amount:
        return _Firing(
            budget.target,
            period,
            f"{label}: monthly budget of {usd(amount)} reached{named}",
            f"Spent {usd(spent)} {during}, over the {usd(amount)} budget.",
            detail,
        )
    return None


def _credit_low(rule: AlertRule, reads: _Reads):
    credits, now = reads.credits, reads.now
    if credits is not None and rule.threshold is not None and credits.balance < rule.threshold:
        yield _Firing(
            "",
            now.date().isoformat(),
            f"Credit balance below {usd(rule.threshold)}",
            f"OpenRouter credits remaining: {usd(credits.balance)} (purchased {usd(credits.total_credits)}).",
            {"balance": credits.balance},
        )


def _credit_runway(rule: AlertRule, reads: _Reads):
    credits, now = reads.credits, reads.now
    if credits is None or rule.threshold is None:
        return
    forecast = reads.forecast
    days = runway_days(balance=credits.balance, daily_rate=forecast.daily_rate)
    if days is not None and days < float(rule.threshold):
        yield _Firing(
            "",
            now.date().isoformat(),
            f"Credits projected to run out in {days:.1f} days",
            f"{usd(credits.balance)} left at {usd(forecast.daily_rate)}/day.",
            {"balance": credits.balance, "daily_rate": forecast.daily_rate},
        )


def _key_limit(rule: AlertRule, reads: _Reads):
    connection, now = reads.connection, reads.now
    fraction = rule.threshold if rule.threshold is not None else Decimal("0.1")
    if threshold_problem(rule.kind, fraction):
        return  # Not a share of a limit (saved before the form checked it): it would fire on every key.
    keys = ApiKey.objects.filter(
        connection=connection,
        missing_since__isnull=True,
        disabled=False,
        limit__gt=0,
        limit_remaining__isnull=False,
    )
    for key in keys:
        if key.limit_remaining <= key.limit * fraction:
            yield _Firing(
                key.key_hash,
                f"{now.date().isoformat()}:{key.limit_reset or 'total'}",
                f"Key {key.name or key.key_hash[:12]}: limit almost used",
                f"{usd(key.limit_remaining)} of its {usd(key.limit)} OpenRouter limit remains.",
                {"limit": key.limit, "limit_remaining": key.limit_remaining},
            )


def _sync_failing(rule: AlertRule, reads: _Reads):
    connection, now = reads.connection, reads.now
    hours = float(rule.threshold if rule.threshold is not None else 6)
    last_ok = connection.last_synced_at or connection.created_at
    failing_since = (
        SyncRun.objects.filter(connection=connection, started_at__gt=last_ok)
        .exclude(status__in=[SyncRunStatus.SUCCEEDED, SyncRunStatus.SKIPPED, SyncRunStatus.RUNNING])
        .order_by("started_at")
        .values_list("started_at", flat=True)
        .first()
    )
    if failing_since is not None and now - failing_since > timedelta(hours=hours):
        yield _Firing(
            "",
            failing_since.isoformat(),
            f"Sync failing for more than {hours:g} hours",
            f"No successful sync since {last_ok:%d %b %H:%M} UTC. See the event log.",
        )


def _labels(subjects, noun: str, reads: _Reads) -> dict[str, str]:
    """Keys by their name (the usage no listed key accounts for by its label), models by their id."""
    names = reads.key_names(subjects) if noun == "key" else {}
    return {subject: names.get(subject) or subject or UNATTRIBUTED_LABEL for subject in subjects}


def _anomalies(rule: AlertRule, reads: _Reads):
    z = rule.threshold if rule.threshold is not None else DEFAULT_Z
    for day in reads.days_to_judge(rule):
        for by, noun in (("api_key_hash", "key"), ("model_permaslug", "model")):
            yield from _spikes_on(day, by, noun, z, reads)


def _spikes_on(day: date, by: str, noun: str, z: Decimal, reads: _Reads):
    # A spike is at least MIN_AMOUNT above a usual day of 0 or more (detect_spike), so only a subject
    # that spent MIN_AMOUNT on the day can be one: the others' history is not read.
    subjects = reads.subjects(by, ANOMALY_DAYS, through=day, spent_at_least=MIN_AMOUNT)
    for batch in reads.series(by, ANOMALY_DAYS, subjects, through=day):
        spikes = [
            detect_spike(subject=subject, series=series, day=day, z_threshold=z)
            for subject, series in batch.items()
        ]
        spikes = [spike for spike in spikes if spike is not None]
        labels = _labels([spike.subject for spike in spikes], noun, reads)
        for spike in spikes:
            subject, label = spike.subject, labels[spike.subject]
            yield _Firing(
                f"{noun}:{subject}",
                day.isoformat(),
                f"Unusual spend on {noun} {label} on {day:%d %b}",
                f"{usd(spike.amount)} against a usual {usd(spike.baseline)}/day ("
                + (f"{spike.times_usual}× usual, " if spike.times_usual is not None else "")
                + f"robust z-score {spike.score}).",
                {
                    noun: subject,
                    "day": day.isoformat(),
                    "amount": spike.amount,
                    "baseline": spike.baseline,
                    "score": spike.score,
                },
            )


def _new_spenders(rule: AlertRule, reads: _Reads):
    minimum = rule.threshold if rule.threshold is not None else Decimal(5)
    for day in reads.days_to_judge(rule):
        # Only judge once there is history before the day, or the first sync would flag everything.
        if not reads.series_exist(
            "api_key_hash", NEW_SPENDER_DAYS, through=day, until=day - timedelta(days=7)
        ):
            continue
        for by, noun in (("api_key_hash", "key"), ("model_permaslug", "model")):
            yield from _new_spenders_on(day, by, noun, minimum, reads)


def _new_spenders_on(day: date, by: str, noun: str, minimum: Decimal, reads: _Reads):
    # A new spender spent `minimum` on the day: with a minimum above 0 no other subject can be one.
    subjects = reads.subjects(by, NEW_SPENDER_DAYS, through=day, spent_at_least=minimum)
    for series in reads.series(by, NEW_SPENDER_DAYS, subjects, through=day):
        spenders = list(new_spenders(series_by_subject=series, day=day, minimum=minimum))
        labels = _labels([subject for subject, _ in spenders], noun, reads)
        for subject, amount in spenders:
            label = labels[subject]
            yield _Firing(
                f"new-{noun}:{subject}",
                day.isoformat(),
                f"New {noun} {label} spent {usd(amount)} on {day:%d %b}",
                f"The {noun} {label} had no spend in the previous 30 days.",
                {noun: subject, "amount": amount},
            )
