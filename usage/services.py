"""Writing usage rows: replace a slice of rows atomically, in batches, never one query per row."""

import functools
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

from django.db import connection as db
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from doow import bulk, rows
from integrations.models import SUMMARIES_NEVER_BUILT, Connection
from usage.models import DISMISSED, Alert, AlertState, UsageDaily, UsageDailyByKey, UsageMonthlyByKey
from usage.selectors import METRICS, SUMMARIES, SUMMARY_DIMENSIONS, month_end

# Kept by usage_replace for each slice it writes; the others are rebuilt from the first stale day.
KEPT_BY_REPLACE = (UsageDailyByKey,)
REBUILT_FROM_STALE = tuple(summary for summary in SUMMARIES if summary not in KEPT_BY_REPLACE)
IN_BATCH = 500  # values per IN (...) list: well under every database's parameter limit

NATURAL_KEY = ("connection_id", "day", "workspace_id", "api_key_hash", "model_permaslug", "provider_name")
VALUE_FIELDS = ("model", *METRICS)
ROW_FIELDS = ("company_id", *NATURAL_KEY, *VALUE_FIELDS)
BY_KEY_NATURAL_KEY = ("connection_id", "day", "workspace_id", "api_key_hash")
BY_KEY_FIELDS = (*BY_KEY_NATURAL_KEY, *METRICS)
BY_MONTH_FIELDS = ("connection_id", "month", "workspace_id", "api_key_hash", *METRICS, "days_with_rows")
# The money columns' scale: values are rounded to it (half away from zero, as PostgreSQL rounds a
# numeric on input) before they are stored or summed, so a sum in Python equals the database's.
MONEY_STEP = Decimal(1).scaleb(-UsageDaily._meta.get_field("spend_usd").decimal_places)


@dataclass(frozen=True)
class PreparedUsage:
    """Usage rows of one window (start..end) as written, with their per-key daily and monthly
    sums: built by usage_prepare before the writing transaction, so the connection's row is held
    only while they are written."""

    connection_id: int
    start: date
    end: date
    records: list[tuple]  # ROW_FIELDS
    daily: list[tuple]  # BY_KEY_FIELDS
    monthly: list[tuple]  # BY_MONTH_FIELDS: the daily sums' months, as written for keys with no rows before


def usage_prepare(
    *, company_id: int, connection_id: int, rows: Iterable[tuple[tuple, object]], start: date, end: date
) -> PreparedUsage:
    """`rows` yields ((day, workspace_id, api_key_hash, model_permaslug, provider_name), values);
    rows outside start..end are left out. Money is rounded to the columns' scale first, so the sums
    equal what the database would add up."""
    records = [
        (
            company_id,
            connection_id,
            day,
            workspace_id,
            api_key_hash,
            permaslug,
            provider_name,
            values.model,
            values.requests,
            values.prompt_tokens,
            values.completion_tokens,
            values.reasoning_tokens,
            values.cached_tokens,
            values.spend_usd.quantize(MONEY_STEP, ROUND_HALF_UP),
            values.byok_spend_usd.quantize(MONEY_STEP, ROUND_HALF_UP),
        )
        for (day, workspace_id, api_key_hash, permaslug, provider_name), values in rows
        if start <= day <= end
    ]
    daily = _sums_by_key(records)
    return PreparedUsage(connection_id, start, end, records, daily, _months_of(daily))


def usage_replace(
    usage: PreparedUsage, *, api_key_hashes: Iterable[str], new_key_hashes: Collection[str] = ()
) -> int:
    """Replace the rows of the given keys ('' = unattributed) for days usage.start..usage.end with
    `usage`, their per-key summary (UsageDailyByKey) with the rows' sums, and those keys' monthly
    sums (UsageMonthlyByKey) of the months the days fall in.

    A re-fetched day overwrites what was there, so a sync run twice writes the same rows. Keys in
    `new_key_hashes` have never had rows written (their fetch marker is empty): their slices are
    not deleted first, and many of their rows go in by one plain insert (COPY on PostgreSQL) with no
    conflict to check, which is most of a large initial sync. Should any of them exist after all,
    that insert is undone and they are replaced like the others. Must be called inside a
    transaction (the caller holds the connection lock).
    """
    assert transaction.get_connection().in_atomic_block, "usage_replace must run inside a transaction"
    connection_id, start, end = usage.connection_id, usage.start, usage.end
    usage_summaries_mark_stale(connection_id=connection_id, start=start)
    # The slice's keys as written (a row of a key not named still replaces what it overwrites).
    slice_keys = set(api_key_hashes) | {record[4] for record in usage.records}
    new_keys = slice_keys & set(new_key_hashes)
    inserted: set[str] = set()
    fresh = [record for record in usage.records if record[4] in new_keys]
    if len(fresh) >= bulk.COPY_MIN_ROWS:
        daily = [row for row in usage.daily if row[3] in new_keys]
        if _insert_fresh(fresh, daily, [row for row in usage.monthly if row[3] in new_keys]):
            inserted = new_keys
        else:
            new_keys = set()  # some existed after all: replace them like the others
    # A few new keys' rows go in with the others' upsert, which costs fewer statements than the
    # insert's savepoint; their slices are not deleted first either way.
    _delete_slice(connection_id, sorted(slice_keys - new_keys), start, end)
    # An upsert, not a plain insert: a row left behind by anything unforeseen is overwritten with
    # the fetched value, never added to.
    bulk.upsert(
        UsageDaily,
        ROW_FIELDS,
        [record for record in usage.records if record[4] not in inserted],
        unique_fields=NATURAL_KEY,
        update_fields=("company_id", *VALUE_FIELDS),
    )
    bulk.upsert(
        UsageDailyByKey,
        BY_KEY_FIELDS,
        [row for row in usage.daily if row[3] not in inserted],
        unique_fields=BY_KEY_NATURAL_KEY,
        update_fields=METRICS,
    )
    # The inserted keys' months are their new daily sums alone (they had no rows): summed here. The
    # others' are summed again from what the database now holds for them.
    _summarize_months(connection_id, sorted(slice_keys - inserted), start, end)
    return len(usage.records)


def _sums_by_key(records: list[tuple]) -> list[tuple]:
    """Usage row records summed over models and providers: UsageDailyByKey rows (BY_KEY_FIELDS)."""
    # (connection, day, workspace, key) -> the records' metrics
    groups = _grouped((record[1:5], record[8:]) for record in records)
    return [(*dimensions, *_column_sums(group)) for dimensions, group in groups.items()]


def _months_of(daily: list[tuple]) -> list[tuple]:
    """UsageDailyByKey rows (BY_KEY_FIELDS) summed per calendar month: UsageMonthlyByKey rows
    (BY_MONTH_FIELDS), each with the number of daily rows it sums."""
    groups = _grouped(
        ((connection_id, day.replace(day=1), workspace_id, api_key_hash), metrics)
        for connection_id, day, workspace_id, api_key_hash, *metrics in daily
    )
    return [(*natural_key, *_column_sums(group), len(group)) for natural_key, group in groups.items()]


def _grouped(pairs: Iterable[tuple[tuple, Sequence]]) -> dict[tuple, list[Sequence]]:
    """(dimensions, values) pairs: each dimensions' values, in the order first seen."""
    groups: dict[tuple, list[Sequence]] = {}
    for dimensions, values in pairs:
        group = groups.get(dimensions)
        if group is None:
            groups[dimensions] = [values]
        else:
            group.append(values)
    return groups


def _column_sums(group: list[Sequence]) -> Sequence:
    # Most groups hold one row (a key's day on one model): no sum to make.
    return group[0] if len(group) == 1 else tuple(map(sum, zip(*group, strict=True)))


def _insert_fresh(records: list[tuple], daily: list[tuple], monthly: list[tuple]) -> bool:
    """Insert rows of never-fetched keys, their per-key sums and their monthly sums; all or nothing:
    False (nothing written) if any of them exists already."""
    try:
        with transaction.atomic():
            bulk.insert(UsageDaily, ROW_FIELDS, records)
            bulk.insert(UsageDailyByKey, BY_KEY_FIELDS, daily)
            bulk.insert(UsageMonthlyByKey, BY_MONTH_FIELDS, monthly)
    except bulk.AlreadyExists:
        return False
    return True


def _delete_slice(connection_id: int, keys: list[str], start: date, end: date) -> None:
    """The usage rows and per-key sums of `keys` for days start..end."""
    for model in (UsageDaily, *KEPT_BY_REPLACE):
        for batch in _in_batches(keys):
            rows.delete(
                model, connection_id=connection_id, api_key_hash__in=batch, day__gte=start, day__lte=end
            )


def _in_batches(keys: list[str]) -> list[list[str]]:
    """`keys` in lists of at most IN_BATCH, one per IN (...) list."""
    return [keys[i : i + IN_BATCH] for i in range(0, len(keys), IN_BATCH)]


def usage_delete_for_connection(*, connection_id: int) -> int:
    deleted, _ = UsageDaily.objects.filter(connection_id=connection_id).delete()
    for summary in (*SUMMARIES, UsageMonthlyByKey):
        summary.objects.filter(connection_id=connection_id).delete()
    return deleted


def usage_summaries_mark_stale(*, connection_id: int, start: date) -> None:
    """Usage rows from `start` on are about to change: reports stop reading the summaries until
    usage_summaries_rebuild has caught up. Call it in the transaction that writes the rows."""
    # Only ever moved back: a sync's second write in the same window changes nothing.
    rows.update(
        Connection,
        {"pk": connection_id, "usage_summaries_stale_from__gt_or_null": start},
        usage_summaries_stale_from=start,
    )


def usage_summaries_rebuild(*, connection_id: int) -> None:
    """Recompute the summaries usage_replace does not keep (REBUILT_FROM_STALE) from the usage
    rows, from the first stale day on, and let reports read every summary again. In the transaction
    that wrote the rows (the caller holds the connection lock), so a reader sees rows and summaries
    change together."""
    assert transaction.get_connection().in_atomic_block, "rebuild summaries inside the writing transaction"
    found = rows.get_values(Connection, ("usage_summaries_stale_from",), pk=connection_id)
    if not found:
        raise Connection.DoesNotExist(f"no connection {connection_id}")
    stale_from = found[0]["usage_summaries_stale_from"]
    if stale_from is None:
        return
    for summary in REBUILT_FROM_STALE:
        rows.delete(summary, connection_id=connection_id, day__gte=stale_from)
        _summarize(summary, connection_id=connection_id, start=stale_from)
    rows.update(Connection, {"pk": connection_id}, usage_summaries_stale_from=None)


def usage_summaries_recompute(*, connection_id: int) -> None:
    """Rebuild every usage summary of the connection from all its usage rows, as after rows were
    written without usage_replace (by hand, a restore, a bulk load). Locks the connection row, so it waits
    for a running sync's write and moves the data version: cached reports are recomputed."""
    with transaction.atomic():
        Connection.objects.filter(pk=connection_id).update(data_version=F("data_version") + 1)
        for summary in SUMMARIES:
            summary.objects.filter(connection_id=connection_id).delete()
            _summarize(summary, connection_id=connection_id, start=SUMMARIES_NEVER_BUILT)
        _summarize_months(connection_id, None, SUMMARIES_NEVER_BUILT, date.max)
        Connection.objects.filter(pk=connection_id).update(usage_summaries_stale_from=None)


def _summarize(summary, *, connection_id: int, start: date) -> None:
    """INSERT … SELECT … GROUP BY: the sums never leave the database. Identifiers come from model
    metadata, quoted; values are parameters."""
    quote = db.ops.quote_name
    dimensions = [quote(UsageDaily._meta.get_field(name).column) for name in SUMMARY_DIMENSIONS[summary]]
    metrics = [quote(name) for name in METRICS]
    columns = ", ".join([quote("connection_id"), *dimensions, *metrics])
    sums = ", ".join(f"SUM({metric})" for metric in metrics)
    grouped = ", ".join([quote("connection_id"), *dimensions])
    with db.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote(summary._meta.db_table)} ({columns}) "  # noqa: S608
            f"SELECT {grouped}, {sums} FROM {quote(UsageDaily._meta.db_table)} "
            f"WHERE {quote('connection_id')} = %s AND {quote('day')} >= %s GROUP BY {grouped}",
            [connection_id, start],
        )


def _summarize_months(connection_id: int, keys: list[str] | None, start: date, end: date) -> None:
    """Recompute the monthly sums (UsageMonthlyByKey) of `keys` (None: every key) for the months
    days start..end fall in, from their UsageDailyByKey rows: a month a slice touched is summed again
    whole, so days outside the slice keep counting. INSERT … SELECT: the sums never leave the database."""
    months = [
        db.ops.adapt_datefield_value(start.replace(day=1)),
        db.ops.adapt_datefield_value(month_end(end)),
    ]
    batches = [None] if keys is None else _in_batches(keys)
    with db.cursor() as cursor:
        for batch in batches:
            delete, insert, month_params = _month_sums_sql(None if batch is None else len(batch))
            params = [connection_id, *months, *(batch or ())]
            cursor.execute(delete, params)
            cursor.execute(insert, [*month_params, *params])


@functools.cache
def _month_sums_sql(key_count: int | None) -> tuple[str, str, tuple]:
    """The DELETE and the INSERT … SELECT of _summarize_months for a batch of `key_count` keys (None:
    every key). Both take (connection, first month, last month's end, *keys); the INSERT takes the
    month truncation's own parameters (the third value returned) before them. Worked out once per
    process: built and compiled by the ORM on every write, they were about a tenth of a small sync's CPU."""
    quote = db.ops.quote_name
    keys = "" if key_count is None else f" AND api_key_hash IN ({', '.join(['%s'] * key_count)})"
    scope = "connection_id = %s AND {column} >= %s AND {column} <= %s" + keys
    metrics = ", ".join(quote(name) for name in METRICS)
    sums = ", ".join(f"SUM({quote(name)})" for name in METRICS)
    month, month_params = db.ops.date_trunc_sql("month", quote("day"), ())
    monthly, daily = quote(UsageMonthlyByKey._meta.db_table), quote(UsageDailyByKey._meta.db_table)
    delete = f"DELETE FROM {monthly} WHERE " + scope.format(column=quote("month"))  # noqa: S608
    insert = (
        f"INSERT INTO {monthly} (connection_id, month, workspace_id, api_key_hash, {metrics}, days_with_rows) "  # noqa: S608
        f"SELECT connection_id, {month}, workspace_id, api_key_hash, {sums}, COUNT(*) FROM {daily} "
        f"WHERE {scope.format(column=quote('day'))} GROUP BY 1, 2, 3, 4"
    )
    return delete, insert, month_params


def alert_acknowledge(*, alert: Alert, user) -> bool:
    """Someone is on it: an open alert becomes acknowledged. False if it was not open."""
    return bool(
        Alert.objects.filter(pk=alert.pk, state=AlertState.OPEN).update(
            state=AlertState.ACKNOWLEDGED, acknowledged_by=user, acknowledged_at=timezone.now()
        )
    )


def alert_resolve_by_hand(*, alert: Alert, user) -> bool:
    """Resolved by a person, and dismissed for its period: evaluation does not reopen it while its
    condition still holds, only once the condition has cleared and holds again (openrouter/alerts.py).
    False if it was resolved already."""
    detail = {**alert.detail, "resolved_reason": f"Resolved by {user.email}.", DISMISSED: True}
    return bool(
        Alert.objects.filter(pk=alert.pk)
        .exclude(state=AlertState.RESOLVED)
        .update(state=AlertState.RESOLVED, resolved_at=timezone.now(), detail=detail)
    )
