import csv
import io
import json
import operator
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openrouter.exports import COLUMNS
from tests.support import connect, stored_total, sync

pytestmark = pytest.mark.django_db


@pytest.fixture
def synced(acme, emulator):
    connection = connect(acme, emulator)
    sync(connection, emulator)
    return connection


def export(*args) -> str:
    out = io.StringIO()
    call_command("usage_export", "--company", "acme", *args, stdout=out)
    return out.getvalue()


def window_args(emulator):
    start, end = emulator.truth.activity_window()
    return ["--from", start.isoformat(), "--to", end.isoformat()]


def test_csv_has_every_column_and_adds_up_exactly(synced, emulator):
    rows = list(csv.DictReader(io.StringIO(export(*window_args(emulator)))))
    assert list(rows[0]) == [name for name, _ in COLUMNS]
    assert sum(Decimal(r["spend_usd"]) for r in rows) == stored_total(synced)
    assert sum(Decimal(r["byok_spend_usd"]) for r in rows) == stored_total(synced, "byok_spend_usd")
    start, end = emulator.truth.activity_window()
    assert sum(Decimal(r["spend_usd"]) for r in rows) == emulator.truth.activity_total(start, end)
    unattributed = [r for r in rows if r["api_key_hash"] == ""]
    assert unattributed and {r["api_key_name"] for r in unattributed} == {"(deleted or unlisted keys)"}
    named = [r for r in rows if r["api_key_hash"]]
    assert all(r["api_key_name"] and r["workspace_name"] for r in named)
    assert all("e" not in r["spend_usd"].lower() for r in rows)


def test_group_by_drops_the_other_columns(synced, emulator):
    text = export(*window_args(emulator), "--group-by", "day,model")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == [
        "date",
        "model",
        "model_permaslug",
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "reasoning_tokens",
        "cached_tokens",
        "spend_usd",
        "byok_spend_usd",
    ]
    assert len({(r["date"], r["model_permaslug"]) for r in rows}) == len(rows)
    assert sum(Decimal(r["spend_usd"]) for r in rows) == stored_total(synced)


def test_json_export(synced, emulator):
    rows = json.loads(export(*window_args(emulator), "--format", "json", "--group-by", "key"))
    assert sum(Decimal(r["spend_usd"]) for r in rows) == stored_total(synced)
    assert {"api_key_hash", "api_key_name", "spend_usd"} <= set(rows[0])


def test_bad_arguments_fail_clearly(synced):
    with pytest.raises(CommandError, match="Unknown group-by"):
        export("--group-by", "day,colour")
    with pytest.raises(CommandError, match="not a date"):
        export("--from", "yesterday")
    with pytest.raises(CommandError, match="must not be after"):
        export("--from", "2026-11-10", "--to", "2026-11-01")


def test_an_export_of_dates_no_usage_can_have_is_refused_as_the_pages_download_refuses_it(synced):
    with pytest.raises(CommandError, match="at most 366 days ahead"):
        export("--from", "2026-11-01", "--to", "2099-01-01")
    with pytest.raises(CommandError, match="Pick dates from 2000-01-01"):
        export("--from", "1999-12-31", "--to", "2000-01-31")
    with pytest.raises(CommandError, match="at most 3660 days"):
        export("--from", "2000-01-01", "--to", "2020-01-01")


def csv_from_both_writers(**selection) -> tuple[str, str]:
    """The export as PostgreSQL writes it (COPY; elsewhere the Python writer) and as the Python writer
    writes it, the reference."""
    from openrouter import exports

    written = "".join(exports.csv_chunks(**selection))
    reference = "".join(
        exports.write_csv(exports.export_records(**selection), exports.export_columns(selection["group_by"]))
    )
    return written, reference


EXPORT_SHAPES = [
    (["day", "workspace", "key", "model", "provider"], {}),
    (["key"], {}),
    (["workspace", "model"], {"provider": None}),
    (["day", "key"], {"key": ""}),
    # A key or workspace filter narrows the COPY name joins to that name: still the same bytes.
    (["day", "workspace", "key", "model", "provider"], {"key": None}),
    (["workspace", "key"], {"workspace": None}),
]


@pytest.mark.parametrize(("group_by", "filters"), EXPORT_SHAPES)
def test_every_csv_writer_writes_the_same_bytes(synced, emulator, group_by, filters):
    """PostgreSQL writes the CSV itself (COPY); the Python writer is the reference: same bytes."""
    from openrouter.models import ApiKey, Workspace
    from usage.selectors import FILTERS

    # Names that need quoting, and an empty one, so quoting and empty fields are compared too.
    Workspace.objects.filter(connection=synced).update(name='Team "A", Paris\nOffice')
    ApiKey.objects.filter(pk=ApiKey.objects.filter(connection=synced).first().pk).update(name="")
    start, end = emulator.truth.activity_window()
    # None stands for "a value the synced rows have" (the emulator's names are not known here).
    rows = synced.usage_rows.exclude(api_key_hash="").order_by("-day", "api_key_hash")
    filters = {
        name: rows.values_list(FILTERS[name], flat=True).first() if value is None else value
        for name, value in filters.items()
    }
    selection = {"connection_ids": [synced.pk], "start": start, "end": end, "group_by": group_by}

    written, reference = csv_from_both_writers(**selection, filters=filters)

    assert written == reference
    assert len(written.splitlines()) > 1


HOSTILE_NAMES = ['=HYPERLINK("http://evil.test","x")', "+1+1", "-2+3", "@SUM(A1)", "\tTab", "\rCR"]


def test_names_a_spreadsheet_would_run_as_formulas_are_exported_as_text(synced, emulator):
    """Key and workspace names come from OpenRouter, set by anyone with a key there: a cell that
    starts like a formula gets a leading apostrophe, in both writers; numbers stay numbers."""
    from openrouter import exports
    from openrouter.models import ApiKey, Workspace
    from usage.models import UsageDaily

    keys = list(ApiKey.objects.filter(connection=synced).order_by("pk"))
    for key, name in zip(keys, HOSTILE_NAMES, strict=False):
        ApiKey.objects.filter(pk=key.pk).update(name=name)
    Workspace.objects.filter(connection=synced).update(name="=1+2")
    UsageDaily.objects.filter(connection=synced, api_key_hash="").update(model="@evil")
    start, end = emulator.truth.activity_window()
    selection = {
        "connection_ids": [synced.pk],
        "start": start,
        "end": end,
        "group_by": exports.ALL_DIMENSIONS,
    }

    written, reference = csv_from_both_writers(**selection)

    assert written == reference
    rows = list(csv.DictReader(io.StringIO(written, newline="")))
    names = {row["api_key_name"] for row in rows}
    assert {"'" + name for name in HOSTILE_NAMES} <= names
    assert not [name for name in names if name.startswith(exports.FORMULA_STARTS)]
    assert {row["workspace_name"] for row in rows} == {"'=1+2"}
    assert "'@evil" in {row["model"] for row in rows}
    # Money and counts are untouched: the export still adds up to the cent.
    assert sum(Decimal(row["spend_usd"]) for row in rows) == stored_total(synced)
    # JSON is data, not a spreadsheet: names as they are.
    records = list(exports.export_records(**selection))
    assert set(HOSTILE_NAMES) <= {record["api_key_name"] for record in records}


# Any text OpenRouter could send as a name: empty, formula starts, quotes, separators, line breaks
# and carriage returns, non-ASCII (PostgreSQL refuses NUL in text; the parsers reject it before). The
# first character is drawn from the risky ones on its own, so every run meets each of them.
NAME_TEXT = st.builds(
    operator.add,
    st.sampled_from(["", "=", "+", "-", "@", "\t", "\r", "\n", '"', ",", "'", " ", "é"]),
    st.text(
        alphabet=st.one_of(
            st.sampled_from(list("=+-@\t\r\n\",' ")),
            st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
        ),
        max_size=12,
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(workspace=NAME_TEXT, key_names=st.lists(NAME_TEXT, min_size=2, max_size=2), model=NAME_TEXT)
def test_both_csv_writers_agree_on_any_names(synced, emulator, workspace, key_names, model):
    """The database's CSV (escaping in SQL) and the Python writer's are the same bytes for any names."""
    from openrouter import exports
    from openrouter.models import ApiKey, Workspace
    from usage.models import UsageDaily

    Workspace.objects.filter(connection=synced).update(name=workspace)
    for key, name in zip(ApiKey.objects.filter(connection=synced).order_by("pk"), key_names, strict=False):
        ApiKey.objects.filter(pk=key.pk).update(name=name)
    UsageDaily.objects.filter(connection=synced, api_key_hash="").update(model=model)
    start, end = emulator.truth.activity_window()
    for group_by in (exports.ALL_DIMENSIONS, ["workspace", "key", "model"]):
        selection = {"connection_ids": [synced.pk], "start": start, "end": end, "group_by": group_by}
        written, reference = csv_from_both_writers(**selection)
        assert written == reference


def test_a_company_with_two_connections_exports_the_same_bytes_from_both_writers(acme, emulator):
    """Rows of the same day, key, model and provider in two connections are summed, and each key and
    workspace is named by its newest name across them, by PostgreSQL's COPY as by the Python writer."""
    from openrouter import exports
    from openrouter.emulator import Emulator, EmulatorConfig
    from openrouter.models import ApiKey, Workspace
    from tests.support import TODAY
    from usage.models import UNATTRIBUTED_LABEL, UsageDaily

    first = connect(acme, emulator)
    sync(first, emulator)
    # A second organization of the company, holding copies of the first one's rows and names.
    second = connect(acme, Emulator(EmulatorConfig(seed=8, keys=2, today=TODAY)), name="Second")
    copies = list(UsageDaily.objects.filter(connection=first))
    for row in copies:
        row.pk, row.connection = None, second
    UsageDaily.objects.bulk_create(copies)
    for model in (Workspace, ApiKey):
        renamed = list(model.objects.filter(connection=first).order_by("-pk"))
        for item in renamed:
            item.pk, item.connection, item.name = None, second, f"Renamed {item.name}"
        model.objects.bulk_create(renamed)
    start, end = emulator.truth.activity_window()

    for group_by in (exports.ALL_DIMENSIONS, ["key"], ["day", "workspace"]):
        selection = {
            "connection_ids": [first.pk, second.pk],
            "start": start,
            "end": end,
            "group_by": group_by,
        }
        written, reference = csv_from_both_writers(**selection)
        assert written == reference
        rows = list(csv.DictReader(io.StringIO(written, newline="")))
        assert sum(Decimal(row["spend_usd"]) for row in rows) == 2 * stored_total(first)
        named = {row.get("api_key_name") or row.get("workspace_name") for row in rows} - {"", None}
        if "key" in group_by or "workspace" in group_by:
            assert named and all(name.startswith("Renamed ") or name == UNATTRIBUTED_LABEL for name in named)
