"""The budgets, people, reconciliation and alerts pages."""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from unittest import mock

import pytest
from django.conf import settings
from django.contrib.humanize.templatetags.humanize import intcomma
from django.db.models import Sum
from django.urls import reverse
from django.utils import timezone

from integrations.models import Connection
from openrouter import insights
from openrouter.alerts import budget_create, evaluate_alerts
from openrouter.formatting import usd
from openrouter.models import ApiKey, KeyOwner, Workspace
from openrouter.report import preset_range
from tests.conftest import client_for
from tests.support import TODAY, connect, noon, open_alerts, sync
from usage.models import Alert, AlertKind, AlertRule, AlertState, Budget, UsageDaily

pytestmark = pytest.mark.django_db


@pytest.fixture
def synced(acme, emulator):
    connection = connect(acme, emulator)
    sync(connection, emulator)
    return connection


def url(name, connection, *args):
    return reverse(f"openrouter:{name}", args=["acme", connection.pk, *args])


def test_finance_sets_a_budget_and_sees_progress_and_forecast(fiona, synced):
    client = client_for(fiona)
    response = client.post(
        url("budgets", synced), {"scope": "connection", "target": "", "monthly_usd": "250"}, follow=True
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert "Budget saved: Whole connection: $250.00/month." in page
    assert "<progress" in page and "$250.00" in page
    assert "Month-end forecast" in page
    budget = Budget.objects.get(connection=synced)
    assert set(AlertRule.objects.filter(budget=budget).values_list("kind", flat=True)) == {
        "budget_80",
        "budget_100",
        "budget_projected",
    }


def test_budget_targets_are_validated(fiona, synced):
    client = client_for(fiona)
    page = client.post(
        url("budgets", synced), {"scope": "key", "target": "nope", "monthly_usd": "10"}
    ).content.decode()
    assert "Pick an API key of this connection" in page
    page = client.post(url("budgets", synced), {"scope": "connection", "monthly_usd": "-3"}).content.decode()
    assert "greater than or equal to 1" in page
    assert not Budget.objects.exists()


def test_a_refused_budget_keeps_the_workspace_or_key_it_was_for(fiona, synced):
    key = ApiKey.objects.filter(connection=synced).order_by("sort_name", "key_hash").last()
    response = client_for(fiona).post(
        url("budgets", synced), {"scope": "key", "target": key.key_hash, "monthly_usd": "0.5"}
    )
    page = response.content.decode()
    assert "greater than or equal to 1" in page
    assert f'<option value="{key.key_hash}" selected>' in page
    assert page.count(" selected>") == 2  # the scope and the key, nothing else
    assert not Budget.objects.exists()


def test_the_detail_page_filtered_by_a_key_leads_to_a_budget_for_it_past_the_first_keys(
    fiona, synced, monkeypatch
):
    """From a key (or workspace) the usage page is filtered by, "Set a budget for this key" opens
    the budget form with it picked, even past the key list's first names; a deleted key has none."""
    from openrouter import report

    monkeypatch.setattr(report, "KEY_CHOICES", 2)
    client = client_for(fiona)
    live = ApiKey.objects.filter(connection=synced, missing_since__isnull=True)
    key = live.order_by("sort_name", "key_hash").last()
    detail = reverse("openrouter:detail", args=["acme", synced.pk])
    page = client.get(detail, {"key": key.key_hash}).content.decode()
    link = f"{url('budgets', synced)}?scope=key&amp;target={key.key_hash}"
    assert f'href="{link}">Set a budget for this key →</a>' in page
    form = client.get(url("budgets", synced), {"scope": "key", "target": key.key_hash}).content.decode()
    assert '<option value="key" selected>' in form
    assert f'<option value="{key.key_hash}" selected>' in form
    assert "More keys: filter the usage page by one" in form
    response = client.post(
        url("budgets", synced), {"scope": "key", "target": key.key_hash, "monthly_usd": "40"}
    )
    assert response.status_code == 302 and Budget.objects.get().target == key.key_hash

    workspace = Workspace.objects.filter(connection=synced).first()
    page = client.get(detail, {"workspace": workspace.workspace_id}).content.decode()
    assert "Set a budget for this workspace →" in page
    ApiKey.objects.filter(pk=key.pk).update(missing_since=timezone.now())
    assert 'data-testid="budget-for-filter"' not in client.get(detail, {"key": key.key_hash}).content.decode()


def test_a_key_budget_and_its_deletion(fiona, synced):
    key = ApiKey.objects.filter(connection=synced).first()
    client = client_for(fiona)
    client.post(url("budgets", synced), {"scope": "key", "target": key.key_hash, "monthly_usd": "10"})
    budget = Budget.objects.get()
    assert budget.target_label == key.name
    client.post(url("budget-delete", synced, budget.pk))
    assert not Budget.objects.exists()
    assert not AlertRule.objects.filter(budget__isnull=False).exists()


def test_alert_rules_are_editable(fiona, synced):
    client = client_for(fiona)
    client.get(url("budgets", synced))
    rule = AlertRule.objects.get(connection=synced, kind="credit_low")
    client.post(
        url("alert-rule", synced, rule.pk), {"threshold": "50", "notify_roles": ["ops"], "enabled": "on"}
    )
    rule.refresh_from_db()
    assert (rule.threshold, rule.notify_roles, rule.enabled) == (Decimal(50), ["ops"], True)
    client.post(url("alert-rule", synced, rule.pk), {"threshold": "50"})
    rule.refresh_from_db()
    assert rule.enabled is False
    page = client.post(url("alert-rule", synced, rule.pk), {"threshold": "50", "enabled": "on"}, follow=True)
    assert "No role is emailed: its alerts are only listed on the Alerts page." in page.content.decode()


def test_an_empty_threshold_is_refused_and_says_what_to_enter(fiona, synced):
    client = client_for(fiona)
    client.get(url("budgets", synced))
    rule = AlertRule.objects.get(connection=synced, kind="credit_low")
    before = rule.threshold

    page = client.post(url("alert-rule", synced, rule.pk), {"threshold": "", "enabled": "on"}, follow=True)

    assert "was not saved: Enter a USD balance of 0 or more." in page.content.decode()
    rule.refresh_from_db()
    assert rule.threshold == before


def test_each_budgets_alert_rules_are_listed_and_editable(fiona, synced):
    key = ApiKey.objects.filter(connection=synced).first()
    client = client_for(fiona)
    client.post(url("budgets", synced), {"scope": "key", "target": key.key_hash, "monthly_usd": "10"})
    budget = Budget.objects.get()
    page = client.get(url("budgets", synced)).content.decode()
    table = page.split('data-testid="alert-rules"')[1].split("</table>")[0]
    assert table.count(f'data-budget="{budget.pk}"') == 3
    assert f"{budget.label} · $10.00/month" in table
    assert f'aria-label="Budget reached ({budget.label}) enabled"' in table
    # Each rule's and budget's button says which it acts on, not only "Save" or "Delete".
    assert f'aria-label="Save Budget reached ({budget.label})">Save</button>' in table
    assert f'aria-label="Delete budget {budget.label}">Delete</button>' in page

    rule = AlertRule.objects.get(budget=budget, kind="budget_100")
    client.post(url("alert-rule", synced, rule.pk), {"notify_roles": ["admin"]})
    rule.refresh_from_db()
    assert (rule.enabled, rule.notify_roles, rule.threshold) == (False, ["admin"], None)


def test_people_page_and_manual_owner(alice, fiona, synced):
    # The page's default range ends today: the emulator's day, so it holds the synced usage.
    with mock.patch("django.utils.timezone.now", return_value=noon(TODAY)):
        page = client_for(fiona).get(url("people", synced)).content.decode()
        assert "Spend by person" in page and "(deleted or unlisted keys)" in page
        assert "Correct by hand" not in page
        key = ApiKey.objects.filter(connection=synced).first()
        assert (
            client_for(fiona)
            .post(url("key-owner", synced), {"key_hash": key.key_hash, "user": fiona.pk})
            .status_code
            == 403
        )
        client_for(alice).post(url("key-owner", synced), {"key_hash": key.key_hash, "user": fiona.pk})
        assert KeyOwner.objects.get(key_hash=key.key_hash).user == fiona
        page = client_for(alice).get(url("people", synced)).content.decode()
        assert "Correct by hand" in page and "manual" in page
        assert f'aria-label="Save owner of {key.name}">Save</button>' in page


def test_people_page_says_how_each_person_was_matched_in_words(alice, fiona, synced):
    """The "Matched by" column showed the internal codes (manual, member, unknown, unattributed)."""
    key = ApiKey.objects.filter(connection=synced).first()
    with mock.patch("django.utils.timezone.now", return_value=noon(TODAY)):
        client_for(alice).post(url("key-owner", synced), {"key_hash": key.key_hash, "user": fiona.pk})
        page = client_for(alice).get(url("people", synced)).content.decode()
    badges = re.findall(r'data-label="Matched by"><span class="badge">([^<]*)</span>', page)
    assert "Set by an admin" in badges and "No listed key" in badges
    labels = set(insights.PERSON_SOURCE_LABELS.values())
    assert all(set(badge.split(", ")) <= labels for badge in badges), badges


def test_a_person_matched_several_ways_is_shown_with_each_ways_label():
    person = insights.Person("Fiona", source="manual, member")
    assert person.source_label == "Set by an admin, OpenRouter key creator"


def test_spend_by_person_has_a_total_row_of_the_exact_amounts(fiona, synced):
    with mock.patch("django.utils.timezone.now", return_value=noon(TODAY)):
        response = client_for(fiona).get(url("people", synced))
    entries = response.context["by_person"]
    spend = sum(entry["spend"] for entry in entries)
    requests = sum(entry["requests"] for entry in entries)
    assert spend > 0
    footer = response.content.decode().split('data-testid="people-total"')[1].split("</tr>")[0]
    assert f'data-label="Spend">{usd(spend)}</td>' in footer
    assert f'data-label="Requests">{intcomma(requests)}</td>' in footer
    assert 'data-testid="rounding-note"' in response.content.decode()


def test_people_page_stacks_its_tables_on_a_narrow_screen(alice, synced):
    """Below 600px each person shows their spend and each key its Save button, without scrolling sideways."""
    with mock.patch("django.utils.timezone.now", return_value=noon(TODAY)):
        page = client_for(alice).get(url("people", synced)).content.decode()
    assert 'class="table table-stack" data-testid="people"' in page
    assert 'class="table table-stack" data-testid="key-owners"' in page
    assert 'data-label="Spend"' in page and 'data-label="Correct by hand"' in page
    assert 'tabindex="0" role="region" aria-label="Spend by person"' in page
    css = (settings.BASE_DIR / "doow/static/doow/app.css").read_text()
    assert ".table-stack .inline-form { flex-wrap: wrap; }" in css


def test_people_page_reads_the_range_asked_for_and_an_owner_change_keeps_it(alice, synced):
    start, end = TODAY - timedelta(days=10), TODAY - timedelta(days=4)
    params = f"range=custom&from={start}&to={end}&page=1"
    with mock.patch("django.utils.timezone.now", return_value=noon(TODAY)):
        client = client_for(alice)
        page = client.get(f"{url('people', synced)}?{params}").content.decode()
        assert f"{start:%-d %b %Y} – {end:%-d %b %Y} (UTC, completed days)" in page
        assert '<option value="custom" selected>' in page
        assert f'value="{start}"' in page and f'value="{end}"' in page
        spend = UsageDaily.objects.filter(connection=synced, day__range=(start, end)).aggregate(
            s=Sum("spend_usd")
        )
        shown = insights.spend_by_person(connection=synced, start=start, end=end)
        assert sum(entry["spend"] for entry in shown) == spend["s"] > 0

        key = ApiKey.objects.filter(connection=synced).first()
        response = client.post(
            f"{url('key-owner', synced)}?{params}", {"key_hash": key.key_hash, "user": alice.pk}
        )
        assert response.status_code == 302 and response["Location"] == f"{url('people', synced)}?{params}"


def test_people_page_on_a_months_first_day_says_no_day_of_this_month_has_ended(alice, synced):
    first = TODAY.replace(day=1) + timedelta(days=31)
    first = first.replace(day=1)
    with mock.patch("django.utils.timezone.now", return_value=noon(first)):
        page = client_for(alice).get(f"{url('people', synced)}?range=this_month").content.decode()
    assert "No UTC day of this range has completed yet" in page
    assert "No usage in this range." in page


def test_key_owner_must_be_a_member(alice, charlie, synced):
    key = ApiKey.objects.filter(connection=synced).first()
    response = client_for(alice).post(
        url("key-owner", synced), {"key_hash": key.key_hash, "user": charlie.pk}
    )
    assert response.status_code == 404
    assert not KeyOwner.objects.exists()


@pytest.mark.parametrize("user", ["abc", "1.5", "²", "-1"])
def test_a_key_owner_that_is_not_a_member_id_is_a_clear_400(alice, synced, user):
    key = ApiKey.objects.filter(connection=synced).first()
    response = client_for(alice).post(url("key-owner", synced), {"key_hash": key.key_hash, "user": user})
    assert response.status_code == 400
    assert "Pick the key's owner" in response.content.decode()
    assert not KeyOwner.objects.exists()


def test_reconciliation_page(fiona, synced):
    page = client_for(fiona).get(url("reconciliation", synced)).content.decode()
    for label in ("OpenRouter account-wide activity", "Sum over listed API keys", "Unattributed remainder"):
        assert label in page
    assert "unexplained" not in page


def test_the_tab_of_the_page_shown_is_marked_current_not_only_coloured(fiona, synced):
    for name, tab in (
        ("budgets", "Budgets, forecast &amp; alerts"),
        ("people", "People"),
        ("reconciliation", "Reconciliation"),
    ):
        page = client_for(fiona).get(url(name, synced)).content.decode()
        assert page.count('aria-current="page"') == 1
        assert f'class="active" aria-current="page">{tab}</a>' in page
    for state, tab in (("", "Open &amp; acknowledged"), ("resolved", "Resolved"), ("all", "All")):
        page = client_for(fiona).get(
            reverse("usage:alerts", args=["acme"]), {"state": state} if state else {}
        )
        assert f'class="active" aria-current="page">{tab}</a>' in page.content.decode(), state


def test_reconciliation_stacks_so_its_explanations_read_under_their_lines(fiona, synced):
    page = client_for(fiona).get(url("reconciliation", synced)).content.decode()
    assert 'class="table table-stack" data-testid="reconciliation"' in page
    assert 'data-label="Amount"' in page and 'data-label="Explanation"' in page
    assert "<h2>The range's spend, line by line</h2>" in page


def test_the_reconciliations_exact_amounts_add_up_to_the_last_digit(fiona, synced):
    page = client_for(fiona).get(url("reconciliation", synced)).content.decode()
    exact = {}
    for row in page.split("<tbody>")[1].split("</tbody>")[0].split("<tr")[1:]:
        label = row.split("<td>")[1].split("<")[0].strip()
        exact[label] = Decimal(row.split('data-testid="exact">')[1].split("<")[0] or "0")
    assert exact["OpenRouter account-wide activity"] == (
        exact["Sum over listed API keys"] + exact["Unattributed remainder"]
    )
    assert 'data-testid="rounding-note"' in page


def test_reconciliation_of_this_month_on_its_first_day_says_no_day_has_completed(fiona, synced):
    first_of_month = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    with mock.patch("django.utils.timezone.now", return_value=first_of_month):
        page = client_for(fiona).get(url("reconciliation", synced) + "?range=this_month").content.decode()
    assert "No UTC day of this range has completed yet" in page
    assert "Unattributed remainder" not in page
    assert "1 Dec 2026 – 30 Nov 2026" not in page


def test_alerts_page_lists_acknowledges_and_resolves(oscar, fiona, synced, emulator):
    budget_create(connection=synced, scope="connection", target="", target_label="", monthly_usd=Decimal(1))
    evaluate_alerts(connection=synced, now=noon(emulator.today))
    alert = Alert.objects.filter(kind="budget_100").get()
    client = client_for(oscar)
    page = client.get(reverse("usage:alerts", args=["acme"])).content.decode()
    assert alert.title in page
    assert (
        f'aria-label="Acknowledge {alert.title}">' in page and f'aria-label="Resolve {alert.title}">' in page
    )
    client.post(reverse("usage:alert-update", args=["acme", alert.pk]), {"action": "acknowledge"})
    alert.refresh_from_db()
    assert alert.state == AlertState.ACKNOWLEDGED and alert.acknowledged_by == oscar
    client.post(reverse("usage:alert-update", args=["acme", alert.pk]), {"action": "resolve"})
    alert.refresh_from_db()
    assert alert.state == AlertState.RESOLVED
    assert alert.title not in client.get(reverse("usage:alerts", args=["acme"])).content.decode()
    assert (
        alert.title in client.get(reverse("usage:alerts", args=["acme"]) + "?state=resolved").content.decode()
    )


def test_a_connections_alerts_tab_lists_its_alerts_with_a_way_to_every_connections(
    fiona, acme, globex, synced
):
    """The connection pages' "Alerts" tab opened the company's alerts of every connection."""
    other = Connection.objects.create(company_id=acme.pk, provider="openrouter", name="Second org")
    for connection, title in ((synced, "Low credits of the first org"), (other, "Low credits of the second")):
        Alert.objects.create(
            company=acme, connection=connection, kind=AlertKind.CREDIT_LOW, period="2026-11", title=title
        )
    client = client_for(fiona)
    alerts = reverse("usage:alerts", args=["acme"])
    ours = f"{alerts}?connection={synced.pk}"
    for name in ("detail", "budgets", "people", "reconciliation"):
        assert f'<a href="{ours}">Alerts</a>' in client.get(url(name, synced)).content.decode(), name

    page = client.get(ours).content.decode()
    assert "Low credits of the first org" in page and "Low credits of the second" not in page
    assert f'Alerts <span class="muted">· {synced.name}</span>' in page
    assert f'<a href="{alerts}?state=active">Show the alerts of every connection</a>' in page
    assert f'href="?connection={synced.pk}&amp;state=resolved"' in page  # the state tabs keep to it
    every = client.get(f"{alerts}?state=active").content.decode()
    assert "Low credits of the first org" in every and "Low credits of the second" in every

    alert = Alert.objects.get(connection=synced)
    response = client.post(
        reverse("usage:alert-update", args=["acme", alert.pk]) + f"?connection={synced.pk}",
        {"action": "acknowledge"},
    )
    assert response.status_code == 302 and response["Location"] == ours  # back to the same list

    elsewhere = Connection.objects.create(company_id=globex.pk, provider="openrouter", name="Globex org")
    for connection_id in (elsewhere.pk, "abc", "-1"):
        assert client.get(alerts, {"connection": connection_id}).status_code == 404


def test_an_empty_list_shows_its_empty_message_and_no_pager(alice, acme, emulator):
    """The Alerts page with no alert and the People page's key table with no key said "Page 1 of 1"."""
    connection = connect(acme, emulator)  # not synced: no key, no alert
    client = client_for(alice)
    alerts_page = client.get(reverse("usage:alerts", args=["acme"])).content.decode()
    assert "No alerts here." in alerts_page
    assert 'class="pagination"' not in alerts_page and "Page 1 of 1" not in alerts_page
    people_page = client.get(url("people", connection)).content.decode()
    assert "No API keys yet." in people_page
    assert 'class="pagination"' not in people_page and "Page 1 of 1" not in people_page


def test_the_alerts_pager_shows_once_there_is_a_second_page(oscar, synced):
    open_alerts(synced, 51)
    page = client_for(oscar).get(reverse("usage:alerts", args=["acme"])).content.decode()
    assert "Page 1 of 2" in page and 'href="?state=active&amp;page=2">Older →</a>' in page


def test_ops_cannot_read_spend_pages(oscar, synced):
    client = client_for(oscar)
    for name in ("budgets", "people", "reconciliation"):
        assert client.get(url(name, synced)).status_code == 403


def test_insight_pages_make_a_bounded_number_of_queries(fiona, synced, django_assert_max_num_queries):
    client = client_for(fiona)
    for name in ("budgets", "people", "reconciliation"):
        client.get(url(name, synced))  # warm-up: default alert rules are created once
        with django_assert_max_num_queries(40):
            assert client.get(url(name, synced)).status_code == 200


def test_the_workspace_forecasts_list_those_projected_to_spend_most_and_sum_the_rest(
    fiona, synced, monkeypatch
):
    from openrouter import insights_views

    monkeypatch.setattr(insights_views, "WORKSPACE_FORECASTS", 1)
    forecasts = {
        w.name: insights.forecast(connection=synced, workspace=w.workspace_id)
        for w in Workspace.objects.filter(connection=synced)
    }
    assert len(forecasts) > 1
    ranked = sorted(forecasts, key=lambda name: forecasts[name].expected, reverse=True)
    response = client_for(fiona).get(url("budgets", synced))
    shown = response.context["workspace_forecasts"]
    assert [workspace.name for workspace, _forecast in shown["shown"]] == ranked[:1]
    rest = sum((forecasts[name].expected for name in ranked[1:]), Decimal(0))
    assert shown["more"] == len(ranked) - 1 and shown["more_expected"] == rest
    assert f"{len(ranked) - 1} more are projected to spend" in response.content.decode()


def test_forecast_per_workspace_adds_up_to_the_connection(fiona, synced):
    from openrouter import insights
    from openrouter.models import Workspace

    page = client_for(fiona).get(url("budgets", synced)).content.decode()
    assert 'data-testid="workspace-forecasts"' in page
    whole = insights.forecast(connection=synced)
    parts = [
        insights.forecast(connection=synced, workspace=w.workspace_id)
        for w in Workspace.objects.filter(connection=synced)
    ]
    assert abs(sum(f.month_to_date for f in parts) - whole.month_to_date) <= Decimal("0.01") * len(parts)
    assert abs(sum(f.expected for f in parts) - whole.expected) <= Decimal("0.01") * len(parts)


@pytest.mark.parametrize("preset", ["7d", "90d", "this_month", "last_month"])
def test_the_reconciliation_form_applies_the_range_picked(fiona, synced, preset):
    """The form shows the preset's own dates, as the detail page's does; sent back unchanged with the
    preset (as a browser without JavaScript sends them), the preset still applies; empty, too."""
    client = client_for(fiona)
    with mock.patch("django.utils.timezone.now", return_value=noon(TODAY)):
        response = client.get(url("reconciliation", synced) + f"?range={preset}")
        start, end = preset_range(preset, TODAY)
        form = response.content.decode()
        assert f'<option value="{preset}" selected>' in form
        assert f'name="from" value="{start}"' in form and f'name="to" value="{end}"' in form
        for dates in ({"from": start, "to": end}, {"from": "", "to": ""}):
            response = client.get(url("reconciliation", synced), {"range": preset, **dates})
            assert response.context["query"].preset == preset
        # Other dates typed over the preset's make a custom range.
        other = {"range": preset, "from": start - timedelta(days=1), "to": end}
        assert client.get(url("reconciliation", synced), other).context["query"].preset == "custom"


def test_the_budgets_tables_stack_and_scroll_from_the_keyboard(fiona, synced):
    client = client_for(fiona)
    client.post(url("budgets", synced), {"scope": "connection", "target": "", "monthly_usd": "250"})
    page = client.get(url("budgets", synced)).content.decode()
    for testid, label in (("workspace-forecasts", "Month-end forecast by workspace"), ("budgets", "Budgets")):
        assert (
            f'tabindex="0" role="region" aria-label="{label}">\n  <table class="table table-stack" data-testid="{testid}">'
            in page
        )
    assert 'data-label="Projected month-end"' in page
