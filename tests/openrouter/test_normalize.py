"""normalize.aggregate_activity: OpenRouter's per-endpoint /activity rows become one row per
(day, workspace, key, model, provider), summed exactly. The emulator serves one endpoint per model
and provider, so this summing is only exercised here."""

import json
import string
from datetime import date
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from openrouter import normalize, schemas

DAY = "2026-11-20"


def activity(*rows: dict) -> list[schemas.ActivityRecord]:
    """Rows as the client reads them: JSON text parsed with floats as Decimal, then validated."""
    base = {
        "date": DAY,
        "model": "openai/gpt-4o",
        "model_permaslug": "openai/gpt-4o-2024-08-06",
        "provider_name": "OpenAI",
        "workspace_id": "ws-1",
    }
    text = json.dumps({"data": [base | row for row in rows]})
    return schemas.parse_activity(json.loads(text, parse_float=Decimal))


ENDPOINT_ROWS = [
    {
        "endpoint_id": "ep-a",
        "requests": 3,
        "prompt_tokens": 100,
        "completion_tokens": 10,
        "reasoning_tokens": 1,
        "cached_tokens": 7,
        "usage": 0.1,
        "byok_usage_inference": 0.000000001,
    },
    {
        "endpoint_id": "ep-b",
        "requests": 5,
        "prompt_tokens": 200,
        "completion_tokens": 20,
        "reasoning_tokens": 2,
        "cached_tokens": 0,
        "usage": 0.2,
        "byok_usage_inference": 0.000000002,
    },
    {
        "endpoint_id": "ep-c",
        "requests": 1,
        "prompt_tokens": 1,
        "completion_tokens": 2,
        "reasoning_tokens": 0,
        "cached_tokens": 3,
        "usage": 0.00000123456789,
        "byok_usage_inference": 0,
    },
]


def test_endpoint_rows_of_one_day_model_and_provider_become_one_exact_row():
    rows = normalize.aggregate_activity(activity(*ENDPOINT_ROWS), api_key_hash="h1")

    key = (date(2026, 11, 20), "ws-1", "h1", "openai/gpt-4o-2024-08-06", "OpenAI")
    assert list(rows) == [key]
    values = rows[key]
    assert values.model == "openai/gpt-4o"
    assert (
        values.requests,
        values.prompt_tokens,
        values.completion_tokens,
        values.reasoning_tokens,
        values.cached_tokens,
    ) == (9, 301, 32, 3, 10)
    # Exact decimal sums: 0.1 + 0.2 as floats would be 0.30000000000000004.
    assert values.spend_usd == Decimal("0.30000123456789")
    assert values.byok_spend_usd == Decimal("0.000000003")
    assert isinstance(values.spend_usd, Decimal) and isinstance(values.byok_spend_usd, Decimal)


def test_another_provider_day_or_model_is_another_row():
    records = activity(
        *ENDPOINT_ROWS[:2],
        ENDPOINT_ROWS[2] | {"provider_name": "Azure"},
        ENDPOINT_ROWS[0] | {"date": "2026-11-21"},
        ENDPOINT_ROWS[1]
        | {"model": "openai/gpt-4o-mini", "model_permaslug": "openai/gpt-4o-mini-2024-07-18"},
    )

    rows = normalize.aggregate_activity(records, api_key_hash="h1")

    by_key = {(k[0].isoformat(), k[3], k[4]): v for k, v in rows.items()}
    assert set(by_key) == {
        (DAY, "openai/gpt-4o-2024-08-06", "OpenAI"),
        (DAY, "openai/gpt-4o-2024-08-06", "Azure"),
        ("2026-11-21", "openai/gpt-4o-2024-08-06", "OpenAI"),
        (DAY, "openai/gpt-4o-mini-2024-07-18", "OpenAI"),
    }
    assert by_key[(DAY, "openai/gpt-4o-2024-08-06", "OpenAI")].spend_usd == Decimal("0.3")
    assert by_key[(DAY, "openai/gpt-4o-2024-08-06", "OpenAI")].requests == 8
    assert by_key[(DAY, "openai/gpt-4o-2024-08-06", "Azure")].spend_usd == Decimal("0.00000123456789")
    assert by_key[(DAY, "openai/gpt-4o-2024-08-06", "Azure")].requests == 1
    assert by_key[(DAY, "openai/gpt-4o-mini-2024-07-18", "OpenAI")].model == "openai/gpt-4o-mini"
    # Nothing is lost or counted twice across the rows.
    assert sum((v.spend_usd for v in rows.values()), Decimal(0)) == Decimal("0.60000123456789")


def test_rows_keep_the_workspace_they_were_spent_in_and_one_naming_none_takes_the_keys():
    """A key moved to ws-9 keeps its earlier usage in ws-1, where OpenRouter attributes it."""
    rows = normalize.aggregate_activity(
        activity(ENDPOINT_ROWS[0] | {"workspace_id": None}, ENDPOINT_ROWS[1]),
        api_key_hash="h1",
        default_workspace="ws-9",
    )

    assert sorted((k[1], v.requests) for k, v in rows.items()) == [("ws-1", 5), ("ws-9", 3)]


def test_names_sort_as_people_read_them_numbers_by_value_and_case_ignored():
    names = ["CI #55", "Zeta", "CI #9", "alpha", "v10", "v2", "key 007", "Beta 2", "beta 10", "ab-", "ab1"]
    assert sorted(names, key=normalize.name_sort_key) == [
        "ab-",
        "ab1",
        "alpha",
        "Beta 2",
        "beta 10",
        "CI #9",
        "CI #55",
        "key 007",
        "v2",
        "v10",
        "Zeta",
    ]


@given(
    st.text(alphabet="ab #-", max_size=4), st.integers(0, 10**30), st.integers(0, 10**30), st.text(max_size=6)
)
def test_a_name_with_a_bigger_number_sorts_after_the_same_name_with_a_smaller_one(prefix, low, high, suffix):
    low, high = sorted((low, high))
    smaller, bigger = (normalize.name_sort_key(f"{prefix}{n}{suffix}") for n in (low, high))
    assert smaller <= bigger and (low == high or smaller < bigger)


@given(st.text(max_size=400))
def test_a_sort_key_fits_its_column(name):
    assert len(normalize.name_sort_key(name)) <= normalize.NAME_SORT_KEY_LENGTH


@given(st.text(alphabet=string.ascii_letters + string.digits + " #-", max_size=40))
def test_a_sort_key_ignores_case(name):
    assert normalize.name_sort_key(name.upper()) == normalize.name_sort_key(name.lower())
