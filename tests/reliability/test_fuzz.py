"""Fuzz every endpoint parser with malformed and hostile payloads: wrong types, huge and negative
numbers, unicode, missing and extra fields. Nothing but a clear SchemaError may escape, and a sync fed
such a payload writes nothing partial."""

import json
from decimal import Decimal
from functools import cache

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from openrouter import schemas
from openrouter.client import parse_retry_after
from openrouter.emulator import Emulator, EmulatorConfig

PARSERS = {
    "/key": schemas.parse_current_key,
    "/keys": schemas.parse_keys,
    "/keys/{hash}": schemas.parse_one_key,
    "/activity": schemas.parse_activity,
    "/credits": schemas.parse_credits,
    "/workspaces": schemas.parse_workspaces,
    "/organization/members": schemas.parse_members,
    "/models": schemas.parse_models,
}

hostile_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.text(min_size=500, max_size=2000),
)
hostile_json = st.recursive(
    hostile_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


@cache
def valid_payloads() -> dict:
    emulator = Emulator(EmulatorConfig(seed=5, keys=4))
    client = httpx.Client(transport=emulator.transport(), base_url="http://emulator/api/v1")
    auth = {"Authorization": f"Bearer {emulator.management_key}"}
    payloads = {
        path: json.loads(client.get(path.lstrip("/"), headers=auth).content, parse_float=Decimal)
        for path in PARSERS
        if path != "/keys/{hash}"
    }
    first_key = payloads["/keys"]["data"][0]["hash"]
    payloads["/keys/{hash}"] = json.loads(
        client.get(f"keys/{first_key}", headers=auth).content, parse_float=Decimal
    )
    payloads["/key"] = json.loads(
        client.get("key", headers={"Authorization": f"Bearer {emulator.normal_key}"}).content,
        parse_float=Decimal,
    )
    return payloads


def parse_or_schema_error(path, payload):
    try:
        result = PARSERS[path](payload)
    except schemas.SchemaError:
        return None
    return result


@st.composite
def mutated(draw):
    """A real payload with one field of one record replaced, dropped, or joined by an extra one."""
    path = draw(st.sampled_from(sorted(PARSERS)))
    payload = json.loads(json.dumps(valid_payloads()[path], default=str))
    data = payload["data"]
    record = draw(st.sampled_from(data)) if isinstance(data, list) and data else data
    if isinstance(record, dict) and record:
        name = draw(st.sampled_from(sorted(record)))
        action = draw(st.sampled_from(["replace", "drop", "extra"]))
        if action == "replace":
            record[name] = draw(hostile_json)
        elif action == "drop":
            del record[name]
        else:
            record[draw(st.text(min_size=1, max_size=20))] = draw(hostile_json)
    return path, payload


@given(mutated())
@settings(max_examples=300, deadline=None)
def test_mutated_payloads_parse_or_raise_schema_error(case):
    path, payload = case
    result = parse_or_schema_error(path, payload)
    if result is None:
        return
    records = result[0] if isinstance(result, tuple) else result
    for record in records if isinstance(records, list) else [records]:
        for value in vars(record).values():
            if isinstance(value, int) and not isinstance(value, bool):
                assert 0 <= value <= schemas.MAX_COUNT
            if isinstance(value, Decimal):
                assert value.is_finite()


# Numbers hypothesis found (NaN, infinity), plus one whose int() would not finish: fixed cases, so
# that every run checks them whatever the random examples.
HOSTILE_DECIMALS = ["NaN", "sNaN", "Infinity", "-Infinity", "1E+999999999", "2.5", "-1"]


@pytest.mark.parametrize("text", HOSTILE_DECIMALS)
def test_a_count_that_is_not_a_finite_whole_number_is_a_schema_error(text):
    payload = valid_payloads()["/activity"]
    record = dict(payload["data"][0], requests=Decimal(text), cached_tokens=Decimal(text))

    with pytest.raises(schemas.SchemaError):
        schemas.parse_activity({"data": [record]})


@pytest.mark.parametrize("text", ["NaN", "sNaN", "Infinity", "1E+999999999", "-1E+999999999"])
def test_money_that_is_not_a_finite_amount_in_range_is_a_schema_error(text):
    record = dict(valid_payloads()["/activity"]["data"][0], usage=Decimal(text))

    with pytest.raises(schemas.SchemaError):
        schemas.parse_activity({"data": [record]})


@pytest.mark.parametrize("text", HOSTILE_DECIMALS)
def test_a_context_length_that_is_not_a_storable_whole_number_is_left_unknown(text):
    payload = valid_payloads()["/models"]
    record = dict(payload["data"][0], context_length=Decimal(text))

    (model,) = schemas.parse_models({"data": [record]})

    assert model.context_length is None


def test_a_context_length_too_large_for_its_column_is_left_unknown():
    record = dict(valid_payloads()["/models"]["data"][0], context_length=2**31)

    (model,) = schemas.parse_models({"data": [record]})

    assert model.context_length is None


@given(st.sampled_from(sorted(PARSERS)), hostile_json)
@settings(max_examples=300, deadline=None)
def test_arbitrary_json_parses_or_raises_schema_error(path, payload):
    parse_or_schema_error(path, payload)
    parse_or_schema_error(path, {"data": payload})


@given(st.text(max_size=60))
@example("99999999999999999999999")
@example("Fri, 31 Dec 9999 23:59:59 GMT")  # a date a week away or more waits a week, as seconds do
def test_retry_after_parser_never_raises(value):
    seconds = parse_retry_after(value)
    assert seconds is None or 0 <= seconds <= 7 * 24 * 3600


@pytest.mark.django_db
@given(st.lists(hostile_json, min_size=1, max_size=3))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_sync_fed_hostile_activity_writes_nothing(acme, items):
    import respx

    from integrations.models import Connection
    from openrouter.sync import sync_connection
    from tests.support import TODAY, noon
    from usage.models import UsageDaily

    emulator = Emulator(EmulatorConfig(seed=5, keys=4, today=TODAY))
    connection = Connection.objects.filter(company=acme).first()
    if connection is None:
        from tests.support import connect

        connection = connect(acme, emulator)
    Connection.objects.filter(pk=connection.pk).update(sync_lease_until=None)

    def answer(request):
        if request.url.path.endswith("/activity"):
            return httpx.Response(200, content=json.dumps({"data": items}, default=str).encode())
        return emulator.transport().handle_request(request)

    with respx.mock(base_url="http://emulator/api/v1", assert_all_called=False) as router:
        router.route().mock(side_effect=answer)
        result = sync_connection(
            connection.pk, base_url="http://emulator/api/v1", sleep=lambda s: None, now=noon(TODAY)
        )
    assert result.status in ("failed", "partial", "succeeded")
    if result.status != "succeeded":
        assert not UsageDaily.objects.filter(connection=connection).exists()


@pytest.mark.django_db
def test_a_nul_or_a_lone_surrogate_in_a_name_is_shown_as_a_replacement_and_the_sync_goes_on(acme):
    """Names are free text that anyone with a key can set, and JSON allows \\u0000 and \\ud800, which
    no database stores as text: the sync stores U+FFFD in their place instead of failing at every
    attempt."""
    import respx

    from openrouter.models import ApiKey, Member, Workspace
    from openrouter.sync import sync_connection
    from tests.support import TODAY, connect, noon

    emulator = Emulator(EmulatorConfig(seed=5, keys=4, today=TODAY))
    connection = connect(acme, emulator)

    def answer(request):
        response = emulator.transport().handle_request(request)
        path = request.url.path
        if not path.endswith(("/keys", "/workspaces", "/organization/members")):
            return response
        payload = json.loads(response.read())
        for record in payload["data"]:
            for field in ("name", "first_name", "email"):
                if isinstance(record.get(field), str):
                    record[field] = "Evil\x00\ud800" + record[field]
        # json.dumps escapes them as JSON may (\u0000, \ud800); httpx's json= would write raw UTF-8.
        return httpx.Response(
            200, content=json.dumps(payload).encode(), headers={"content-type": "application/json"}
        )

    with respx.mock(base_url="http://emulator/api/v1", assert_all_called=False) as router:
        router.route().mock(side_effect=answer)
        result = sync_connection(
            connection.pk, base_url="http://emulator/api/v1", sleep=lambda s: None, now=noon(TODAY)
        )

    assert result.status == "succeeded", result
    names = [
        *ApiKey.objects.filter(connection=connection).values_list("name", flat=True),
        *Workspace.objects.filter(connection=connection).values_list("name", flat=True),
        *Member.objects.filter(connection=connection).values_list("first_name", flat=True),
    ]
    assert names and all(name.startswith("Evil\ufffd\ufffd") for name in names)


@pytest.mark.parametrize(
    ("path", "record", "field"),
    [
        ("/keys", {"hash": "ab\x00cd", "name": "k"}, "hash"),
        ("/activity", {"model": "openai/\x00gpt"}, "model"),
        ("/workspaces", {"id": "ws\x00", "name": "w"}, "id"),
        ("/keys", {"hash": "ab\udc00cd", "name": "k"}, "hash"),
    ],
)
def test_a_nul_or_a_lone_surrogate_in_an_identifier_is_a_schema_error(path, record, field):
    """Identifiers come from OpenRouter itself and are sent back to it: one holding a NUL is a broken
    answer, refused clearly rather than stored altered."""
    payload = valid_payloads()[path]
    item = dict(payload["data"][0], **record)
    with pytest.raises(schemas.SchemaError, match=f"{field}.*NUL"):
        PARSERS[path]({**payload, "data": [item]})


@pytest.mark.parametrize(
    ("path", "field", "column"),
    [
        ("/keys", "name", 300),
        ("/workspaces", "name", 200),
        ("/organization/members", "first_name", 150),
        ("/models", "name", 300),
    ],
)
def test_a_name_longer_than_its_column_is_cut_to_it(path, field, column):
    """Refusing a name longer than Doow stores would stop every sync of its organization: it is cut
    to the column, and the cut shows."""
    payload = valid_payloads()[path]
    item = dict(payload["data"][0], **{field: "x" * 5000})

    parsed = PARSERS[path]({**payload, "data": [item]})

    record = (parsed[0] if isinstance(parsed, tuple) else parsed)[0]
    assert getattr(record, field) == "x" * (column - 1) + "…"


def test_an_identifier_longer_than_its_column_is_a_schema_error():
    payload = valid_payloads()["/keys"]
    item = dict(payload["data"][0], hash="a" * 101)
    with pytest.raises(schemas.SchemaError, match="hash is longer than 100"):
        schemas.parse_keys({**payload, "data": [item]})
