"""Property: for any range and any mix of filters (the unattributed usage, values with no usage, a
range with no completed day), every figure of the detail page adds up to the usage rows it stands
for: the totals, each breakdown across all its pages, the chart, and the CSV export of the view, to
the last digit, whether the page reads the summaries or the rows. (On SQLite, the demo's database,
which sums numbers as doubles, to a millionth of a cent.)"""

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection as db
from django.http import QueryDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openrouter import exports, report
from openrouter.report import DetailQuery, detail_report
from tests.support import TODAY, connect, noon, stored_total, sync
from usage.models import UsageDaily
from usage.selectors import FILTERS

pytestmark = pytest.mark.django_db

PRESET_NAMES = [name for name in report.PRESETS if name != "custom"]
SQLITE_ERROR = Decimal("0.00000001")


def same(amount, expected) -> bool:
    if db.vendor == "postgresql":
        return amount == expected
    return abs(Decimal(amount) - Decimal(expected)) <= SQLITE_ERROR


@pytest.fixture
def synced(acme, emulator, monkeypatch):
    monkeypatch.setattr(report.timezone, "now", lambda: noon(TODAY))
    monkeypatch.setattr(report, "PAGE_SIZE", 7)  # several pages for most breakdowns
    connection = connect(acme, emulator)
    sync(connection, emulator)
    connection.refresh_from_db()
    return connection


def values_of(connection) -> dict:
    """Each filter's stored values, plus one that matches nothing."""
    rows = UsageDaily.objects.filter(connection=connection)
    return {
        name: [*rows.values_list(field, flat=True).distinct().order_by(field)[:6], "none-such"]
        for name, field in FILTERS.items()
    }


@st.composite
def views(draw, filter_values):
    params = {}
    if draw(st.booleans()):
        params["range"] = draw(st.sampled_from(PRESET_NAMES))
    else:
        first = TODAY - timedelta(days=draw(st.integers(min_value=0, max_value=45)))
        params |= {"range": "custom", "from": first, "to": first + timedelta(days=draw(st.integers(0, 40)))}
    for name, values in filter_values.items():
        if draw(st.integers(min_value=0, max_value=3)) == 0:
            value = draw(st.sampled_from(values))
            params[name] = "-" if name == "key" and value == "" else value
    params["tab"] = draw(st.sampled_from(list(report.TABS)))
    return params


@given(data=st.data())
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_figure_of_any_view_adds_up_to_its_usage_rows(synced, data):
    params = data.draw(views(values_of(synced)))
    query_string = QueryDict(mutable=True)
    query_string.update({name: str(value) for name, value in params.items()})
    query = DetailQuery.from_params(query_string, today=TODAY)
    assert not query.problem
    in_view = {"day__gte": query.start, "day__lte": query.end}
    in_view |= {FILTERS[name]: value for name, value in query.filters.items()}
    spend, requests = stored_total(synced, **in_view), stored_total(synced, "requests", **in_view)

    synced.refresh_from_db()
    for summarized in (True, False):
        if not summarized:
            # As a sync that is writing leaves them: the report reads the rows, under a new data
            # version, so nothing cached from the summaries answers.
            synced.usage_summaries_stale_from = TODAY
            synced.data_version += 1
        context = detail_report(connection=synced, query=query)
        totals = context["totals"]
        assert same(totals["spend_usd"], spend) and totals["requests"] == requests

        table_rows = []
        for number in range(1, context["table"]["page"].paginator.num_pages + 1):
            query.page = str(number)
            table_rows += detail_report(connection=synced, query=query)["table"]["rows"]
        query.page = "1"
        assert same(sum((Decimal(row["spend_usd"]) for row in table_rows), Decimal(0)), spend)
        assert sum(row["requests"] for row in table_rows) == requests

        chart = context["chart"]
        charted = (
            sum((Decimal(v) for series in chart["series"] for v in series["data"]), Decimal(0))
            if chart
            else 0
        )
        assert same(charted, spend)

    export = "".join(
        exports.csv_chunks(
            **exports.export_selection(
                connection_id=synced.pk, query=query, group_by=exports.parse_group_by(None)
            )
        )
    )
    exported = list(csv.DictReader(io.StringIO(export)))
    assert same(sum((Decimal(row["spend_usd"]) for row in exported), Decimal(0)), spend)
    assert sum(int(row["requests"]) for row in exported) == requests
