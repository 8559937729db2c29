"""Who may see which company page: the access helper, on the settings page and on every /c/ route."""

import pytest
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import resolve_url
from django.test import Client
from django.urls import reverse

from doow.access import ADMINS, ALL_ROLES, HEALTH_READERS, USAGE_READERS, membership_for
from doow.models import Role
from tests.conftest import client_for
from tests.url_walker import company_routes, fetch

ROUTES = company_routes()
LOGIN_PATH = resolve_url(settings.LOGIN_URL)


def assert_redirects_to_login(response, requested_url: str) -> None:
    assert response.status_code == 302
    assert response.url.startswith(f"{LOGIN_PATH}?next=")
    assert requested_url in response.url.replace("%2F", "/")


# --- membership_for, directly


def test_membership_for_returns_the_membership_for_an_allowed_role(alice, acme):
    membership = membership_for(alice, "acme", ADMINS)
    assert (membership.user, membership.company, membership.role) == (alice, acme, Role.ADMIN)


def test_membership_for_refuses_a_member_whose_role_is_not_allowed(fiona):
    with pytest.raises(PermissionDenied):
        membership_for(fiona, "acme", HEALTH_READERS)


@pytest.mark.parametrize("slug", ["acme", "no-such-company"])
def test_membership_for_hides_a_company_from_an_outsider(charlie, acme, slug):
    # The same 404 whether or not the company exists, so its existence never leaks.
    with pytest.raises(Http404):
        membership_for(charlie, slug, ALL_ROLES)


def test_membership_for_treats_anonymous_as_an_outsider(acme):
    with pytest.raises(Http404):
        membership_for(AnonymousUser(), "acme", ALL_ROLES)


def test_role_groups_are_what_the_pages_promise():
    assert set(ALL_ROLES) == {Role.ADMIN, Role.FINANCE, Role.OPS}
    assert set(ADMINS) == {Role.ADMIN}
    assert set(USAGE_READERS) == {Role.ADMIN, Role.FINANCE}
    assert set(HEALTH_READERS) == {Role.ADMIN, Role.OPS}


# --- The company settings page


@pytest.mark.parametrize("role", ["admin", "finance", "ops"])
def test_every_member_sees_the_settings_page(personas, role):
    response = client_for(personas[role]).get("/c/acme/settings/")
    assert response.status_code == 200
    assert response.context["request"].company.slug == "acme"
    assert response.context["request"].membership.role == role


def test_settings_page_is_404_for_an_outsider(personas):
    assert client_for(personas["outsider"]).get("/c/acme/settings/").status_code == 404


def test_settings_page_is_404_for_a_company_that_does_not_exist(alice):
    assert client_for(alice).get("/c/initech/settings/").status_code == 404


def test_settings_page_sends_anonymous_to_login(acme):
    assert_redirects_to_login(client_for(None).get("/c/acme/settings/"), "/c/acme/settings/")


def test_a_page_refused_to_a_role_answers_403(fiona):
    # Fiona (finance) may not read the event log: a 403 page, not a 404, since she is a member.
    response = client_for(fiona).get("/c/acme/integrations/events/")
    assert response.status_code == 403
    assert "403.html" in [template.name for template in response.templates]


def test_company_view_remembers_the_company_for_home(alice, globex):
    from doow.models import Membership

    Membership.objects.create(user=alice, company=globex, role=Role.FINANCE)
    client = client_for(alice)
    client.get("/c/globex/settings/")
    assert client.session["company_slug"] == "globex"


def test_company_view_saves_the_session_only_when_the_company_changes(alice):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = client_for(alice)
    client.get("/c/acme/settings/")
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/c/acme/settings/").status_code == 200
    assert not [query for query in queries if "django_session" in query["sql"] and "UPDATE" in query["sql"]]
    assert client.session["company_slug"] == "acme"


# --- Every route under /c/<company_slug>/, found by walking the URL resolver


def test_the_walker_finds_the_company_routes():
    names = {route.name for route in ROUTES}
    assert {"company-settings", "integrations:events", "openrouter:connect"} <= names
    assert all(route.route.startswith("c/<slug:company_slug>/") for route in ROUTES)


@pytest.mark.parametrize("route", [route for route in ROUTES if route.name], ids=str)
def test_the_walker_builds_the_same_urls_as_reverse(route):
    assert route.url("acme") == reverse(route.name, kwargs={"company_slug": "acme", **route.dummy_kwargs})


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_every_company_route_is_guarded_by_company_view(route):
    # A view under /c/ without company_view would serve any company to anyone.
    assert route.allowed_roles, f"{route.route} is not decorated with doow.access.company_view"
    assert route.allowed_roles <= set(Role)


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_every_company_route_sends_anonymous_to_login(acme, route):
    url = route.url("acme")
    assert_redirects_to_login(fetch(client_for(None), url), url)


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_every_company_route_is_404_for_an_outsider(personas, route):
    assert fetch(client_for(personas["outsider"]), route.url("acme")).status_code == 404


REFUSED = [
    (route, role)
    for route in ROUTES
    for role in Role
    if route.allowed_roles is not None and role not in route.allowed_roles
]
ADMITTED = [
    (route, role) for route in ROUTES for role in Role if route.allowed_roles and role in route.allowed_roles
]


@pytest.mark.parametrize(("route", "role"), REFUSED, ids=str)
def test_every_company_route_is_403_for_a_role_it_does_not_allow(personas, route, role):
    assert fetch(client_for(personas[role]), route.url("acme")).status_code == 403


@pytest.mark.parametrize(("route", "role"), ADMITTED, ids=str)
def test_every_company_route_lets_in_the_roles_it_allows(personas, route, role):
    # The ids in the URL match no row, so an admitted member may get 404 or a form; never 403.
    assert fetch(client_for(personas[role]), route.url("acme")).status_code in {200, 302, 400, 404}


def test_the_matrix_covers_refusals():
    # If every route admitted every role the 403 test above would pass vacuously.
    assert REFUSED


@pytest.mark.django_db
def test_a_nul_character_in_a_posted_value_is_a_clear_400_not_a_database_error(alice):
    response = client_for(alice).post(reverse("company-switch"), {"company": "ac\x00me"})
    assert response.status_code == 400
    assert "NUL" in response.content.decode()


@pytest.mark.django_db
def test_a_polled_part_of_a_page_sends_a_logged_out_browser_to_the_login_page_whole():
    """htmx would put a redirect's login page inside the polled element; HX-Redirect moves the page."""
    response = Client().get(
        "/c/acme/integrations/cards/",
        headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/c/acme/settings/?x=1"},
    )
    assert response.status_code == 204
    assert response["HX-Redirect"] == resolve_url(settings.LOGIN_URL) + "?next=/c/acme/settings/%3Fx%3D1"
