"""Budgets and forecast, alerts, people and reconciliation in a real browser."""

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from openrouter.alerts import evaluate_alerts
from openrouter.models import ApiKey, KeyOwner, Workspace
from openrouter.report import preset_range
from tests.e2e.conftest import log_in, shot
from tests.support import connect, noon, sync
from usage.models import Alert, Budget

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def synced(acme, emulator):
    connection = connect(acme, emulator, name="Acme production")
    sync(connection, emulator)
    return connection


def test_budgets_alerts_people_and_reconciliation(live_server, personas, synced, emulator, browser):
    base = f"{live_server.url}/c/acme/integrations/openrouter/{synced.pk}"

    finance = log_in(browser, live_server, "fiona@acme.test")
    finance.goto(f"{base}/")
    expect(finance.get_by_test_id("month")).to_contain_text("projected month-end")
    finance.get_by_role("link", name="Budgets, forecast & alerts").click()
    expect(finance.get_by_test_id("forecast")).to_be_visible()
    # The target list follows the scope: workspaces for a workspace, keys for a key, none for the whole.
    enabled = "#id_target option:not([disabled]):not(optgroup[disabled] option)"

    def offered() -> set[str]:
        return set(finance.eval_on_selector_all(enabled, "options => options.map(o => o.value)"))

    workspaces = set(Workspace.objects.filter(connection=synced).values_list("workspace_id", flat=True))
    finance.select_option("#id_scope", "workspace")
    assert offered() == workspaces
    assert finance.input_value("#id_target") in workspaces
    finance.select_option("#id_scope", "key")
    assert offered() and offered() <= set(
        ApiKey.objects.filter(connection=synced).values_list("key_hash", flat=True)
    )
    finance.select_option("#id_scope", "connection")
    assert offered() == {""} and finance.input_value("#id_target") == ""
    finance.fill("#id_monthly_usd", "1")
    finance.get_by_role("button", name="Save budget").click()
    expect(finance.locator(".messages")).to_contain_text("Budget saved")
    expect(finance.get_by_test_id("budgets").locator("progress")).to_have_count(1)
    shot(finance, "20-budgets")
    assert Budget.objects.filter(connection=synced).count() == 1

    # Alerts are evaluated after a sync; here directly, at the emulator's noon.
    synced.refresh_from_db()
    evaluate_alerts(connection=synced, now=noon(emulator.today))
    finance.goto(f"{live_server.url}/c/acme/alerts/")
    row = finance.locator("[data-testid=alerts] tr", has_text="monthly budget of $1.00 reached")
    expect(row).to_have_count(1)
    shot(finance, "21-alerts")
    row.get_by_role("button", name="Acknowledge").click()
    expect(
        finance.locator("[data-testid=alerts] tr", has_text="monthly budget of $1.00 reached")
    ).to_contain_text("Acknowledged")
    assert Alert.objects.get(kind="budget_100").state == "acknowledged"

    finance.goto(f"{base}/reconciliation/")
    expect(finance.get_by_test_id("reconciliation")).to_contain_text("Unattributed remainder")
    expect(finance.get_by_test_id("reconciliation")).not_to_contain_text("unexplained")
    shot(finance, "22-reconciliation")
    # A preset applies as soon as it is picked, and the form shows its dates; typing one makes it custom.
    finance.select_option("#r-range", "7d")
    finance.wait_for_url("**/reconciliation/?range=7d")
    start, end = preset_range("7d", timezone.now().date())
    expect(finance.locator("#r-from")).to_have_value(start.isoformat())
    expect(finance.locator("#r-to")).to_have_value(end.isoformat())
    finance.fill("#r-from", (start - timedelta(days=1)).isoformat())
    expect(finance.locator("#r-range")).to_have_value("custom")
    assert finance.js_errors == []

    admin = log_in(browser, live_server, "alice@acme.test")
    # The emulator's last thirty days: the default range ends on the real date, which moves on.
    days = f"range=custom&from={emulator.today - timedelta(days=29)}&to={emulator.today}"
    admin.goto(f"{base}/people/?{days}")
    expect(admin.get_by_test_id("people")).to_contain_text("(deleted or unlisted keys)")
    key = ApiKey.objects.filter(connection=synced).order_by("name", "key_hash").first()
    form = admin.locator("[data-testid=key-owners] tr", has_text=key.name).first.locator("form")
    form.locator("select").select_option(label=personas["finance"].display_name)
    form.get_by_role("button", name="Save").click()
    expect(admin.locator(".messages")).to_contain_text("now belongs to")
    shot(admin, "23-people")
    assert KeyOwner.objects.get(key_hash=key.key_hash).user == personas["finance"]

    ops = log_in(browser, live_server, "oscar@acme.test")
    ops.goto(f"{live_server.url}/c/acme/integrations/events/?kind=alert")
    expect(ops.locator("#event-log")).to_contain_text("Alert: ")
    shot(ops, "24-event-log-alerts")
    assert admin.js_errors == [] and ops.js_errors == []
