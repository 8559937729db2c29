"""Budgets and forecast, alert rules, people and reconciliation pages of one OpenRouter connection."""

from dataclasses import dataclass
from decimal import Decimal

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import F
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from doow.access import ADMINS, USAGE_READERS
from doow.models import Membership, Role
from doow.services import audit_record
from integrations.access import connection_view
from integrations.models import Connection
from openrouter import insights
from openrouter.alerts import budget_create, default_rules_ensure
from openrouter.formatting import usd
from openrouter.models import ApiKey, Workspace
from openrouter.report import PRESETS, DetailQuery, key_choices, range_notices
from openrouter.templatetags.openrouter import plain_number
from usage.models import THRESHOLD_RANGES, AlertKind, AlertRule, Budget, BudgetScope, threshold_problem

# The budgets page lists this many workspaces' forecasts, those projected to spend most.
WORKSPACE_FORECASTS = 50


class BudgetForm(forms.Form):
    # app.js narrows the target list to the scope picked (the server checks the pair either way).
    scope = forms.ChoiceField(
        choices=BudgetScope.choices, widget=forms.Select(attrs={"data-narrows": "id_target"})
    )
    target = forms.CharField(required=False, max_length=100, help_text="Workspace or key (for those scopes)")
    monthly_usd = forms.DecimalField(
        min_value=1, max_digits=14, decimal_places=2, label="Monthly budget (USD)"
    )

    def __init__(self, *args, connection=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.connection = connection

    def clean(self):
        data = super().clean()
        scope, target = data.get("scope"), (data.get("target") or "").strip()
        if scope == BudgetScope.CONNECTION:
            data["target"], data["target_label"] = "", "Whole connection"
        elif scope == BudgetScope.WORKSPACE:
            workspace = Workspace.objects.filter(connection=self.connection, workspace_id=target).first()
            if workspace is None:
                self.add_error("target", "Pick a workspace of this connection.")
            else:
                data["target"], data["target_label"] = target, workspace.name
        elif scope == BudgetScope.KEY:
            key = ApiKey.objects.filter(connection=self.connection, key_hash=target).first()
            if key is None:
                self.add_error("target", "Pick an API key of this connection.")
            else:
                data["target"], data["target_label"] = target, key.name or target[:12]
        return data


class AlertRuleForm(forms.Form):
    enabled = forms.BooleanField(required=False)
    threshold = forms.DecimalField(required=False, max_digits=14, decimal_places=4)
    notify_roles = forms.MultipleChoiceField(
        choices=Role.choices, required=False, widget=forms.CheckboxSelectMultiple
    )

    def __init__(self, *args, kind: str, rule_id: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.kind, self.rule_id = kind, rule_id

    def problems(self) -> list[str]:
        """Every error of the form, as the page and its message say them."""
        return [str(error) for errors in self.errors.values() for error in errors]

    def clean_threshold(self):
        threshold = self.cleaned_data.get("threshold")
        if threshold is None and self.kind in THRESHOLD_RANGES:
            # Left empty, it would be saved as "no change": say so instead of keeping it silently.
            raise forms.ValidationError(f"Enter {THRESHOLD_RANGES[self.kind][3]}.")
        if threshold is not None and (problem := threshold_problem(self.kind, threshold)):
            raise forms.ValidationError(problem)
        return threshold


@require_http_methods(["GET", "POST"])
@connection_view(USAGE_READERS)
def budgets(request: HttpRequest, connection: Connection) -> HttpResponse:
    default_rules_ensure(connection=connection)
    # ?scope=key&target=HASH (the detail page filtered by a key or workspace links here) picks it.
    asked = request.POST or request.GET
    form = BudgetForm(request.POST or None, connection=connection, initial={"scope": asked.get("scope")})
    if request.method == "POST" and form.is_valid():
        budget = budget_create(
            connection=connection,
            scope=form.cleaned_data["scope"],
            target=form.cleaned_data["target"],
            target_label=form.cleaned_data["target_label"],
            monthly_usd=form.cleaned_data["monthly_usd"],
            actor=request.user,
        )
        audit_record(
            company=request.company,
            action="budget.saved",
            request=request,
            target=f"budget:{budget.pk}",
            detail={
                "scope": budget.scope,
                "target": budget.target_label,
                "monthly_usd": str(budget.monthly_usd),
            },
        )
        # Money as the pages show it ($5.00, not str(Decimal)'s $5).
        messages.success(request, f"Budget saved: {budget.label}: {usd(budget.monthly_usd)}/month.")
        return redirect("openrouter:budgets", company_slug=request.company.slug, connection_id=connection.pk)
    return _budgets_page(request, connection, form)


@dataclass
class _RuleRow:
    """An alert rule's controls as the page shows them: as saved, or as typed when refused."""

    rule: AlertRule
    help: str
    name: str
    threshold: str
    roles: list[str]
    enabled: bool
    errors: list[str]


def _rule_row(rule: AlertRule, refused: AlertRuleForm | None) -> _RuleRow:
    help_text, name = ALERT_THRESHOLD_HELP.get(rule.kind, ""), _rule_name(rule)
    if refused is None:
        return _RuleRow(
            rule, help_text, name, plain_number(rule.threshold), rule.notify_roles, rule.enabled, []
        )
    data = refused.data
    return _RuleRow(
        rule,
        help_text,
        name,
        data.get("threshold", ""),
        data.getlist("notify_roles"),
        "enabled" in data,
        refused.problems(),
    )


def _budgets_page(
    request: HttpRequest, connection, form: BudgetForm, *, refused_rule: AlertRuleForm | None = None
) -> HttpResponse:
    asked = request.POST if form.is_bound else request.GET
    keys, more_keys = key_choices(connection, chosen=asked.get("target", ""), live_only=True)
    workspaces = list(Workspace.objects.filter(connection=connection).order_by(*Workspace.LISTED_ORDER))
    rules = (
        AlertRule.objects.filter(connection=connection)
        .select_related("budget")
        .order_by(F("budget").asc(nulls_first=True), "budget__scope", "budget__target_label", "kind")
    )
    refused_id = refused_rule.rule_id if refused_rule is not None else None
    return render(
        request,
        "openrouter/budgets.html",
        {
            "connection": connection,
            "form": form,
            "statuses": insights.budget_statuses(connection=connection),
            "forecast": insights.forecast(connection=connection),
            "workspace_forecasts": _workspace_forecasts(connection, workspaces),
            "workspaces": workspaces,
            "target": asked.get("target", ""),
            "keys": keys,
            "more_keys": more_keys,
            # The connection's rules, then each budget's three (which take the budget's amount).
            "rules": [_rule_row(rule, refused_rule if rule.pk == refused_id else None) for rule in rules],
            "roles": Role.choices,
            "section": "budgets",
        },
    )


def _rule_name(rule: AlertRule) -> str:
    """What the rule's controls are called, unique on the page (each budget has the same three)."""
    kind = rule.get_kind_display()
    return f"{kind} ({rule.budget.label})" if rule.budget else kind


def _workspace_forecasts(connection, workspaces: list) -> dict:
    """The workspaces projected to spend most (forecasts of all of them take three grouped
    queries), and what the ones left out are projected to spend together."""
    by_workspace = insights.forecasts(
        connection=connection, by="workspace", targets=[w.workspace_id for w in workspaces]
    )
    ranked = sorted(
        ((workspace, by_workspace[workspace.workspace_id]) for workspace in workspaces),
        key=lambda pair: pair[1].expected,
        reverse=True,
    )
    rest = ranked[WORKSPACE_FORECASTS:]
    return {
        "shown": ranked[:WORKSPACE_FORECASTS],
        "more": len(rest),
        "more_expected": sum((forecast.expected for _workspace, forecast in rest), Decimal(0)),
    }


@require_POST
@connection_view(USAGE_READERS)
def budget_delete(request: HttpRequest, connection: Connection, budget_id: int) -> HttpResponse:
    budget = get_object_or_404(Budget, connection=connection, pk=budget_id)
    audit_record(
        company=request.company, action="budget.deleted", request=request, target=f"budget:{budget.pk}"
    )
    budget.delete()
    messages.success(request, "Budget deleted.")
    return redirect("openrouter:budgets", company_slug=request.company.slug, connection_id=connection.pk)


@require_POST
@connection_view(USAGE_READERS)
def alert_rule_update(request: HttpRequest, connection: Connection, rule_id: int) -> HttpResponse:
    rule = get_object_or_404(AlertRule, connection=connection, pk=rule_id)
    form = AlertRuleForm(request.POST, kind=rule.kind, rule_id=rule.pk)
    if form.is_valid():
        if form.cleaned_data["enabled"] and not rule.enabled:
            # Turned on again: it starts at the newest day, not with the days it was off.
            rule.judged_through = None
        rule.enabled = form.cleaned_data["enabled"]
        if form.cleaned_data["threshold"] is not None:
            rule.threshold = form.cleaned_data["threshold"]
        rule.notify_roles = form.cleaned_data["notify_roles"]
        rule.save(update_fields=["enabled", "threshold", "notify_roles", "judged_through"])
        unheard = (
            ""
            if rule.notify_roles or not rule.enabled
            else " No role is emailed: its alerts are only listed on the Alerts page."
        )
        messages.success(request, f"Alert rule “{_rule_name(rule)}” saved.{unheard}")
        return redirect("openrouter:budgets", company_slug=request.company.slug, connection_id=connection.pk)
    # Refused: the page again, the rule's controls as typed, next to what is wrong with them.
    messages.error(request, f"The alert rule “{_rule_name(rule)}” was not saved: {' '.join(form.problems())}")
    return _budgets_page(request, connection, BudgetForm(connection=connection), refused_rule=form)


@require_GET
@connection_view(USAGE_READERS)
def people(request: HttpRequest, connection: Connection) -> HttpResponse:
    query = DetailQuery.from_params(request.GET)
    end = query.last_reported_day
    key_people = insights.key_people(connection=connection)
    key_page = Paginator(
        ApiKey.objects.filter(connection=connection).order_by(*ApiKey.LISTED_ORDER), 50
    ).get_page(request.GET.get("page"))
    by_person = insights.spend_by_person(connection=connection, start=query.start, end=end, people=key_people)
    # Summed from the exact amounts, as the detail page's totals are.
    people_total = {
        field: sum(entry[field] for entry in by_person) for field in ("keys", "spend", "byok", "requests")
    }
    return render(
        request,
        "openrouter/people.html",
        {
            "connection": connection,
            "query": query,
            "end": end,
            "presets": PRESETS,
            "by_person": by_person,
            "people_total": people_total,
            "notices": range_notices(connection, query, shown="the spend by person leaves them out"),
            "keys": [(key, key_people.get(key.key_hash)) for key in key_page.object_list],
            "key_page": key_page,
            "members": Membership.objects.filter(company=request.company)
            .select_related("user")
            .order_by("user__email"),
            "section": "people",
        },
    )


@require_POST
@connection_view(ADMINS)
def key_owner(request: HttpRequest, connection: Connection) -> HttpResponse:
    key = get_object_or_404(ApiKey, connection=connection, key_hash=request.POST.get("key_hash", ""))
    user_id = request.POST.get("user") or None
    # Within a database id's range too: SQLite refuses a larger number outright (an error, not a 404).
    if user_id is not None and not (user_id.isascii() and user_id.isdigit() and int(user_id) < 2**63):
        return HttpResponseBadRequest(
            "Pick the key's owner from the list of members.", content_type="text/plain"
        )
    membership = (
        get_object_or_404(Membership, company=request.company, user_id=user_id)
        if user_id is not None
        else None
    )
    insights.key_owner_set(
        connection=connection,
        key_hash=key.key_hash,
        user=membership.user if membership else None,
        actor=request.user,
    )
    audit_record(
        company=request.company,
        action="key_owner.set",
        request=request,
        target=key.key_hash,
        detail={"owner": membership.user.email if membership else None},
    )
    messages.success(
        request,
        f"{key.name or key.key_hash[:12]} now belongs to {membership.user.display_name}."
        if membership
        else f"Manual owner of {key.name or key.key_hash[:12]} cleared; OpenRouter's creator applies again.",
    )
    # Back to the range and page the admin was reading (the form's action carries them).
    people_url = reverse("openrouter:people", args=[request.company.slug, connection.pk])
    return redirect(f"{people_url}?{request.GET.urlencode()}" if request.GET else people_url)


@require_GET
@connection_view(USAGE_READERS)
def reconciliation(request: HttpRequest, connection: Connection) -> HttpResponse:
    query = DetailQuery.from_params(request.GET)
    end = query.last_reported_day
    return render(
        request,
        "openrouter/reconciliation.html",
        {
            "connection": connection,
            "query": query,
            "end": end,
            "presets": PRESETS,
            # On a month's first day "this month" has no completed day yet: nothing to reconcile.
            "lines": insights.reconciliation(connection=connection, start=query.start, end=end)
            if end >= query.start
            else [],
            "notices": range_notices(connection, query, shown="every line leaves them out"),
            "section": "reconciliation",
        },
    )


ALERT_THRESHOLD_HELP = {
    AlertKind.CREDIT_LOW: "USD balance",
    AlertKind.CREDIT_RUNWAY: "days of credits left",
    AlertKind.KEY_LIMIT: "fraction of a key's limit left (0–1; 0.1 = 10%)",
    AlertKind.SYNC_FAILING: "hours without a successful sync",
    AlertKind.ANOMALY: "robust z-score",
    AlertKind.NEW_SPENDER: "USD on its first day",
}
