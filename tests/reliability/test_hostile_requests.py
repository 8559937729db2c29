"""Bad input gets a clear answer, never a server error: every URL under /c/<company>/, found by
walking the resolver, is sent hostile query strings and form bodies by the company's own admin,
with real objects behind its ids so the views get past their lookups and parse what they are sent;
signed out, as htmx polling from a hostile page URL; and the URLs outside a company likewise.
A 4xx or a page that says what is wrong is fine; a 5xx is a bug."""

import pytest

from integrations.models import Connection
from tests.conftest import client_for
from tests.support import objects_behind_every_id, usage_snapshot
from tests.url_walker import company_routes

pytestmark = pytest.mark.django_db

# Every parameter name the app's views and forms read, from query strings or form bodies.
PARAMETERS = [
    "range",
    "from",
    "to",
    "shown",
    "key",
    "model",
    "provider",
    "workspace",
    "tab",
    "sort",
    "page",
    "metric",
    "part",
    "reload_when_done",
    "group_by",
    "after",
    "level",
    "kind",
    "day",
    "connection",
    "state",
    "action",
    "scope",
    "target",
    "monthly_usd",
    "enabled",
    "threshold",
    "notify_roles",
    "key_hash",
    "user",
    "confirm",
    "delete_usage",
    "name",
    "next",
    "company",
]

HOSTILE_VALUES = [
    "",
    # Values some parameter takes, sent to every parameter: they get past more of the parsing.
    "1",
    "on",
    "custom",
    "2026-11-01",
    "admin",
    # Values none takes.
    "-1",
    "99999999999999999999999999999",
    "1e309",
    "NaN",
    "-Infinity",
    "0.0000000000000000000001",
    "2026-02-30",
    "9999-12-31",
    "0001-01-01",
    "-",
    "'; DROP TABLE usage_usagedaily; --",
    "<script>alert(1)</script>",
    "ünïcødé 🦄 \u202e\u200b",
    "../../etc/passwd",
    "http://[not-an-address/",
    "x" * 5000,
]


def hostile_data(value: str) -> dict[str, list[str]]:
    # Each name twice, the value last (where QueryDict.get looks): a view reading one value must
    # cope with a list as well.
    return {name: [value[::-1], value] for name in PARAMETERS}


@pytest.fixture
def acme_objects(acme, emulator) -> dict[str, int]:
    return {name: obj.pk for name, obj in objects_behind_every_id(acme, emulator).items()}


def urls(routes, objects: dict) -> list[str]:
    """Each route's URL with Acme's real objects behind its ids; the export in both formats."""
    return [
        route.url("acme", **objects, fmt=fmt)
        for route in routes
        for fmt in (("csv", "json") if "fmt" in route.dummy_kwargs else (None,))
    ]


def server_errors(client, paths: list[str], *, htmx: bool = False) -> list[tuple]:
    """(method, path, value, status) of each 5xx. `htmx`: the requests also claim to come from htmx,
    with the hostile value as the page they were made from (HX-Current-URL)."""
    failures = []
    for path in paths:
        for value in HOSTILE_VALUES:
            data = hostile_data(value)
            headers = {"HX-Request": "true", "HX-Current-URL": value} if htmx else {}
            for method in (client.get, client.post):
                status = method(path, data, headers=headers).status_code
                if status >= 500:
                    failures.append((method.__name__, path, value[:40], status))
    return failures


def test_no_company_url_answers_hostile_input_with_a_server_error(acme, alice, acme_objects, emulator_server):
    client = client_for(alice, raise_request_exception=False)  # every failure, not the first
    routes = company_routes()
    assert {"budget_id", "rule_id", "alert_id", "run_id", "connection_id"} <= {
        name for route in routes for name in route.dummy_kwargs
    }
    # Hostile input may well confirm a disconnect (an admin's own action, which may delete the usage
    # history): those routes come last, after the check that nothing else touched the usage rows.
    disconnecting = [route for route in routes if "disconnect" in route.name]
    assert len(disconnecting) == 2
    connection = Connection.objects.get(pk=acme_objects["connection_id"])
    usage_before = usage_snapshot(connection)
    assert usage_before

    failures = server_errors(client, urls([r for r in routes if r not in disconnecting], acme_objects))
    assert usage_snapshot(connection) == usage_before
    failures += server_errors(client, urls(disconnecting, acme_objects))

    assert not failures, failures


@pytest.mark.parametrize("signed_in", [False, True])
def test_no_url_outside_a_company_answers_hostile_input_with_a_server_error(signed_in, alice):
    client = client_for(alice if signed_in else None, raise_request_exception=False)
    # Logging out ends the session the other URLs are walked with: it goes last.
    assert not server_errors(client, ["/", "/favicon.ico", "/login/", "/switch-company/", "/logout/"])


def test_an_htmx_request_signed_out_from_a_hostile_page_url_is_sent_to_login(acme, acme_objects):
    client = client_for(None, raise_request_exception=False)
    assert not server_errors(client, urls(company_routes(), acme_objects), htmx=True)

    response = client.get(
        "/c/acme/integrations/cards/", headers={"HX-Request": "true", "HX-Current-URL": "http://[x/"}
    )
    assert response.status_code == 204
    assert response["HX-Redirect"] == "/login/?next=/"
