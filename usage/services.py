"""Writing usage rows: replace a slice of rows atomically, in batches, never one query per row."""

from collections.abc import Collection, Iterable
from datetime import date

from django.db import connection as db
from django.db import transaction
from django.db.models import F, Q

from doow import bulk
from integrations.models import SUMMARIES_NEVER_BUILT, Connection
from usage.models import UsageDaily
from usage.selectors import METRICS, SUMMARIES, SUMMARY_DIMENSIONS

NATURAL_KEY = ("connection_id", "day", "workspace_id", "api_key_hash", "model_permaslug", "provider_name")
VALUE_FIELDS = ("model", *METRICS)


def usage_replace(
    *,
    company_id: int,
    connection_id: int,
    rows: Iterable[tuple[tuple, object]],
    start: date,
    end: date,
    api_key_hashes: Iterable[str],
    new_key_hashes: Collection[str] = (),
) -> int:
    """Replace the rows of the given keys ('' = unattributed) for days start..end with `rows`.

    `rows` yields ((day, workspace_id, api_key_hash, model_permaslug, provider_name), values). A
    re-fetched day overwrites what was there, so a sync run twice writes the same rows. Keys in
    `new_key_hashes` have never had rows written (their fetch marker is empty): deleting their slice
    would only cost an index scan per batch, which made a large initial sync quadratic. Must be
    called inside a transaction (the caller holds the connection lock).
    """
    assert transaction.get_connection().in_atomic_block, "usage_replace must run inside a transaction"
    usage_summaries_mark_stale(connection_id=connection_id, start=start)
    stale = [key_hash for key_hash in api_key_hashes if key_hash not in new_key_hashes]
    for i in range(0, len(stale), 500):
        UsageDaily.objects.filter(
            connection_id=connection_id, api_key_hash__in=stale[i : i + 500], day__gte=start, day__lte=end
        ).delete()
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
            values.spend_usd,
            values.byok_spend_usd,
        )
        for (day, workspace_id, api_key_hash, permaslug, provider_name), values in rows
        if start <= day <= end
    ]
    # An upsert, not a plain insert: a row left behind by anything unforeseen is overwritten with
    # the fetched value, never added to.
    return bulk.upsert(
        UsageDaily,
        ("company_id", *NATURAL_KEY, *VALUE_FIELDS),
        records,
        unique_fields=NATURAL_KEY,
        update_fields=("company_id", *VALUE_FIELDS),
    )


def usage_delete_for_connection(*, connection_id: int) -> int:
    deleted, _ = UsageDaily.objects.filter(connection_id=connection_id).delete()
    for summary in SUMMARIES:
        summary.objects.filter(connection_id=connection_id).delete()
    return deleted


def usage_summaries_mark_stale(*, connection_id: int, start: date) -> None:
    """Usage rows from `start` on are about to change: reports stop reading the summaries until
    usage_summaries_rebuild has caught up. Call it in the transaction that writes the rows."""
    # Only ever moved back: a sync's second write in the same window changes nothing.
    Connection.objects.filter(
        Q(usage_summaries_stale_from__isnull=True) | Q(usage_summaries_stale_from__gt=start), pk=connection_id
    ).update(usage_summaries_stale_from=start)


def usage_summaries_rebuild(*, connection_id: int) -> None:
    """Recompute the connection's usage summary from its usage rows, from the first stale day on,
    and let reports read it again. In the transaction that wrote the rows (the caller holds the
    connection lock), so a reader sees rows and summary change together."""
    assert transaction.get_connection().in_atomic_block, "rebuild summaries inside the writing transaction"
    stale_from = (
        Connection.objects.filter(pk=connection_id).values_list("usage_summaries_stale_from", flat=True).get()
    )
    if stale_from is None:
        return
    for summary in SUMMARIES:
        summary.objects.filter(connection_id=connection_id, day__gte=stale_from).delete()
        _summarize(summary, connection_id=connection_id, start=stale_from)
    Connection.objects.filter(pk=connection_id).update(usage_summaries_stale_from=None)


def usage_summaries_recompute(*, connection_id: int) -> None:
    """Rebuild the connection's usage summary from all its usage rows, as after rows were written
    without usage_replace (by hand, a restore, a bulk load). Locks the connection row, so it waits
    for a running sync's write and moves the data version: cached reports are recomputed."""
    with transaction.atomic():
        Connection.objects.filter(pk=connection_id).update(data_version=F("data_version") + 1)
        usage_summaries_mark_stale(connection_id=connection_id, start=SUMMARIES_NEVER_BUILT)
        usage_summaries_rebuild(connection_id=connection_id)


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
