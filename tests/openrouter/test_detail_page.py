"""Finance's OpenRouter detail page: who may see it, that its figures add up to what was synced, that
its range, filters, sorting and pages live in the URL, that it explains empty and broken states, and
that it costs a bounded number of queries whatever the data size."""

import csv
import io
import json
import re
from datetime import date, timedelta
from decimal import Decimal

import httpx
import pytest
from django.conf import settings
from django.http import QueryDict
from django.template.loader import render_to_string
from django.utils import timezone

from integrations import coverage
from integrations.models import Connection, ConnectionState, EventKind, EventLevel, SyncRun
from integrations.services import sync_event_add
from openrouter import insights, report
from openrouter.emulator import Emulator, EmulatorConfig
from openrouter.normalize import name_sort_key
from openrouter.report import DetailQuery
from tests.conftest import client_for
from tests.support import TODAY, connect, noon, stored_total, sync
from usage.models import UNATTRIBUTED_LABEL

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _today_is_the_emulators(monkeypatch):
    """The page computes ranges from the clock; pin it to the emulator's today (noon UTC)."""
    from tests.support import noon

    fixed = noon(TODAY)
    monkeypatch.setattr(report.timezone, "now", lambda: fixed)


@pytest.fixture
def synced(acme, emulator):
    connection = connect(acme, emulator, name="Acme production")
    sync(connection, emulator)
    connection.refresh_from_db()
    return connection


def url(connection, query: str = "") -> str:
    return f"/c/acme/integrations/openrouter/{connection.pk}/" + (f"?{query}" if query else "")


def window_query(emulator, **extra) -> str:
    start, end = emulator.truth.activity_window()
    params = QueryDict(mutable=True)
    params.update({"range": "custom", "from": start.isoformat(), "to": end.isoformat(), **extra})
    return params.urlencode()


# --- Access


@pytest.mark.parametrize(
    ("persona", "status"),
    [("admin", 200), ("finance", 200), ("ops", 403), ("outsider", 404), (None, 302)],
)
@pytest.mark.parametrize("suffix", ["", "?part=header", "export.csv", "export.json"])
def test_role_matrix(synced, personas, persona, status, suffix):
    response = client_for(personas.get(persona)).get(url(synced) + suffix)
    assert response.status_code == status
    if persona is None:
        assert response["Location"].startswith("/login/")


def test_another_companys_connection_is_not_found(synced, globex, charlie, emulator):
    # Charlie is admin of Globex; Acme's connection id under Globex's slug does not exist.
    response = client_for(charlie).get(f"/c/globex/integrations/openrouter/{synced.pk}/")
    assert response.status_code == 404


def test_finance_sees_no_admin_actions(synced, fiona):
    page = client_for(fiona).get(url(synced)).content.decode()
    assert "Disconnect" not in page and "Sync now" not in page


# --- Figures add up


def test_totals_reconcile_with_the_stored_rows(synced, alice, emulator):
    response = client_for(alice).get(url(synced, window_query(emulator)))
    totals = response.context["totals"]
    assert (
        totals["spend_usd"]
        == stored_total(synced)
        == emulator.truth.activity_total(*emulator.truth.activity_window())
    )
    assert totals["requests"] == stored_total(synced, "requests")
    assert totals["byok_spend_usd"] == stored_total(synced, "byok_spend_usd")
    page = response.content.decode()
    assert f'data-value="{totals["spend_usd"]}"' in page


@pytest.mark.parametrize("tab", list(report.TABS))
def test_every_table_adds_up_to_the_totals_across_its_pages(synced, alice, emulator, monkeypatch, tab):
    monkeypatch.setattr(report, "PAGE_SIZE", 2)
    client = client_for(alice)
    first = client.get(url(synced, window_query(emulator, tab=tab)))
    pages = first.context["table"]["page"].paginator.num_pages
    assert pages > 1
    rows = [
        row
        for n in range(1, pages + 1)
        for row in client.get(url(synced, window_query(emulator, tab=tab, page=n))).context["table"]["rows"]
    ]
    dimension = report.DIMENSIONS[report.TAB_DIMENSION[tab]]
    assert len({tuple(r[field] for field in dimension) for r in rows}) == len(rows)  # one row each
    totals = first.context["totals"]
    assert sum(Decimal(r["spend_usd"]) for r in rows) == totals["spend_usd"]
    assert sum(r["requests"] for r in rows) == totals["requests"]
    # Every figure the tab shows (its query sums only those), not just spend and requests.
    expected = {name: totals[name] for name in report.METRICS}
    expected["total_tokens"] = totals["prompt_tokens"] + totals["completion_tokens"]
    shown = [c.field for c in report.table_columns(tab) if c.field in expected]
    assert {"spend_usd", "requests", "total_tokens"} <= set(shown)
    for field in shown:
        assert sum(Decimal(r[field]) for r in rows) == expected[field], field


def test_a_row_of_every_breakdown_filters_the_page_by_it(synced, alice, emulator):
    """The first cell of a row links to the same view filtered by it: the way to any key when the
    key list holds only the first KEY_CHOICES names."""
    client = client_for(alice)
    for tab, name, field in (
        ("keys", "key", "api_key_hash"),
        ("models", "model", "model_permaslug"),
        ("workspaces", "workspace", "workspace_id"),
        ("providers", "provider", "provider_name"),
    ):
        response = client.get(url(synced, window_query(emulator, tab=tab)))
        row = next(r for r in response.context["table"]["rows"] if r[field])
        link = "?" + response.context["query"].params(**{name: row[field], "page": None})
        assert f'href="{link.replace("&", "&amp;")}"' in response.content.decode(), tab
        filtered = client.get(url(synced) + link).context
        assert filtered["query"].filters == {name: row[field]}
        assert filtered["totals"]["spend_usd"] == stored_total(synced, **{field: row[field]}) > 0, tab
    rows = client.get(url(synced, window_query(emulator))).context["table"]["rows"]
    assert any(r["api_key_hash"] == "" for r in rows)
    page = client.get(url(synced, window_query(emulator))).content.decode()
    assert "key=-" in page  # the unattributed row filters to itself too


def test_a_filter_applied_is_shown_selected_even_when_its_list_leaves_it_out(
    synced, alice, emulator, monkeypatch
):
    """Past the key list's first names, or a model with no usage in the range (a link kept from
    another range): the list shows the filter, not "All ...", over filtered figures."""
    monkeypatch.setattr(report, "KEY_CHOICES", 2)
    last = synced.openrouter_keys.order_by("-sort_name", "-key_hash").first()
    client = client_for(alice)
    page = client.get(url(synced, window_query(emulator, key=last.key_hash))).content.decode()
    assert f'<option value="{last.key_hash}" selected>{last.name}</option>' in page
    assert "More keys: pick one in the table below" in page
    page = client.get(url(synced, window_query(emulator, model="acme/retired-model"))).content.decode()
    assert '<option value="acme/retired-model" selected>acme/retired-model</option>' in page
    assert "No usage for this range and these filters." in page


def test_deleted_keys_have_their_own_row(synced, alice, emulator):
    response = client_for(alice).get(url(synced, window_query(emulator)))
    unattributed = [r for r in response.context["table"]["rows"] if r["api_key_hash"] == ""]
    assert len(unattributed) == 1
    assert unattributed[0]["spend_usd"] == stored_total(synced, api_key_hash="") > 0
    assert UNATTRIBUTED_LABEL in response.content.decode()


def test_this_months_card_follows_a_key_or_workspace_filter_and_says_what_it_covers(synced, alice):
    key = synced.openrouter_keys.filter(missing_since__isnull=True).order_by("name").first()

    def month(query: str):
        response = client_for(alice).get(url(synced, query))
        covers = response.content.decode().split('data-testid="month-covers">')[1:]
        return response.context["month"]["forecast"], covers[0].split("</span>")[0] if covers else ""

    now = noon(TODAY)
    assert month("") == (insights.forecast(connection=synced, now=now), "")
    assert month(f"key={key.key_hash}") == (
        insights.forecast(connection=synced, key=key.key_hash, now=now),
        "(this key)",
    )
    assert month(f"workspace={key.workspace_id}") == (
        insights.forecast(connection=synced, workspace=key.workspace_id, now=now),
        "(this workspace)",
    )
    assert month("provider=OpenAI") == (
        insights.forecast(connection=synced, now=now),
        "(the whole connection: the model and provider filters do not apply here)",
    )


def test_key_rows_name_their_creator_and_workspace(synced, alice, emulator):
    rows = client_for(alice).get(url(synced, window_query(emulator))).context["table"]["rows"]
    named = [r for r in rows if r["key"]]
    assert named and all(r["workspace_name"] for r in named)
    assert any(r["creator"] and "@" in r["creator"].email for r in named)
    assert {r["status"] for r in named} <= {"active", "disabled", "expired", "deleted"}


def test_model_rows_have_an_average_cost_per_million_tokens(synced, alice, emulator):
    rows = client_for(alice).get(url(synced, window_query(emulator, tab="models"))).context["table"]["rows"]
    row = rows[0]
    assert row["cost_per_million"] == Decimal(row["spend_usd"]) * 1_000_000 / row["total_tokens"]


def test_chart_stacks_top_models_and_other_into_the_daily_totals(synced, alice, emulator):
    response = client_for(alice).get(url(synced, window_query(emulator)))
    chart = response.context["chart"]
    assert len(chart["series"]) == report.TOP_MODELS + 1 and chart["series"][-1]["label"] == "other"
    assert len(chart["labels"]) == len(chart["series"][0]["data"])
    total = sum(Decimal(value) for series in chart["series"] for value in series["data"])
    assert total == response.context["totals"]["spend_usd"]
    tokens = client_for(alice).get(url(synced, window_query(emulator, metric="tokens"))).context["chart"]
    assert (
        sum(Decimal(v) for s in tokens["series"] for v in s["data"])
        == response.context["totals"]["total_tokens"]
    )


def test_the_csv_export_of_a_view_adds_up_to_its_totals(synced, fiona, emulator):
    client = client_for(fiona)
    workspace = synced.openrouter_workspaces.order_by("name").first().workspace_id
    view = window_query(emulator, workspace=workspace, tab="models")
    totals = client.get(url(synced, view)).context["totals"]
    export = client.get(url(synced) + "export.csv?" + view + "&group_by=model")
    assert export["Content-Disposition"].startswith("attachment;")
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert sum(Decimal(r["spend_usd"]) for r in rows) == totals["spend_usd"] > 0
    assert sum(int(r["requests"]) for r in rows) == totals["requests"]


def test_each_export_link_downloads_under_a_name_of_its_own(synced, fiona, emulator):
    client = client_for(fiona)
    page = client.get(url(synced, window_query(emulator, tab="keys"))).content.decode()
    names = set()
    for testid in ("export-csv", "export-json", "export-all"):
        link = page.split(f'data-testid="{testid}" href="')[1].split('"')[0].replace("&amp;", "&")
        response = client.get(link)
        assert response.status_code == 200
        names.add(response["Content-Disposition"].split('filename="')[1].rstrip('"'))
        body = b"".join(response.streaming_content)
        if testid == "export-json":
            assert json.loads(body)
    start, end = emulator.truth.activity_window()
    stem = f"openrouter-usage-{synced.pk}-{start}-{end}"
    assert names == {f"{stem}-by-key.csv", f"{stem}-by-key.json", f"{stem}.csv"}


# --- The URL holds the view


def test_typed_dates_over_a_preset_make_a_custom_range():
    query = DetailQuery.from_params(QueryDict("range=30d&from=2026-11-01&to=2026-11-10"), today=TODAY)
    assert (query.preset, query.start.isoformat(), query.end.isoformat()) == (
        "custom",
        "2026-11-01",
        "2026-11-10",
    )


def test_a_presets_own_dates_keep_the_preset():
    start, end = report.preset_range("7d", TODAY)
    query = DetailQuery.from_params(QueryDict(f"range=7d&from={start}&to={end}"), today=TODAY)
    assert query.preset == "7d" and query.days == 7


@pytest.mark.parametrize("shown_preset", ["30d", "custom"])
def test_another_preset_picked_over_the_dates_the_form_showed_applies(shown_preset):
    """Without JavaScript the form sends back the dates it showed whichever range is picked: those
    dates, unchanged, leave the range picked to decide; dates typed over them make a custom range."""
    start, end = (
        report.preset_range("30d", TODAY) if shown_preset == "30d" else (date(2026, 10, 3), date(2026, 10, 9))
    )
    shown = f"shown={start}..{end}"
    picked = DetailQuery.from_params(QueryDict(f"range=7d&from={start}&to={end}&{shown}"), today=TODAY)
    assert (picked.preset, picked.days) == ("7d", 7)
    typed = DetailQuery.from_params(QueryDict(f"range=7d&from={start}&to=2026-11-02&{shown}"), today=TODAY)
    assert (typed.preset, typed.start, typed.end) == ("custom", start, date(2026, 11, 2))


def test_every_range_form_tells_the_dates_it_showed(synced, alice, emulator):
    client = client_for(alice)
    start, end = report.preset_range("7d", TODAY)
    shown = f'<input type="hidden" name="shown" value="{start}..{end}">'
    assert shown in client.get(url(synced, "range=7d")).content.decode()
    for page in ("people", "reconciliation"):
        assert shown in client.get(url(synced) + f"{page}/?range=7d").content.decode(), page


@pytest.mark.parametrize(
    ("preset", "start", "end", "previous"),
    [
        ("7d", "2026-11-17", "2026-11-23", ("2026-11-10", "2026-11-16")),
        ("30d", "2026-10-25", "2026-11-23", ("2026-09-25", "2026-10-24")),
        ("90d", "2026-08-26", "2026-11-23", ("2026-05-28", "2026-08-25")),
        # Runs through today, which OpenRouter has not reported: its 23 ended days against 23 before.
        ("this_month", "2026-11-01", "2026-11-24", ("2026-10-09", "2026-10-31")),
        ("last_month", "2026-10-01", "2026-10-31", ("2026-08-31", "2026-09-30")),
    ],
)
def test_presets(preset, start, end, previous):
    query = DetailQuery.from_params(QueryDict(f"range={preset}"), today=TODAY)
    assert (query.start.isoformat(), query.end.isoformat()) == (start, end)
    assert tuple(day.isoformat() for day in query.previous) == previous


def test_a_range_of_which_no_day_has_ended_has_nothing_to_compare_with():
    first = date(2026, 12, 1)
    this_month = DetailQuery.from_params(QueryDict("range=this_month"), today=first)
    ahead = DetailQuery.from_params(QueryDict("range=custom&from=2026-12-01&to=2026-12-05"), today=first)
    assert this_month.reported_days == ahead.reported_days == 0
    assert this_month.previous is None and ahead.previous is None


def test_this_month_on_its_first_day_shows_no_change_and_says_no_day_has_ended(
    synced, alice, emulator, monkeypatch
):
    """On the 1st, "this month" is today alone: no figures yet, and nothing to compare them with
    (it once showed -100% against yesterday, and said nothing was spent)."""
    monkeypatch.setattr(report.timezone, "now", lambda: noon(TODAY.replace(month=12, day=1)))
    page = client_for(alice).get(url(synced, "range=this_month")).content.decode()

    assert "none has ended yet, so there is no change to show" in page
    assert "vs previous period" not in page
    assert "No day of this range has ended yet" in page
    assert "Nothing was spent" not in page


@pytest.mark.parametrize(
    ("today", "query", "said"),
    [
        # The period before a range of years starts in another year than it ends.
        (TODAY, "range=custom&from=2020-01-01&to=2026-11-23", "(7 Feb 2013 – 31 Dec 2019)"),
        # One ended day is compared with one day, named once.
        (TODAY.replace(month=12, day=2), "range=this_month", "(30 Nov 2026),"),
    ],
)
def test_the_period_before_is_named_with_its_years_and_a_lone_day_once(
    synced, alice, monkeypatch, today, query, said
):
    monkeypatch.setattr(report.timezone, "now", lambda: noon(today))
    # A sync has read every day that has ended (1 Dec, on 2 Dec): the page compares the days it holds.
    yesterday = today - timedelta(days=1)
    spans = coverage.add(synced.reported_spans, yesterday, yesterday)
    Connection.objects.filter(pk=synced.pk).update(complete_through=yesterday, reported_spans=spans)
    summary = (
        client_for(alice).get(url(synced, query)).content.decode().split('data-testid="range-summary">')[1]
    )
    assert said in summary.split("</p>")[0]


def test_this_month_compares_its_ended_days_with_as_many_before(synced, alice):
    # Doow has held this organization's days since September (earlier syncs read them).
    spans = coverage.add(synced.reported_spans, date(2026, 9, 1), date(2026, 10, 24))
    Connection.objects.filter(pk=synced.pk).update(reported_spans=spans)
    page = client_for(alice).get(url(synced, "range=this_month")).content.decode()

    assert "changes compare its 23 ended days with 9 Oct – 31 Oct 2026" in page


INVALID_RANGES = [
    "range=custom&from=2026-11-10&to=2026-11-01",
    "range=custom&from=nope",
    "range=forever",
    "range=custom&from=0001-01-01&to=0001-01-05",  # no period before it to compare with
    "range=custom&from=9999-12-01&to=9999-12-31",
    # Dates asked for without range=custom are not left for the preset's either.
    "from=2026-11-20",
    "to=2026-11-20",
    "from=abc",
    "from=abc&to=2026-11-05",
    "range=7d&from=99999-01-01&to=2026-11-05",
    "range=custom&from=2000-01-01&to=2026-11-02",
]

RANGE_PROBLEMS = {
    "range=custom&from=2026-11-10&to=2026-11-01": "Pick a From on or before To.",
    "range=custom&from=nope": "From is not a date: pick one as YYYY-MM-DD.",
    "range=custom&to=2026-11-01": "Pick both From and To.",
    "range=custom": "Pick both From and To for a custom range.",
    "from=2026-11-20": "Pick both From and To.",
    "range=7d&from=99999-01-01&to=2026-11-05": "From is not a date: pick one as YYYY-MM-DD.",
    "from=2026-11-01&to=11/05/2026": "To is not a date: pick one as YYYY-MM-DD.",
    "range=custom&from=2000-01-01&to=2026-11-02": "Pick a range of at most 10 years.",
}


@pytest.mark.parametrize(("params", "problem"), RANGE_PROBLEMS.items())
def test_a_range_problem_says_what_is_wrong(params, problem):
    assert DetailQuery.from_params(QueryDict(params), today=TODAY).problem == problem


@pytest.mark.parametrize("params", INVALID_RANGES)
def test_an_invalid_range_falls_back_to_30_days_and_says_so(params):
    query = DetailQuery.from_params(QueryDict(params), today=TODAY)
    assert query.preset == "30d" and query.error and query.problem
    assert query.previous  # the default range's comparison period exists


@pytest.mark.parametrize("params", INVALID_RANGES)
def test_an_invalid_range_shows_the_page_with_a_notice_and_refuses_the_export(synced, alice, params):
    client = client_for(alice)
    page = client.get(url(synced, params))
    assert page.status_code == 200
    assert "showing the last 30 days" in page.content.decode()
    for fmt in ("csv", "json"):
        export = client.get(url(synced) + f"export.{fmt}?{params}")
        assert export.status_code == 400, fmt
        assert DetailQuery.from_params(QueryDict(params), today=TODAY).problem == export.content.decode()


@pytest.mark.parametrize("name", ["key", "workspace", "model", "provider", "tab", "from"])
def test_a_nul_character_in_a_parameter_is_a_clear_400(synced, alice, name):
    response = client_for(alice).get(url(synced, f"{name}=a%00b"))
    assert response.status_code == 400
    assert "NUL" in response.content.decode()


@pytest.mark.parametrize(
    ("current", "previous", "shown"),
    [
        ("99.98", "100", "▼ under 0.1% vs previous period"),
        ("100.02", "100", "▲ under 0.1% vs previous period"),
        ("87.66", "100", "▼ −12.3% vs previous period"),
        ("250", "100", "▲ +150.0% vs previous period"),
        ("100", "100", "0.0% vs previous period"),
        ("5", "0", "new vs previous period"),
    ],
)
def test_a_change_is_shown_signed_to_a_tenth_and_a_tiny_one_keeps_its_direction(current, previous, shown):
    html = render_to_string(
        "openrouter/_stat.html",
        {"label": "Spend", "value": current, "delta": report._delta(current, previous)},
    )
    assert " ".join(html.split("</div>")[-3].split(">")[-1].split()) == shown


@pytest.mark.parametrize(
    ("current", "previous", "direction", "shown"),
    [
        # The unattributed remainder (key filter "-") of a period can be negative: credits given back.
        ("10", "-10", "up", "▲ up $20.00 vs previous period"),
        ("0", "-10", "up", "▲ up $10.00 vs previous period"),
        ("-15", "-10", "down", "▼ down $5.00 vs previous period"),
        ("-5", "0", "down", "▼ down $5.00 vs previous period"),
        ("-10", "-10", "flat", "same as previous period"),
        ("0", "0", "flat", "same as previous period"),
    ],
)
def test_a_change_from_a_period_at_or_below_zero_is_its_amount_with_the_right_sign(
    current, previous, direction, shown
):
    """A percentage of a negative total has the wrong sign (−$10 to +$10 read ▼ −200%), and one of
    nothing none: the change is said as an amount, up or down by current − previous."""
    delta = report._delta(current, previous)
    assert (delta["direction"], delta["pct"]) == (direction, None)
    html = render_to_string(
        "openrouter/_stat.html", {"label": "Spend", "value": current, "delta": delta, "money": True}
    )
    assert " ".join(html.split("</div>")[-3].split(">")[-1].split()) == shown


def test_filters_sort_and_tab_round_trip_through_the_url():
    params = "range=custom&from=2026-11-01&to=2026-11-10&workspace=ws1&key=-&model=m%2Fx&provider=P&tab=models&sort=requests&metric=tokens"
    query = DetailQuery.from_params(QueryDict(params), today=TODAY)
    assert query.filters == {"workspace": "ws1", "key": "", "model": "m/x", "provider": "P"}
    again = DetailQuery.from_params(QueryDict(query.params()), today=TODAY)
    assert again == query
    assert "page" not in query.params(page=1) and "page=2" in query.params(page=2)


def test_an_unknown_sort_falls_back_to_the_tabs_default():
    assert DetailQuery.from_params(QueryDict("tab=keys&sort=-bogus"), today=TODAY).sort_param == "-spend"
    assert DetailQuery.from_params(QueryDict("tab=days"), today=TODAY).sort_param == "-name"


@pytest.mark.parametrize(
    ("sort", "field"), [("-requests", "requests"), ("spend", "spend_usd"), ("-tokens", "total_tokens")]
)
def test_sorting_orders_the_rows(synced, alice, emulator, sort, field):
    rows = client_for(alice).get(url(synced, window_query(emulator, sort=sort))).context["table"]["rows"]
    values = [row[field] for row in rows]
    assert values == sorted(values, reverse=sort.startswith("-"))


def test_keys_sort_by_name_with_deleted_keys_last(synced, alice, emulator):
    rows = client_for(alice).get(url(synced, window_query(emulator, sort="name"))).context["table"]["rows"]
    names = [row["key"].name for row in rows if row["key"]]
    assert names == sorted(names, key=name_sort_key) and rows[-1]["key"] is None


def test_days_default_to_newest_first(synced, alice, emulator):
    rows = client_for(alice).get(url(synced, window_query(emulator, tab="days"))).context["table"]["rows"]
    days = [row["day"] for row in rows]
    assert days == sorted(days, reverse=True)


def test_sort_headers_link_to_the_same_view_sorted(synced, alice, emulator):
    page = client_for(alice).get(url(synced, window_query(emulator, workspace="x"))).content.decode()
    assert 'aria-sort="descending"' in page  # spend, the default
    assert "workspace=x" in page.split('data-sort="requests"')[0].rsplit("<a", 1)[1]


def test_a_key_filter_narrows_to_that_key(synced, alice, emulator):
    key = synced.openrouter_keys.exclude(name="").order_by("name").first()
    response = client_for(alice).get(url(synced, window_query(emulator, key=key.key_hash)))
    assert response.context["totals"]["spend_usd"] == stored_total(synced, api_key_hash=key.key_hash)
    assert [r["api_key_hash"] for r in response.context["table"]["rows"]] in ([key.key_hash], [])
    deleted = client_for(alice).get(url(synced, window_query(emulator, key="-")))
    assert deleted.context["totals"]["spend_usd"] == stored_total(synced, api_key_hash="")


def test_the_key_filter_lists_every_key_escaped_with_the_filtered_one_selected(synced, alice, emulator):
    hostile, unnamed, *_ = synced.openrouter_keys.order_by("key_hash")
    hostile.name = '<b>"Ops" & co</b>'
    hostile.save()
    unnamed.name = ""
    unnamed.save()
    page = client_for(alice).get(url(synced, window_query(emulator, key=hostile.key_hash))).content.decode()
    select = page.split('<select id="f-key"')[1].split("</select>")[0]
    expected = (
        f'<option value="{hostile.key_hash}" selected>&lt;b&gt;&quot;Ops&quot; &amp; co&lt;/b&gt;</option>'
    )
    assert expected in select
    assert f'<option value="{unnamed.key_hash}">{unnamed.key_hash}</option>' in select  # known by its hash
    assert select.count("<option") == 2 + synced.openrouter_keys.count()  # all keys, unattributed
    assert select.count(" selected") == 1


# --- States that explain themselves


def notice_codes(response) -> set[str]:
    return {notice["code"] for notice in response.context["notices"]}


def test_the_first_sync_shows_a_loading_state_that_polls_then_reloads(acme, alice, emulator):
    connection = connect(acme, emulator)
    client = client_for(alice)
    response = client.get(url(connection))
    page = response.content.decode()
    assert 'data-testid="loading"' in page and "The first sync is running" in page
    assert "part=header&amp;reload_when_done=1" in page and 'hx-trigger="every 2s"' in page
    header = client.get(url(connection, "part=header&reload_when_done=1"))
    assert header.status_code == 200 and 'data-testid="header"' in header.content.decode()
    sync(connection, emulator)
    done = client.get(url(connection, "part=header&reload_when_done=1"))
    assert done["HX-Refresh"] == "true"
    assert "hx-trigger" not in client.get(url(connection, "part=header")).content.decode()


def test_a_queued_sync_polls_the_header_until_a_worker_has_started_it(synced, alice):
    client = client_for(alice)
    # "Sync now", after the last sync (the clock stands still in these tests)
    requested = synced.last_sync_attempt_at + timedelta(seconds=1)
    Connection.objects.filter(pk=synced.pk).update(sync_requested_at=requested)

    page = client.get(url(synced)).content.decode()

    assert 'data-testid="sync-queued"' in page and 'hx-trigger="every 2s"' in page
    Connection.objects.filter(pk=synced.pk).update(last_sync_attempt_at=requested)  # a worker took it
    header = client.get(url(synced, "part=header")).content.decode()
    assert "hx-trigger" not in header and "sync-queued" not in header


def test_no_usage_in_the_range(synced, alice, emulator):
    response = client_for(alice).get(url(synced, window_query(emulator, model="no-such/model")))
    assert notice_codes(response) == {"no_usage"}
    assert (
        "Nothing was spent with these filters between 25 Oct 2026 and 23 Nov 2026"
        in response.content.decode()
    )
    assert response.context["chart"] is None


def test_a_range_before_the_organizations_history_says_its_days_are_unknown_not_without_spend(synced, alice):
    response = client_for(alice).get(url(synced, "range=custom&from=2020-01-01&to=2020-01-31"))
    assert notice_codes(response) == {"days_unknown"}
    page = response.content.decode()
    assert "No figures for 1 Jan – 31 Jan 2020." in page
    assert "history of this organization starts on 25 Oct 2026" in page
    assert "Nothing was spent" not in page
    assert response.context["chart"] is None


def test_no_usage_at_all_suggests_the_wrong_organization(acme, alice, emulator):
    connection = connect(acme, emulator)
    Connection.objects.filter(pk=connection.pk).update(
        state=ConnectionState.CONNECTED,
        last_synced_at=timezone.now(),
        complete_through=TODAY - timedelta(days=1),
    )
    response = client_for(alice).get(url(connection))
    assert "wrong_organization" in notice_codes(response)
    assert "wrong one" in response.content.decode()


def test_a_normal_key_explains_its_single_key_scope(acme, alice, emulator):
    connection = connect(acme, emulator, secret=emulator.normal_key)
    sync(connection, emulator)
    response = client_for(alice).get(url(connection))
    assert "single_key" in notice_codes(response)
    html = response.content.decode()
    assert "not visible to a normal key" in html
    # No daily activity: no range totals of $0 "same as the previous period", no chart, no tables.
    for daily in ('data-testid="totals"', 'data-testid="range-summary"', 'data-testid="breakdown-card"'):
        assert daily not in html
    assert 'data-testid="today-spend"' in html and 'data-testid="month"' in html
    assert "Not in the totals above" not in html


def test_a_range_none_of_whose_days_has_ended_says_so_once(synced, alice):
    response = client_for(alice).get(url(synced, "range=custom&from=2027-01-01&to=2027-01-31"))
    assert notice_codes(response) & {"reporting_delay", "no_reported_day"} == {"no_reported_day"}


def test_a_range_through_today_explains_the_reporting_delay(synced, alice):
    response = client_for(alice).get(url(synced, "range=this_month"))
    assert "reporting_delay" in notice_codes(response)
    assert "complete through 23 Nov UTC" in response.content.decode()
    assert "reporting_delay" not in notice_codes(client_for(alice).get(url(synced)))


def test_the_chart_names_the_days_not_reported_yet_instead_of_showing_them_as_no_spend(synced, alice):
    client = client_for(alice)
    # Today: OpenRouter reports a UTC day once it has ended.
    response = client.get(url(synced, "range=this_month"))
    chart = response.context["chart"]
    assert (chart["unreported_from"], chart["unreported_days"]) == (TODAY, 1)
    assert chart["labels"][-1] == TODAY.isoformat()
    assert "24 Nov (UTC), greyed, is not in OpenRouter's daily activity yet" in response.content.decode()
    # A range of ended days the last sync read completely has none.
    response = client.get(url(synced, "range=7d"))
    chart = response.context["chart"]
    assert (chart["unreported_from"], chart["unreported_days"]) == (None, 0)
    assert 'data-testid="chart-unreported"' not in response.content.decode()
    # Days that have ended but no sync has read yet (syncs stopped two days ago) are named too.
    Connection.objects.filter(pk=synced.pk).update(complete_through=TODAY - timedelta(days=3))
    response = client.get(url(synced, "range=7d"))
    chart = response.context["chart"]
    assert (chart["unreported_from"], chart["unreported_days"]) == (TODAY - timedelta(days=2), 2)
    assert "The 2 days from 22 Nov (UTC), greyed, are not in" in response.content.decode()
    # The chart script reads the same date to grey the labels from it.
    chart_data = response.content.decode().split('<script id="chart-data" type="application/json">')[1]
    assert json.loads(chart_data.split("</script>")[0])["unreported_from"] == "2026-11-22"
    assert "the next sync reads it" in response.content.decode()
    # A disconnected connection has no next sync.
    Connection.objects.filter(pk=synced.pk).update(state=ConnectionState.DISCONNECTED)
    page = client.get(url(synced, "range=7d")).content.decode()
    assert "and this connection is no longer synced." in page and "the next sync reads it" not in page


def test_a_rate_limited_last_sync_is_explained(synced, alice):
    run = synced.runs.first()
    sync_event_add(
        connection=synced,
        run=run,
        kind=EventKind.RATE_LIMIT,
        code="rate_limited",
        level=EventLevel.WARNING,
        message="429",
    )
    assert "rate_limited" in notice_codes(client_for(alice).get(url(synced)))


def test_a_failed_sync_and_needs_attention_are_explained(synced, alice):
    SyncRun.objects.create(company=synced.company, connection=synced, trigger="scheduled", status="failed")
    Connection.objects.filter(pk=synced.pk).update(
        state=ConnectionState.NEEDS_ATTENTION, attention_reason="OpenRouter refused the key."
    )
    response = client_for(alice).get(url(synced))
    assert {"sync_failed", "needs_attention"} <= notice_codes(response)
    assert "OpenRouter refused the key." in response.content.decode()


def test_todays_partial_spend_comes_from_the_key_counters(synced, alice, emulator):
    response = client_for(alice).get(url(synced))
    partial = response.context["today_partial"]
    expected = sum((Decimal(str(k["usage_daily"])) for k in emulator.truth.listed_keys()), Decimal(0))
    assert partial["synced_today"] and partial["spend"] == expected > 0
    # The totals of completed days do not include it.
    assert response.context["totals"]["spend_usd"] == stored_total(synced)


def test_todays_partial_spend_of_a_workspace_or_a_key_is_theirs_alone(synced, alice, emulator):
    from openrouter.insights import today_partial

    keys = [k for k in emulator.truth.listed_keys() if Decimal(str(k["usage_daily"])) > 0]
    workspace, key = keys[0]["workspace_id"], keys[-1]["hash"]
    slices = {
        f"workspace={workspace}": (
            {"workspace": workspace},
            [k for k in keys if k["workspace_id"] == workspace],
        ),
        f"key={key}": ({"key": key}, [k for k in keys if k["hash"] == key]),
    }
    for params, (narrowed, expected_keys) in slices.items():
        expected = sum((Decimal(str(k["usage_daily"])) for k in expected_keys), Decimal(0))
        partial = client_for(alice).get(url(synced, params)).context["today_partial"]
        # The page and the month-end forecast read the same counters for the same slice.
        assert partial["spend"] == today_partial(connection=synced, **narrowed) == expected > 0, params
        top = {k.key_hash for k in partial["top"]}
        assert top <= {k["hash"] for k in expected_keys} and len(top) == min(10, len(expected_keys)), params


def test_the_page_explains_byok_spend_and_the_headers_all_time_credits(synced, alice):
    page = client_for(alice).get(url(synced)).content.decode()
    note = page.split('data-testid="spend-note">')[1].split("</p>")[0]
    assert "that provider bills them, not OpenRouter, so they are not in the credits spend" in note
    assert "OpenRouter's all-time counter as of the last sync" in note


def test_the_breakdown_card_has_a_heading_to_reach_it_by(synced, alice):
    page = client_for(alice).get(url(synced)).content.decode()
    assert 'aria-labelledby="breakdown-title"' in page
    assert '<h2 class="visually-hidden" id="breakdown-title">Usage breakdown</h2>' in page


def test_todays_key_table_stacks_and_scrolls_from_the_keyboard(synced, alice):
    page = client_for(alice).get(url(synced)).content.decode()
    assert 'tabindex="0" role="region" aria-label="Today\'s spend by key"' in page
    table = page.split('data-testid="today-keys"')[1].split("</table>")[0]
    assert 'data-label="Today (UTC)"' in table
    # OpenRouter's weekly and monthly key counters: the UTC week from Monday and the UTC month, today included.
    assert "the UTC week since Monday and the UTC month so far" in table
    assert (
        '<th class="num" scope="col">Week since Monday</th><th class="num" scope="col">Month to date</th>'
        in table
    )


def test_todays_partial_spend_is_unknown_without_a_sync_today(synced, alice):
    Connection.objects.filter(pk=synced.pk).update(last_synced_at=timezone.now() - timedelta(days=1))
    response = client_for(alice).get(url(synced))
    assert not response.context["today_partial"]["synced_today"]
    assert 'data-testid="today-unknown"' in response.content.decode()


# --- Bounded queries


def synced_company(company, keys: int) -> Connection:
    emulator = Emulator(EmulatorConfig(seed=11, keys=keys, today=TODAY))
    connection = connect(company, emulator)
    sync(connection, emulator)
    return connection


def test_every_tab_makes_the_same_number_of_queries_for_small_and_large_data(
    acme, globex, alice, charlie, django_assert_max_num_queries
):
    small = synced_company(globex, keys=3)
    large = synced_company(acme, keys=60)
    assert large.usage_rows.count() > 5 * small.usage_rows.count()
    small_client, large_client = client_for(charlie), client_for(alice)
    for tab in report.TABS:
        with django_assert_max_num_queries(30) as small_queries:
            response = small_client.get(f"/c/globex/integrations/openrouter/{small.pk}/?tab={tab}")
            assert response.status_code == 200
        with django_assert_max_num_queries(30) as large_queries:
            assert large_client.get(url(large, f"tab={tab}")).status_code == 200
        assert len(large_queries.captured_queries) == len(small_queries.captured_queries), tab


# --- Cached figures are never stale


def usage_queries(captured) -> list[str]:
    return [q["sql"] for q in captured if "usage_usagedaily" in q["sql"]]


def test_a_repeated_view_reads_no_usage_row_again(synced, alice, emulator, django_assert_max_num_queries):
    client = client_for(alice)
    with django_assert_max_num_queries(40) as first:
        first_page = client.get(url(synced, window_query(emulator)))
    with django_assert_max_num_queries(40) as second:
        second_page = client.get(url(synced, window_query(emulator)))

    assert usage_queries(first.captured_queries)
    # Only the cheap "is there any row at all" check may touch the table when the range is empty.
    assert usage_queries(second.captured_queries) == []
    assert second_page.context["totals"] == first_page.context["totals"]
    assert second_page.context["table"]["rows"] == first_page.context["table"]["rows"]


def test_a_sync_that_writes_moves_the_page_to_the_new_figures(synced, alice, emulator, monkeypatch):
    client = client_for(alice)
    query = "range=custom&from={}&to={}".format(*(d.isoformat() for d in emulator.truth.activity_window()))
    before = client.get(url(synced, query)).context["totals"]["spend_usd"]
    version = synced.data_version

    # The next day completes: OpenRouter's window moves and the sync writes the new day's rows.
    emulator.set_today(emulator.today + timedelta(days=1))
    sync(synced, emulator)
    synced.refresh_from_db()
    assert synced.data_version > version
    next_noon = noon(emulator.today)
    monkeypatch.setattr(report.timezone, "now", lambda: next_noon)

    start, end = emulator.truth.activity_window()
    after = client.get(url(synced, f"range=custom&from={start}&to={end}")).context["totals"]["spend_usd"]
    assert (
        after
        == stored_total(synced, day__gte=start, day__lte=end)
        == emulator.truth.activity_total(start, end)
    )
    assert after != before
    # The same view as before the sync, recomputed over the rows the sync rewrote.
    old_start, old_end = (date.fromisoformat(part.split("=")[1]) for part in query.split("&")[1:])
    assert client.get(url(synced, query)).context["totals"]["spend_usd"] == stored_total(
        synced, day__gte=old_start, day__lte=old_end
    )


def test_every_page_of_a_computed_table_is_served_from_the_cache(
    synced, alice, emulator, monkeypatch, django_assert_max_num_queries
):
    monkeypatch.setattr(report, "PAGE_SIZE", 2)
    client = client_for(alice)
    first = client.get(url(synced, window_query(emulator)))
    pages = first.context["table"]["page"].paginator.num_pages
    assert pages >= 3
    seen = [row["api_key_hash"] for row in first.context["table"]["rows"]]
    for number in range(2, pages + 1):
        with django_assert_max_num_queries(40) as captured:
            page = client.get(url(synced, window_query(emulator, page=str(number))))
        assert usage_queries(captured.captured_queries) == []
        seen += [row["api_key_hash"] for row in page.context["table"]["rows"]]
    assert len(seen) == len(set(seen)) == synced.usage_rows.values("api_key_hash").distinct().count()

    # A page that left the cache before the count did is computed again, not shown empty.
    real_get = report.cache_get
    monkeypatch.setattr(
        report,
        "cache_get",
        lambda conn, name, params: None if name == "table_page" else real_get(conn, name, params),
    )
    again = client.get(url(synced, window_query(emulator, page="2")))
    assert [row["api_key_hash"] for row in again.context["table"]["rows"]] == seen[2:4]


def test_the_page_says_its_amounts_are_rounded_and_where_the_exact_ones_are(synced, alice):
    page = client_for(alice).get(url(synced)).content.decode()
    assert 'data-testid="rounding-note"' in page and "exact amounts" in page


def test_a_narrow_screen_stacks_the_breakdown_with_every_figure_named(synced, alice, emulator):
    """Below 600px the key rows stack (.table-stack): each figure, the total's included, carries its
    column's name, so the spend is read without scrolling ~700px to the right."""
    page = client_for(alice).get(url(synced, window_query(emulator, tab="keys"))).content.decode()
    table = page[
        page.index('data-testid="breakdown"') : page.index("</table>", page.index('data-testid="breakdown"'))
    ]
    assert 'class="table table-stack sortable-stack" data-testid="breakdown"' in page
    figures = re.findall(r'<td class="num"[^>]*>', table)
    assert figures and all("data-label=" in cell for cell in figures)
    footer = table[table.index("<tfoot>") :]
    assert 'data-label="Spend"' in footer and 'data-label="Requests"' in footer
    for label in ("Workspace", "Creator", "Status", "Limit"):
        assert f'data-label="{label}"' in table
    css = (settings.BASE_DIR / "doow/static/doow/app.css").read_text()
    assert ".table-stack tfoot" in css and ".table-stack.sortable-stack thead" in css


def named(emulator: Emulator, keys: list[str], workspaces: list[str] = ()) -> httpx.MockTransport:
    """The emulator, with its listed keys (and workspaces) named by these names, in the order of their
    index."""
    listed: dict[str, str] = {}

    def answer(request: httpx.Request) -> httpx.Response:
        response = emulator.transport().handle_request(request)
        if not request.url.path.endswith(("/keys", "/workspaces")):
            return response
        payload = json.loads(response.read())
        for record in payload["data"]:
            if "hash" in record:
                record["name"] = keys[emulator.world.index_of_hash(record["hash"]) % len(keys)]
                listed[record["hash"]] = record["name"]
            elif workspaces:
                record["name"] = workspaces[emulator.world.workspace_index(record["id"]) % len(workspaces)]
                listed[record["id"]] = record["name"]
        return httpx.Response(200, json=payload)

    transport = httpx.MockTransport(answer)
    transport.listed = listed
    return transport


def test_names_sort_as_people_read_them_in_the_tables_the_lists_and_people(acme, alice, fiona):
    """ "CI #9" before "CI #55" and "alpha" before "Zeta", where text order puts both the other way
    round; a key renamed in OpenRouter takes its new place at the next sync."""
    emulator = Emulator(EmulatorConfig(seed=11, keys=4, workspaces=2, today=TODAY))
    connection = connect(acme, emulator)
    transport = named(emulator, ["CI #55", "Zeta", "CI #9", "alpha"], ["Team 10", "team 9"])
    assert sync(connection, emulator, transport=transport).status == "succeeded"
    assert sorted(transport.listed.values()) == ["CI #55", "CI #9", "Team 10", "Zeta", "alpha", "team 9"]

    def table(sort: str, tab: str = "keys") -> list[str]:
        query = f"range=90d&tab={tab}&sort={sort}"
        rows = client_for(alice).get(url(connection, query)).context["table"]["rows"]
        return (
            [row["key"].name for row in rows if row["key"]]
            if tab == "keys"
            else [row["workspace_name"] for row in rows]
        )

    assert table("name") == ["alpha", "CI #9", "CI #55", "Zeta"]
    assert table("-name") == ["Zeta", "CI #55", "CI #9", "alpha"]
    assert table("name", "workspaces") == ["team 9", "Team 10"]
    options = client_for(alice).get(url(connection, "range=90d")).context["options"]
    assert [name for _hash, name in options["keys"]] == ["alpha", "CI #9", "CI #55", "Zeta"]
    assert [name for _id, name in options["workspaces"]] == ["team 9", "Team 10"]
    people = client_for(fiona).get(f"/c/acme/integrations/openrouter/{connection.pk}/people/")
    assert [key.name for key, _person in people.context["keys"]] == ["alpha", "CI #9", "CI #55", "Zeta"]

    renamed = named(emulator, ["CI #55", "beta", "CI #9", "alpha"], ["Team 10", "Team 11"])
    assert sync(connection, emulator, transport=renamed).status == "succeeded"
    assert table("name") == ["alpha", "beta", "CI #9", "CI #55"]
    assert table("name", "workspaces") == ["Team 10", "Team 11"]


@pytest.mark.django_db(transaction=True)
def test_keys_and_workspaces_synced_before_their_sort_names_existed_get_them_from_the_migration():
    """The real migration, from the schema before it: keys and workspaces already stored get their
    sort names (deleted keys are never listed again, so no later sync would give them one)."""
    from django.db import connection as db
    from django.db.migrations.executor import MigrationExecutor

    others = [node for node in MigrationExecutor(db).loader.graph.leaf_nodes() if node[0] != "openrouter"]
    before = [("openrouter", "0003_alter_apikeysnapshot_company"), *others]
    after = [("openrouter", "0005_fill_sort_names"), *others]
    MigrationExecutor(db).migrate(before[:1])
    try:
        apps = MigrationExecutor(db).loader.project_state(before).apps
        company = apps.get_model("doow", "Company").objects.create(name="Old", slug="old")
        connection = apps.get_model("integrations", "Connection").objects.create(
            company=company, provider="openrouter", name="Old"
        )
        ids = {"company": company, "connection": connection}
        keys = apps.get_model("openrouter", "ApiKey").objects
        keys.create(**ids, key_hash="aa01", name="CI #9")
        keys.create(**ids, key_hash="bb02", name="")
        apps.get_model("openrouter", "Workspace").objects.create(**ids, workspace_id="w1", name="Team 10")

        MigrationExecutor(db).migrate(after[:1])
        apps = MigrationExecutor(db).loader.project_state(after).apps
        stored = apps.get_model("openrouter", "ApiKey").objects.values_list("key_hash", "sort_name")
        assert dict(stored) == {"aa01": name_sort_key("CI #9"), "bb02": name_sort_key("bb02")}
        workspaces = apps.get_model("openrouter", "Workspace").objects.values_list("sort_name", flat=True)
        assert list(workspaces) == [name_sort_key("Team 10")]
    finally:
        executor = MigrationExecutor(db)
        executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.parametrize("summaries", ["current", "stale"])
def test_the_model_and_provider_choices_are_those_of_the_range(synced, alice, emulator, summaries):
    """Read in one pass (from the by-model sums, or the rows while those are stale): every model
    and provider with usage in the range, once each, by name; none from outside it."""
    if summaries == "stale":
        Connection.objects.filter(pk=synced.pk).update(usage_summaries_stale_from=TODAY - timedelta(days=400))
    start, end = emulator.truth.activity_window()
    end = start + (end - start) // 2  # a range without some of the window's rows
    rows = synced.usage_rows.filter(day__gte=start, day__lte=end)
    query = f"range=custom&from={start}&to={end}"

    options = client_for(alice).get(url(synced, query)).context["options"]

    models = set(rows.values_list("model_permaslug", "model"))
    providers = set(rows.values_list("provider_name", flat=True))
    assert len(models) > 1 and len(providers) > 1
    assert set(synced.usage_rows.values_list("model_permaslug", "model")) != models or (
        set(synced.usage_rows.values_list("provider_name", flat=True)) != providers
    ), "the range should leave some usage out"
    assert options["models"] == sorted(models, key=lambda pair: (pair[1], pair[0]))
    assert options["providers"] == [(name, name) for name in sorted(providers)]
