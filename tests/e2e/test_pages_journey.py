"""The pages in a real browser against a live server, a real Celery worker and the OpenRouter emulator
over HTTP: the admin connects and watches the initial sync, finance reads the detail page and exports,
ops follows the event log live, the admin disconnects. Screenshots land in test-artifacts/screenshots/."""

import csv
import io
import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from playwright.sync_api import expect

from integrations.models import Connection, ConnectionState, EventKind
from integrations.services import sync_event_add
from tests.e2e.conftest import log_in, shot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def money(text: str) -> Decimal:
    return Decimal(text)


def test_admin_finance_and_ops_journey(live_server, personas, slow_emulator_server, celery_worker, browser):
    emulator = slow_emulator_server
    base = live_server.url

    # --- Admin connects and watches the initial sync.
    admin = log_in(browser, live_server, "alice@acme.test")
    expect(admin.locator(".integration-card [data-testid=connect]")).to_have_text("Connect")
    shot(admin, "01-settings-not-connected")
    admin.click("[data-testid=connect]")
    admin.fill("#id_name", "Acme production")
    admin.fill("#id_key", emulator.management_key)
    shot(admin, "02-connect-form")
    admin.click("main button[type=submit]")

    card = admin.locator(".integration-card[data-connection]")
    expect(card).to_have_attribute("data-state", "syncing")
    expect(card.get_by_test_id("sync-progress")).to_be_visible()
    shot(admin, "03-settings-initial-sync")
    connection = Connection.objects.get(company__slug="acme")
    detail_url = f"{base}/c/acme/integrations/openrouter/{connection.pk}/"

    # The detail page explains the wait, then reloads itself once the first sync is done.
    admin.goto(detail_url)
    loading = admin.get_by_test_id("loading")
    if loading.count():
        shot(admin, "04-detail-loading")
    expect(admin.get_by_test_id("totals")).to_be_visible(timeout=45_000)
    expect(admin.get_by_test_id("state")).to_have_text("Connected")
    connection.refresh_from_db()
    assert connection.state == ConnectionState.CONNECTED
    assert connection.runs.filter(trigger="initial", status="succeeded").exists()

    # Header: masked key, organization, credits, freshness.
    expect(admin.get_by_test_id("masked-key")).to_have_text(f"sk-or-…{emulator.management_key[-4:]}")
    expect(admin.get_by_test_id("credits")).to_contain_text("remaining $")
    expect(admin.get_by_test_id("freshness")).to_contain_text("today partial")
    expect(admin.locator("#usage-chart[data-ready=true]")).to_have_count(1)
    shot(admin, "05-detail-last-30-days")

    # Today has no bar yet: the page says why, and the chart greys its label (and only its).
    today = emulator.today
    admin.goto(f"{detail_url}?range=custom&from={today - timedelta(days=5)}&to={today}")
    expect(admin.get_by_test_id("chart-unreported")).to_contain_text(
        f"{today.day} {today:%b} (UTC), greyed, is not"
    )
    expect(admin.locator("#usage-chart[data-ready=true]")).to_have_count(1)
    first_colour, today_colour = admin.evaluate(
        """() => {
          const chart = window.doowChart, ticks = chart.config.options.scales.x.ticks;
          return [ticks.color({ tick: { value: 0 } }), ticks.color({ tick: { value: chart.data.labels.length - 1 } })];
        }"""
    )
    assert today_colour == "#adb5bd" and first_colour != today_colour

    # Days before the organization's history (OpenRouter keeps 30) are named and greyed too.
    admin.goto(f"{detail_url}?range=custom&from={today - timedelta(days=40)}&to={today - timedelta(days=1)}")
    expect(admin.get_by_test_id("notice-days_unknown")).to_contain_text("No figures for")
    expect(admin.get_by_test_id("chart-unknown")).to_contain_text("never reported to Doow")
    expect(admin.locator("#usage-chart[data-ready=true]")).to_have_count(1)
    colours = admin.evaluate(
        """() => {
          const chart = window.doowChart, ticks = chart.config.options.scales.x.ticks;
          return chart.data.labels.map((_, i) => ticks.color({ tick: { value: i } }));
        }"""
    )
    assert colours[:10] == ["#adb5bd"] * 10 and "#adb5bd" not in colours[10:]

    # A preset applies at once and lands in the URL.
    admin.select_option("#f-range", "7d")
    admin.wait_for_url(re.compile(r"range=7d"))
    expect(admin.locator("#f-range")).to_have_value("7d")

    # Typing dates makes a custom range: twenty completed days, so it holds usage whatever the date
    # (the 1st to the 20th of the month held none on the 1st).
    end = emulator.today - timedelta(days=1)
    start = end - timedelta(days=19)
    admin.fill("#f-from", start.isoformat())
    admin.fill("#f-to", end.isoformat())
    expect(admin.locator("#f-range")).to_have_value("custom")
    admin.click("#filters button[type=submit]")
    admin.wait_for_url(re.compile(rf"range=custom&from={start}&to={end}"))
    expect(admin.get_by_test_id("range-summary")).to_contain_text(f"{end.day} {end:%b %Y}")

    # A filter applies on change; the URL carries every filter so the view can be shared.
    workspace = admin.locator("#f-workspace option").nth(1)
    workspace_id = workspace.get_attribute("value")
    admin.select_option("#f-workspace", workspace_id)
    admin.wait_for_url(re.compile(rf"workspace={workspace_id}"))
    shared_url = admin.url
    assert "range=custom" in shared_url and f"from={start}" in shared_url

    # Sorting by requests orders the rows by requests, largest first.
    admin.click("th[aria-sort] a[data-sort=requests]")
    admin.wait_for_url(re.compile(r"sort=-requests"))
    requests_column = [
        int(v)
        for v in admin.locator("[data-testid=breakdown] tbody td[data-col=requests]").evaluate_all(
            "cells => cells.map(c => c.dataset.value)"
        )
    ]
    assert requests_column == sorted(requests_column, reverse=True) and requests_column

    # The chart switches to tokens.
    admin.click("nav.segmented a[data-metric=tokens]")
    admin.wait_for_url(re.compile(r"metric=tokens"))
    expect(admin.locator("#usage-chart[data-ready=true]")).to_have_count(1)
    shot(admin, "06-detail-custom-range-workspace")

    # The CSV export of this exact view adds up to the page's totals.
    page_spend = money(admin.get_by_test_id("total-spend").locator(".value").get_attribute("data-value"))
    page_requests = int(admin.get_by_test_id("total-requests").locator(".value").get_attribute("data-value"))
    assert page_spend > 0
    with admin.expect_download() as download_info:
        admin.click("[data-testid=export-csv]")
    rows = list(csv.DictReader(io.StringIO(Path(download_info.value.path()).read_text())))
    assert rows and set(rows[0]) >= {"api_key_hash", "api_key_name", "spend_usd", "requests"}
    assert sum(Decimal(row["spend_usd"]) for row in rows) == page_spend
    assert sum(int(row["requests"]) for row in rows) == page_requests
    # And the table's footer says the same.
    footer_spend = admin.locator("[data-testid=table-total] td[data-col=spend]").get_attribute("data-value")
    assert money(footer_spend) == page_spend

    # By model, then by day.
    admin.click("nav.tabs a[data-tab=models]")
    admin.wait_for_url(re.compile(r"tab=models"))
    expect(admin.locator("[data-testid=breakdown] tbody tr").first).to_contain_text("/")
    admin.click("nav.tabs a[data-tab=days]")
    admin.wait_for_url(re.compile(r"tab=days"))
    shot(admin, "07-detail-by-day")

    # --- The event log and a run.
    admin.click("nav.topnav >> text=Event log")
    expect(admin.get_by_test_id("event-log")).to_contain_text("Sync finished")
    shot(admin, "08-event-log")
    admin.locator("[data-testid=run-link]").first.click()
    expect(admin.get_by_test_id("run-status")).to_have_text("Succeeded")
    assert int(admin.get_by_test_id("rows-written").inner_text()) > 0
    assert int(admin.get_by_test_id("requests-made").inner_text()) > 0
    shot(admin, "09-run")

    # --- Finance: the detail page from the shared link, no admin actions, no event log.
    finance = log_in(browser, live_server, "fiona@acme.test")
    finance_card = finance.locator(".integration-card[data-connection]")
    expect(finance_card.get_by_test_id("state")).to_have_text("Connected")
    expect(finance.get_by_test_id("sync-now")).to_have_count(0)
    expect(finance.get_by_test_id("disconnect")).to_have_count(0)
    expect(finance.get_by_test_id("connect")).to_have_count(0)
    expect(finance.locator("nav.topnav")).not_to_contain_text("Event log")
    shot(finance, "10-settings-finance")
    finance.goto(shared_url)
    expect(finance.locator("#f-workspace")).to_have_value(workspace_id)
    assert (
        money(finance.get_by_test_id("total-spend").locator(".value").get_attribute("data-value"))
        == page_spend
    )
    shot(finance, "11-detail-finance")
    assert finance.goto(f"{base}/c/acme/integrations/events/").status == 403

    # --- Ops: the event log, live; no detail page.
    ops = log_in(browser, live_server, "oscar@acme.test")
    expect(ops.locator(".integration-card[data-connection] a", has_text="Usage")).to_have_count(0)
    expect(ops.get_by_test_id("sync-now")).to_have_count(0)
    assert ops.goto(detail_url).status == 403
    ops.goto(f"{base}/c/acme/integrations/events/")
    expect(ops.get_by_test_id("live")).to_be_visible()
    sync_event_add(
        connection=connection,
        kind=EventKind.RATE_LIMIT,
        code="rate_limited",
        level="warning",
        message="OpenRouter rate-limited /activity; it asked to wait 2 s.",
    )
    newest = ops.locator("#event-rows tr").first
    expect(newest).to_contain_text("rate-limited /activity", timeout=10_000)
    expect(newest).to_have_class(re.compile("is-new"))
    shot(ops, "12-event-log-ops-live")

    # --- Admin rotates the key: a new management key of the organization takes the old one's place on
    # the same connection, and the worker syncs with it.
    new_key = emulator.new_management_key()
    admin.goto(f"{base}/c/acme/settings/")
    admin.click("[data-testid=replace-key]")
    admin.fill("#id_key", new_key)
    shot(admin, "13-replace-key")
    admin.click("[data-testid=replace-key-submit]")
    card = admin.locator(".integration-card[data-connection]")
    expect(card).to_contain_text(f"sk-or-…{new_key[-4:]}")
    expect(card).to_have_attribute("data-state", "connected", timeout=45_000)
    assert Connection.objects.count() == 1
    assert connection.runs.filter(trigger="manual", status="succeeded").exists()

    # --- Admin disconnects.
    admin.goto(f"{base}/c/acme/settings/")
    admin.click("[data-testid=disconnect]")
    shot(admin, "13-disconnect-confirm")
    admin.check("#id_confirm")
    admin.click("main button[type=submit]")
    expect(admin.locator(".integration-card[data-connection]")).to_have_attribute(
        "data-state", "disconnected"
    )
    shot(admin, "14-settings-disconnected")
    connection.refresh_from_db()
    assert connection.state == ConnectionState.DISCONNECTED and connection.secret == ""
    # The synced history stays readable, and says why it no longer grows.
    admin.get_by_role("link", name="Usage history", exact=True).click()
    expect(admin.get_by_test_id("notice-disconnected")).to_be_visible()
    expect(admin.get_by_test_id("total-spend")).to_be_visible()
    shot(admin, "15-detail-disconnected-history")

    # --- And connects it again with the same history, not as a new connection.
    admin.goto(f"{base}/c/acme/settings/")
    admin.click("[data-testid=connect-again]")
    admin.fill("#id_key", new_key)
    admin.click("[data-testid=replace-key-submit]")
    expect(card).to_have_attribute("data-state", "connected", timeout=45_000)
    assert Connection.objects.count() == 1
    shot(admin, "16-settings-connected-again")

    for page in (admin, finance, ops):
        assert page.js_errors == [], page.js_errors
