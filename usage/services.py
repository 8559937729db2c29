"""Writing usage rows: replace a slice of rows atomically, in batches, never one query per row."""

from collections.abc import Iterable
from datetime import date

from django.db import transaction

from usage.models import UsageDaily

BATCH_SIZE = 2000


def usage_replace(
    *,
    company_id: int,
    connection_id: int,
    rows: Iterable[tuple[tuple, object]],
    start: date,
    end: date,
    api_key_hashes: Iterable[str],
) -> int:
    """Replace the rows of the given keys ('' = unattributed) for days start..end with `rows`.

    `rows` yields ((day, workspace_id, api_key_hash, model_permaslug, provider_name), values). A
    re-fetched day overwrites what was there, so a sync run twice writes the same rows. Must be
    called inside a transaction (the caller holds the connection lock).
    """
    assert transaction.get_connection().in_atomic_block, "usage_replace must run inside a transaction"
    hashes = list(api_key_hashes)
    for i in range(0, len(hashes), 500):
        UsageDaily.objects.filter(
            connection_id=connection_id, api_key_hash__in=hashes[i : i + 500], day__gte=start, day__lte=end
        ).delete()
    written = 0
    batch: list[UsageDaily] = []
    for (day, workspace_id, api_key_hash, permaslug, provider_name), values in rows:
        if not start <= day <= end:
            continue
        batch.append(
            UsageDaily(
                company_id=company_id,
                connection_id=connection_id,
                day=day,
                workspace_id=workspace_id,
                api_key_hash=api_key_hash,
                model=values.model,
                model_permaslug=permaslug,
                provider_name=provider_name,
                requests=values.requests,
                prompt_tokens=values.prompt_tokens,
                completion_tokens=values.completion_tokens,
                reasoning_tokens=values.reasoning_tokens,
                cached_tokens=values.cached_tokens,
                spend_usd=values.spend_usd,
                byok_spend_usd=values.byok_spend_usd,
            )
        )
        if len(batch) >= BATCH_SIZE:
            UsageDaily.objects.bulk_create(batch)
            written += len(batch)
            batch = []
    if batch:
        UsageDaily.objects.bulk_create(batch)
        written += len(batch)
    return written


def usage_delete_for_connection(*, connection_id: int) -> int:
    deleted, _ = UsageDaily.objects.filter(connection_id=connection_id).delete()
    return deleted
