"""The usage summary (rows summed over keys) answers exactly what the usage rows answer, is rebuilt
by the sync that changed the rows, and is not read while stale."""

from datetime import timedelta
from io import StringIO
from itertools import combinations

import pytest
from django.db import connection as db
from django.test.utils import CaptureQueriesContext

from openrouter.emulator import Fault
from openrouter.report import DetailQuery, detail_report, table_columns
from tests.support import TODAY, connect, sync, usage_rows_edited
from usage.models import UsageDaily, UsageDailyByModel
from usage.selectors import SUMMARIES, summaries_current, usage_by_key, usage_grouped, usage_totals

pytestmark = pytest.mark.django_db
EVERYTHING = {"start": TODAY - timedelta(days=400), "end": TODAY}


def answers(connection, *, summarized: bool) -> dict:
    """Every grouping and total a summary can serve, as the report asks for them."""
    ids = {"connection_ids": [connection.pk], "summarized": summarized, **EVERYTHING}
    results = {}
    for covered in SUMMARIES.values():
        for size in range(len(covered) + 1):
            for group_by in combinations(covered, size):
                if group_by:
                    results[group_by] = list(usage_grouped(group_by=list(group_by), **ids))
                else:
                    results[group_by] = usage_totals(**ids)
    # The key table's sums, which read months from the monthly summary and the days at either end
    # from the usage rows: over every day, and over ranges that start or end partway through a month.
    for days_back in (400, 75, 45, 20):
        start, end = TODAY - timedelta(days=days_back), TODAY - timedelta(days=days_back // 5)
        by_key = usage_by_key(connection_id=connection.pk, start=start, end=end, summarized=summarized)
        results["by key", start, end] = sorted(by_key, key=lambda row: row["api_key_hash"])
    first = UsageDaily.objects.filter(connection=connection).exclude(api_key_hash="").first()
    for name, value in (("key", first.api_key_hash), ("key", ""), ("model", first.model_permaslug)):
        results[name, value] = usage_totals(filters={name: value}, **ids)
        results[name, value, "by day"] = list(usage_grouped(group_by=["day"], filters={name: value}, **ids))
    return results


def assert_summaries_match_rows(connection) -> None:
    connection.refresh_from_db()
    assert summaries_current(connection)
    assert answers(connection, summarized=True) == answers(connection, summarized=False)


def test_a_sync_leaves_a_summary_that_answers_exactly_what_the_rows_answer(acme, emulator):
    connection = connect(acme, emulator)
    assert not summaries_current(connection)  # never built: reports read the rows
    assert sync(connection, emulator).status == "succeeded"

    assert_summaries_match_rows(connection)
    # Far fewer rows: what makes the page's totals, chart and choices independent of the number of keys.
    assert UsageDailyByModel.objects.filter(connection=connection).count() < UsageDaily.objects.count()


def test_later_syncs_rebuild_the_days_they_rewrote_and_keep_the_older_ones(acme, emulator):
    connection = connect(acme, emulator)
    sync(connection, emulator)
    for days in (1, 3, 40):  # the last moves the window past every day first synced
        emulator.set_today(TODAY + timedelta(days=days))
        assert sync(connection, emulator).status == "succeeded"
        assert_summaries_match_rows(connection)


def test_summaries_are_not_read_after_a_sync_that_failed_part_way_and_are_rebuilt_by_the_next(
    acme, emulator, settings
):
    connection = connect(acme, emulator)
    sync(connection, emulator)
    settings.OPENROUTER_WRITE_BATCH_KEYS = 5
    emulator.set_today(TODAY + timedelta(days=2))
    victim = list(emulator.truth.listed_keys())[-1]["hash"]
    emulator.faults.add(Fault(path="/activity", query={"api_key_hash": victim}, status=500))

    result = sync(connection, emulator)

    assert result.status == "partial"  # some batches were written, the rows changed
    connection.refresh_from_db()
    assert not summaries_current(connection)
    query = DetailQuery(start=TODAY - timedelta(days=40), end=emulator.today)
    in_range = {"connection_ids": [connection.pk], "start": query.start, "end": query.end}
    rows = usage_totals(**in_range)["spend_usd"]
    # The summaries still describe the first sync's rows: read now, they would be wrong.
    assert usage_totals(summarized=True, **in_range)["spend_usd"] != rows
    assert detail_report(connection=connection, query=query)["totals"]["spend_usd"] == rows

    emulator.faults.clear()
    assert sync(connection, emulator).status == "succeeded"
    assert_summaries_match_rows(connection)


def test_the_detail_page_shows_the_same_figures_from_summaries_as_from_rows(acme, emulator):
    connection = connect(acme, emulator)
    sync(connection, emulator)
    connection.refresh_from_db()
    views = [DetailQuery(start=TODAY - timedelta(days=30), end=TODAY - timedelta(days=1), tab=tab) for tab in
             ("keys", "models", "workspaces", "providers", "days")]  # fmt: skip
    # The key table over a range with a whole month in it (its sums come partly from the monthly
    # summary), sorted by each figure both ways.
    views += [
        DetailQuery(start=TODAY - timedelta(days=90), end=TODAY - timedelta(days=1), tab="keys", sort=sort,
                    descending=descending)
        for sort in [column.name for column in table_columns("keys") if column.sortable]
        for descending in (True, False)
    ]  # fmt: skip

    def figures(query):
        report = detail_report(connection=connection, query=query)
        rows = [
            {k: v for k, v in row.items() if k not in ("key", "catalog", "creator")}
            for row in report["table"]["rows"]
        ]
        return report["totals"], report["chart"], report["options"]["models"], rows  # fmt: skip

    with CaptureQueriesContext(db) as captured:
        from_summaries = [figures(query) for query in views]
    read = " ".join(q["sql"] for q in captured.captured_queries)
    assert "usage_usagedailybymodel" in read
    assert "usage_usagemonthlybykey" in read
    connection.usage_summaries_stale_from = TODAY  # as a sync writing rows leaves it
    connection.data_version += 1  # and a new data version: no cached figure applies
    from_rows = [figures(query) for query in views]

    assert from_summaries == from_rows


def test_rows_edited_outside_a_sync_are_summarized_once_marked(acme, emulator):
    from decimal import Decimal

    connection = connect(acme, emulator)
    sync(connection, emulator)
    row = UsageDaily.objects.filter(connection=connection).first()
    UsageDaily.objects.filter(pk=row.pk).update(spend_usd=row.spend_usd + Decimal("1.25"))

    usage_rows_edited(connection)

    assert_summaries_match_rows(connection)


def test_deleting_a_connections_usage_deletes_its_summary(acme, emulator):
    from usage.services import usage_delete_for_connection

    connection = connect(acme, emulator)
    sync(connection, emulator)
    usage_delete_for_connection(connection_id=connection.pk)

    assert not UsageDailyByModel.objects.filter(connection=connection).exists()


def test_the_rebuild_command_summarizes_rows_changed_by_other_means(acme, emulator):
    from decimal import Decimal

    from django.core.management import call_command

    connection = connect(acme, emulator)
    sync(connection, emulator)
    version = connection.data_version
    row = UsageDaily.objects.filter(connection=connection).first()
    UsageDaily.objects.filter(pk=row.pk).update(spend_usd=row.spend_usd + Decimal("2.50"))

    call_command("usage_summaries_rebuild", "--connection", str(connection.pk), stdout=StringIO())

    assert_summaries_match_rows(connection)
    assert connection.data_version > version  # cached reports of the old figures no longer apply


@pytest.mark.parametrize("args", [[], ["--connection", "999999"], ["--all", "--connection", "1"]])
def test_the_rebuild_command_names_what_is_wrong(args):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError):
        call_command("usage_summaries_rebuild", *args, stdout=StringIO())


def test_grouping_one_connection_by_every_dimension_reads_its_rows_with_the_same_answer(acme, emulator):
    """A usage row is unique per connection by every dimension, so that grouping skips the aggregate
    (and its sort); its answer is what summing gives."""
    from django.db.models import Sum

    from usage.selectors import DIMENSIONS, METRICS, usage_rows

    connection = connect(acme, emulator)
    sync(connection, emulator)
    query = {"connection_ids": [connection.pk], **EVERYTHING}
    fields = [field for dimension in DIMENSIONS for field in DIMENSIONS[dimension]]
    summed = usage_rows(**query).values(*fields).annotate(**{name: Sum(name) for name in METRICS})

    with CaptureQueriesContext(db) as queries:
        read = list(usage_grouped(group_by=list(DIMENSIONS), **query))

    assert read == list(summed.order_by(*fields))
    assert len(read) == UsageDaily.objects.filter(connection=connection).count()
    assert "GROUP BY" not in queries[0]["sql"] and "SUM(" not in queries[0]["sql"]


def test_grouping_several_connections_by_every_dimension_still_sums_them(acme, globex, emulator):
    """Two connections can hold the same day, workspace, key, model and provider: those rows merge."""
    first = connect(acme, emulator)
    sync(first, emulator)
    second = connect(globex, emulator)
    copies = list(UsageDaily.objects.filter(connection=first))
    for row in copies:
        row.pk, row.company, row.connection = None, globex, second
    UsageDaily.objects.bulk_create(copies)
    every = ["day", "workspace", "key", "model", "provider"]

    both = list(usage_grouped(group_by=every, connection_ids=[first.pk, second.pk], **EVERYTHING))
    one = list(usage_grouped(group_by=every, connection_ids=[first.pk], **EVERYTHING))

    assert len(both) == len(one) == len(copies)
    assert [row["requests"] for row in both] == [row["requests"] * 2 for row in one]
    assert [row["spend_usd"] for row in both] == [row["spend_usd"] * 2 for row in one]


def test_the_key_table_sorted_by_a_figure_is_in_the_order_the_database_gives(acme, emulator):
    """The key table sorts its sums in Python: the same order as ORDER BY figure, key hash (ties,
    such as keys that spent nothing, by hash whichever the direction)."""
    from django.db.models import F

    from openrouter.report import SORT_FIELDS, table_metrics

    connection = connect(acme, emulator)
    sync(connection, emulator)
    # Every row the same figures: keys with as many rows tie.
    UsageDaily.objects.filter(connection=connection).update(spend_usd=1, requests=1, prompt_tokens=1)
    usage_rows_edited(connection)
    connection.refresh_from_db()
    start, end = TODAY - timedelta(days=90), TODAY - timedelta(days=1)
    figures = [column.name for column in table_columns("keys") if column.sortable]
    for sort in [name for name in figures if name not in ("name", "last_used")]:
        for descending in (True, False):
            query = DetailQuery(start=start, end=end, tab="keys", sort=sort, descending=descending)
            shown = [
                row["api_key_hash"]
                for row in detail_report(connection=connection, query=query)["table"]["rows"]
            ]
            ordered = (
                usage_grouped(group_by=["key"], connection_ids=[connection.pk], start=start, end=end,
                              metrics=table_metrics("keys"))
                .annotate(total_tokens=F("prompt_tokens") + F("completion_tokens"))
                .order_by(f"{'-' if descending else ''}{SORT_FIELDS[sort]}", "api_key_hash")
            )  # fmt: skip
            assert shown == [row["api_key_hash"] for row in ordered][: len(shown)], (sort, descending)
            assert len(shown) > 1


def test_the_key_table_sorted_by_name_or_last_use_is_in_the_order_the_database_gives(acme, emulator):
    """Sorted by name or last use, the key table ranks the keys as the database orders them: ORDER BY
    the key's field NULLS LAST, key hash, for the usage rows' keys. Ties (two keys of one name) go
    by hash, and keys with no value (the unattributed row, a key whose record is gone, a key never
    used) come last, whichever the direction."""
    from django.db.models import F, OuterRef, Subquery

    from openrouter.models import ApiKey
    from openrouter.report import SORT_FIELDS, table_metrics

    connection = connect(acme, emulator)
    sync(connection, emulator)
    used = sorted(
        set(UsageDaily.objects.filter(connection=connection).exclude(api_key_hash="").values_list(
            "api_key_hash", flat=True))
    )  # fmt: skip
    assert len(used) >= 5
    keys = ApiKey.objects.filter(connection=connection)
    keys.filter(key_hash__in=used[:3]).update(sort_name="same name")  # a three-way tie
    keys.filter(key_hash=used[3]).update(last_used_at=None)  # never used, as far as the listing says
    keys.filter(key_hash=used[4]).delete()  # its rows stay; nothing names it
    assert UsageDaily.objects.filter(connection=connection, api_key_hash="").exists()
    start, end = TODAY - timedelta(days=90), TODAY - timedelta(days=1)
    for sort in ("name", "last_used"):
        field = SORT_FIELDS[sort]
        by_key = ApiKey.objects.filter(connection=connection, key_hash=OuterRef("api_key_hash"))
        for descending in (True, False):
            query = DetailQuery(start=start, end=end, tab="keys", sort=sort, descending=descending)
            table = detail_report(connection=connection, query=query)["table"]
            pages = [table["rows"]]
            for number in table["page"].paginator.page_range[1:]:
                query.page = str(number)
                pages.append(detail_report(connection=connection, query=query)["table"]["rows"])
            shown = [row["api_key_hash"] for page in pages for row in page]
            order = F(field).desc(nulls_last=True) if descending else F(field).asc(nulls_last=True)
            ordered = (
                usage_grouped(group_by=["key"], connection_ids=[connection.pk], start=start, end=end,
                              metrics=table_metrics("keys"))
                .annotate(**{field: Subquery(by_key.values(field)[:1])})
                .order_by(order, "api_key_hash")
            )  # fmt: skip
            assert shown == [row["api_key_hash"] for row in ordered], (sort, descending)
            nothing_to_sort_by = {"", used[4]} | ({used[3]} if sort == "last_used" else set())
            assert shown[-len(nothing_to_sort_by) :] == sorted(nothing_to_sort_by)
            if sort == "name":  # the tie, by hash
                assert shown.index(used[1]) == shown.index(used[0]) + 1 == shown.index(used[2]) - 1
