"""The usage export (management command and the detail page's CSV/JSON download)."""

import csv
import io
import json
from collections.abc import Iterator
from contextlib import nullcontext
from datetime import date, timedelta

from django.utils import timezone

from openrouter.models import ApiKey, Workspace
from usage.models import UNATTRIBUTED_LABEL
from usage.selectors import DIMENSIONS, FILTERS, METRICS, groups_are_rows, usage_grouped

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
# Rows (Python writer) or bytes (PostgreSQL's COPY) per chunk of a streamed CSV.
CHUNK_ROWS = 1000
CHUNK_BYTES = 256 * 1024


def default_range(today: date | None = None) -> tuple[date, date]:
    """The last 30 completed UTC days and today."""
    today = today or timezone.now().date()
    return today - timedelta(days=30), today


def parse_group_by(value: str | None) -> list[str]:
    names = [part.strip() for part in (value or "").split(",") if part.strip()]
    if not names:
        return ALL_DIMENSIONS
    unknown = [name for name in names if name not in DIMENSIONS]
    if unknown:
        raise ValueError(f"Unknown group-by dimension(s): {', '.join(unknown)}. Use {', '.join(DIMENSIONS)}.")
    return [name for name in ALL_DIMENSIONS if name in names]


def export_columns(group_by: list[str]) -> list[str]:
    return [name for name, dimension in COLUMNS if dimension is None or dimension in group_by]


def export_records(
    *, connection_ids: list[int], start: date, end: date, group_by: list[str], filters=None
) -> Iterator[dict]:
    # Oldest first, so that each value keeps its newest name across the connections (as _names_join).
    workspace_names = dict(
        Workspace.objects.filter(connection_id__in=connection_ids)
        .order_by("id")
        .values_list("workspace_id", "name")
    )
    key_names = dict(
        ApiKey.objects.filter(connection_id__in=connection_ids).order_by("id").values_list("key_hash", "name")
    )
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


def export_selection(*, connection_id: int, query, group_by: list[str]) -> dict:
    """What an export of one connection reads, from the detail page's query (`DetailQuery`): the
    keyword arguments of `csv_chunks` and `export_records`."""
    return {
        "connection_ids": [connection_id],
        "start": query.start,
        "end": query.end,
        "group_by": group_by,
        "filters": query.filters,
    }


def csv_chunks(
    *, connection_ids: list[int], start: date, end: date, group_by: list[str], filters=None
) -> Iterator[str]:
    """The export as CSV text in chunks of many rows. On PostgreSQL the database writes the CSV
    itself (COPY ... TO STDOUT): formatting a million rows in Python took several times longer
    than the query. Elsewhere, or to check the two agree, the Python writer does it."""
    from django.db import connection

    if connection.vendor == "postgresql":
        return _copy_csv(connection_ids, start, end, group_by, filters or {})
    records = export_records(
        connection_ids=connection_ids, start=start, end=end, group_by=group_by, filters=filters
    )
    return write_csv(records, export_columns(group_by))


# Text a spreadsheet runs as a formula when it starts a cell (OWASP's CSV injection list): such
# cells get a leading apostrophe, which spreadsheets show as text. Only text columns are escaped;
# numbers, negative ones too, stay numbers. The JSON export is data and is not escaped.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
TEXT_COLUMNS = frozenset(name for name, dimension in COLUMNS if dimension not in (None, "day"))


def write_csv(records: Iterator[dict], columns: list[str]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    text_columns = [name for name in columns if name in TEXT_COLUMNS]
    batch = []
    for record in records:
        has_carriage_return = False
        for name in text_columns:
            value = record[name]
            if value.startswith(FORMULA_STARTS):
                record[name] = value = "'" + value
            has_carriage_return = has_carriage_return or "\r" in value
        if has_carriage_return:
            writer.writerows(batch)
            batch = []
            buffer.write(_row_quoting_carriage_returns(record, columns))
            continue
        batch.append(record)
        if len(batch) == CHUNK_ROWS:
            writer.writerows(batch)
            batch = []
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    writer.writerows(batch)
    yield buffer.getvalue()


def _row_quoting_carriage_returns(record: dict, columns: list[str]) -> str:
    """One CSV line whose fields holding a carriage return are quoted, as PostgreSQL's COPY and
    RFC 4180 quote them: the csv module quotes only the characters of its line terminator (\\n here),
    and a bare \\r left unquoted splits the row in a spreadsheet."""
    line = io.StringIO()
    csv.DictWriter(line, fieldnames=columns, lineterminator="\r\n").writerow(record)
    return line.getvalue()[:-2] + "\n"


# SQL for each column of the CSV, over the grouped rows `g` and the name tables `w` and `k`. Empty
# text becomes NULL, which COPY writes as an empty unquoted field, as Python's csv module does.
_MONEY_SQL = (
    "CASE WHEN scale(trim_scale(g.{0})) < 2 THEN round(g.{0}, 2)::text ELSE trim_scale(g.{0})::text END"
)
# A text column's cell, escaped as write_csv escapes it (see FORMULA_STARTS). One ascii() per cell
# finds both a formula's first character and empty text (0): left() and NULLIF cost a 10k-row export
# a tenth of its time.
_TEXT_SQL = (
    "CASE ascii({0}) WHEN 0 THEN NULL "
    + " ".join(f"WHEN {ord(start)} THEN '''' || {{0}}" for start in FORMULA_STARTS)
    + " ELSE {0} END"
)
_COLUMN_SQL = {
    "date": "g.day::text",
    "workspace_id": _TEXT_SQL.format("g.workspace_id"),
    "workspace_name": "w.name",  # escaped once per name, in _names_join
    "api_key_hash": _TEXT_SQL.format("g.api_key_hash"),
    "api_key_name": "CASE WHEN g.api_key_hash = '' THEN %(unattributed)s ELSE k.name END",
    "model": _TEXT_SQL.format("g.model"),
    "model_permaslug": _TEXT_SQL.format("g.model_permaslug"),
    "provider_name": _TEXT_SQL.format("g.provider_name"),
    "requests": "g.requests",
    "prompt_tokens": "g.prompt_tokens",
    "completion_tokens": "g.completion_tokens",
    "reasoning_tokens": "g.reasoning_tokens",
    "cached_tokens": "g.cached_tokens",
    "spend_usd": _MONEY_SQL.format("spend_usd"),
    "byok_spend_usd": _MONEY_SQL.format("byok_spend_usd"),
}


def _copy_csv(connection_ids, start, end, group_by, filters) -> Iterator[str]:
    from django.db import connection, transaction

    fields = [field for dimension in group_by for field in DIMENSIONS[dimension]]
    params = {"ids": list(connection_ids), "start": start, "end": end, "unattributed": UNATTRIBUTED_LABEL}
    where = "connection_id = ANY(%(ids)s) AND day >= %(start)s AND day <= %(end)s"
    for name, value in filters.items():
        if value is not None and name in FILTERS:
            where += f" AND {FILTERS[name]} = %(filter_{name})s"
            params[f"filter_{name}"] = value
    if groups_are_rows(group_by, connection_ids):
        metrics, group = list(METRICS), ""
    else:
        metrics = [f"SUM({name}) AS {name}" for name in METRICS]
        group = f" GROUP BY {', '.join(fields)}" if fields else ""
    grouped = f"SELECT {', '.join([*fields, *metrics])} FROM usage_usagedaily WHERE {where}{group}"  # noqa: S608
    joins = "".join(_names_join(dimension, params) for dimension in NAMED_DIMENSIONS if dimension in group_by)
    columns = export_columns(group_by)
    select = ", ".join(f"{_COLUMN_SQL[name]} AS {name}" for name in columns)
    order = ""
    if fields:
        # Numbered in order before they are named and formatted, then written by number: sorting the
        # formatted rows by their dimensions (the sort carried every formatted cell) cost a 10k-row
        # export a third more, and the hash joins that name the rows keep no order of their own.
        grouped = f"SELECT *, row_number() OVER (ORDER BY {', '.join(fields)}) AS export_position FROM ({grouped}) u"  # noqa: S608
        order = " ORDER BY g.export_position"
    # Every identifier above is a constant of this module; values travel as parameters.
    sql = f"COPY (SELECT {select} FROM ({grouped}) g{joins}{order}) TO STDOUT (FORMAT csv, HEADER, NULL '')"  # noqa: S608
    # Naming every key must be a hash join: with statistics that lag behind a big sync (a new
    # tenant's keys), the planner chose a nested loop over every key for every row (minutes). One
    # key's name is one row, and the setting's transaction costs a small export a tenth of its time.
    names_every_key = "key" in group_by and "filter_key" not in params
    with transaction.atomic() if names_every_key else nullcontext(), connection.cursor() as cursor:
        if names_every_key:
            cursor.execute("SET LOCAL enable_nestloop = off")
        yield from _stream_copy(cursor, sql, params)


# The table naming each named dimension's values: (alias, table, its column for the value).
NAMED_DIMENSIONS = {
    "workspace": ("w", "openrouter_workspace", "workspace_id"),
    "key": ("k", "openrouter_apikey", "key_hash"),
}


def _names_join(dimension: str, params: dict) -> str:
    """The join that names the grouped rows' workspaces or keys: the newest name per value across
    the connections, escaped for the CSV once per name instead of once per row. With a filter on
    that dimension it reads the filtered name only (a key's export read and sorted every key's name
    of the organization, 5 of its 9 ms at 2,000 keys)."""
    alias, table, column = NAMED_DIMENSIONS[dimension]
    named = f" AND {column} = %(filter_{dimension})s" if f"filter_{dimension}" in params else ""
    name = _TEXT_SQL.format("name")
    return (
        f" LEFT JOIN (SELECT DISTINCT ON ({column}) {column}, {name} AS name FROM {table}"  # noqa: S608
        f" WHERE connection_id = ANY(%(ids)s){named} ORDER BY {column}, id DESC) {alias}"
        f" ON {alias}.{column} = g.{FILTERS[dimension]}"
    )


def _stream_copy(cursor, sql: str, params: dict) -> Iterator[str]:
    with cursor.cursor.copy(sql, params) as copy:
        pending, size = [], 0
        for data in copy:
            pending.append(bytes(data))
            size += len(data)
            if size >= CHUNK_BYTES:
                yield b"".join(pending).decode()
                pending, size = [], 0
        yield b"".join(pending).decode()


def write_json(records: Iterator[dict]) -> Iterator[str]:
    yield "["
    for index, record in enumerate(records):
        yield ("," if index else "") + "\n" + json.dumps(record)
    yield "\n]\n"
