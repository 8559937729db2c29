"""Writing usage rows: replace a slice of rows atomically, in batches, never one query per row."""

from collections.abc import Collection, Iterable
from datetime import date

from django.db import transaction

from doow import bulk
from usage.models import UsageDaily
from usage.selectors import METRICS

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
    return deleted
