"""The usage export (management command and the detail page's CSV/JSON download)."""

import csv
import io
import json
from collections.abc import Iterator
from datetime import date, timedelta

from django.utils import timezone

from openrouter.models import ApiKey, Workspace
from usage.models import UNATTRIBUTED_LABEL
from usage.selectors import DIMENSIONS, usage_grouped

COLUMNS = [
    ("date", "day"),
    ("workspace_id", "workspace"),
    ("workspace_name", "workspace"),
    ("api_key_hash", "key"),
    ("api_key_name", "key"),
    ("model", "model"),
    ("model_permaslug", "model"),
    ("provider_name", "provider"),
    ("requests", None),
    ("prompt_tokens", None),
    ("completion_tokens", None),
    ("reasoning_tokens", None),
    ("cached_tokens", None),
    ("spend_usd", None),
    ("byok_spend_usd", None),
]
ALL_DIMENSIONS = list(DIMENSIONS)


def default_range(today: date | None = None) -> tuple[date, date]:
    """The last 30 completed UTC days and today."""
    today = today or timezone.now().date()
    return today - timedelta(days=30), today


def parse_group_by(value: str | None) -> list[str]:
    if not value:
        return ALL_DIMENSIONS
    names = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [name for name in names if name not in DIMENSIONS]
    if unknown:
        raise ValueError(f"Unknown group-by dimension(s): {', '.join(unknown)}. Use {', '.join(DIMENSIONS)}.")
    return [name for name in ALL_DIMENSIONS if name in names]


def export_columns(group_by: list[str]) -> list[str]:
    return [name for name, dimension in COLUMNS if dimension is None or dimension in group_by]


def export_records(
    *, connection_ids: list[int], start: date, end: date, group_by: list[str], filters=None
) -> Iterator[dict]:
    workspace_names = dict(
        Workspace.objects.filter(connection_id__in=connection_ids).values_list("workspace_id", "name")
    )
    key_names = dict(ApiKey.objects.filter(connection_id__in=connection_ids).values_list("key_hash", "name"))
    columns = export_columns(group_by)
    rows = usage_grouped(
        connection_ids=connection_ids, start=start, end=end, filters=filters, group_by=group_by
    )
    for row in rows.iterator(chunk_size=2000):
        record = {
            "date": row.get("day").isoformat() if row.get("day") else "",
            "workspace_id": row.get("workspace_id", ""),
            "workspace_name": workspace_names.get(row.get("workspace_id", ""), ""),
            "api_key_hash": row.get("api_key_hash", ""),
            "api_key_name": key_names.get(row["api_key_hash"], "")
            if row.get("api_key_hash")
            else UNATTRIBUTED_LABEL,
            "model": row.get("model", ""),
            "model_permaslug": row.get("model_permaslug", ""),
            "provider_name": row.get("provider_name", ""),
            "requests": row["requests"],
            "prompt_tokens": row["prompt_tokens"],
            "completion_tokens": row["completion_tokens"],
            "reasoning_tokens": row["reasoning_tokens"],
            "cached_tokens": row["cached_tokens"],
            "spend_usd": _money(row["spend_usd"]),
            "byok_spend_usd": _money(row["byok_spend_usd"]),
        }
        yield {name: record[name] for name in columns}


def _money(value) -> str:
    """Exact decimal text, no float rounding, no exponent, trailing zeros trimmed to cents at least."""
    from decimal import Decimal

    amount = Decimal(value or 0)
    text = format(amount.normalize(), "f")
    whole, _, frac = text.partition(".")
    return f"{whole}.{(frac + '00')[: max(2, len(frac))]}"


def write_csv(records: Iterator[dict], columns: list[str]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    yield buffer.getvalue()
    for record in records:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(record)
        yield buffer.getvalue()


def write_json(records: Iterator[dict]) -> Iterator[str]:
    yield "["
    for index, record in enumerate(records):
        yield ("," if index else "") + "\n" + json.dumps(record)
    yield "\n]\n"
