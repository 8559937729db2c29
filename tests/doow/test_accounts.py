"""Logging in and out, landing on a company, switching companies, and the members list."""

import pytest
from django.contrib.auth import SESSION_KEY

from doow.models import Membership, Role, User
from tests.conftest import PASSWORD, client_for

# --- Login and logout (Django's auth views, with the email as the username)


def test_login_page_renders_for_anonymous(db):
    response = client_for(None).get("/login/")
    assert response.status_code == 200
    assert b'name="username"' in response.content and b'name="password"' in response.content
    # The first Tab offers to skip the top bar.
    assert (
        b'<a class="skip-link" href="#main">' in response.content
        and b'<main class="page" id="main"' in response.content
    )


def test_login_with_email_and_password_lands_on_the_company(alice):
    client = client_for(None)
    response = client.post("/login/", {"username": "alice@acme.test", "password": PASSWORD})
    assert response.status_code == 302
    assert response.url == "/"
    assert client.session[SESSION_KEY] == str(alice.pk)
    assert client.get("/").url == "/c/acme/settings/"


@pytest.mark.parametrize("typed", ["Alice@Acme.test", "ALICE@ACME.TEST", " alice@acme.test "])
def test_an_email_typed_with_capitals_or_spaces_logs_the_same_person_in(alice, typed):
    client = client_for(None)
    response = client.post("/login/", {"username": typed, "password": PASSWORD})
    assert response.status_code == 302
    assert client.session[SESSION_KEY] == str(alice.pk)


def test_an_address_saved_with_capitals_is_stored_as_people_type_it_anywhere(db):
    user = User(email="Fiona@Acme.Test")
    user.clean()
    assert user.email == "fiona@acme.test"
    assert User.objects.create_user(email="Omar@Acme.Test").email == "omar@acme.test"


def test_login_follows_next_to_the_page_asked_for(alice):
    response = client_for(None).post(
        "/login/",
        {"username": "alice@acme.test", "password": PASSWORD, "next": "/c/acme/integrations/events/"},
    )
    assert response.url == "/c/acme/integrations/events/"


def test_login_ignores_a_next_pointing_off_site(alice):
    response = client_for(None).post(
        "/login/", {"username": "alice@acme.test", "password": PASSWORD, "next": "https://evil.test/"}
    )
    assert response.url == "/"


def test_wrong_password_shows_an_error_and_logs_nobody_in(alice):
    client = client_for(None)
    response = client.post("/login/", {"username": "alice@acme.test", "password": "wrong-password"})
    assert response.status_code == 200
    assert b"did not match" in response.content
    # Announced by screen readers: the page reloads with focus on the email field, not on the error.
    assert b'<p class="error" role="alert">Your email and password did not match' in response.content
    assert SESSION_KEY not in client.session
    # The email stays filled in; the password does not come back.
    assert b'value="alice@acme.test"' in response.content
    assert b"wrong-password" not in response.content


def test_unknown_email_shows_the_same_error(db):
    response = client_for(None).post("/login/", {"username": "nobody@acme.test", "password": PASSWORD})
    assert response.status_code == 200
    assert b"did not match" in response.content


def test_logged_in_user_visiting_login_is_sent_on(alice):
    response = client_for(alice).get("/login/")
    assert response.status_code == 302
    assert response.url == "/"


def test_logout_is_a_post_that_ends_the_session(alice):
    client = client_for(alice)
    response = client.post("/logout/")
    assert response.status_code == 302
    assert response.url == "/login/"
    assert SESSION_KEY not in client.session
    assert client.get("/c/acme/settings/").status_code == 302


def test_logout_by_get_is_refused(alice):
    client = client_for(alice)
    assert client.get("/logout/").status_code == 405
    assert SESSION_KEY in client.session


def test_every_page_offers_a_logout_form(alice):
    response = client_for(alice).get("/c/acme/settings/")
    assert b'action="/logout/"' in response.content


# --- Home: to the company used last, else the first one


def test_home_sends_anonymous_to_login(db):
    response = client_for(None).get("/")
    assert response.status_code == 302
    assert response.url.startswith("/login/?next=/")


def test_home_redirects_to_the_company_settings_page(alice):
    response = client_for(alice).get("/")
    assert response.status_code == 302
    assert response.url == "/c/acme/settings/"


def test_home_tells_a_user_without_a_company_that_they_are_not_a_member(db):
    loner = User.objects.create_user(email="loner@nowhere.test", password=PASSWORD)
    response = client_for(loner).get("/")
    assert response.status_code == 403
    assert b"not a member of any company" in response.content


# --- Switching companies


@pytest.fixture
def alice_in_two_companies(alice, globex) -> User:
    Membership.objects.create(user=alice, company=globex, role=Role.FINANCE)
    return alice


def test_a_user_of_two_companies_sees_the_switcher(alice_in_two_companies):
    response = client_for(alice_in_two_companies).get("/c/acme/settings/")
    content = response.content.decode()
    assert 'class="company-switcher"' in content
    assert '<option value="acme" selected>Acme Corp</option>' in content
    assert '<option value="globex" >Globex</option>' in content


def test_a_user_of_one_company_sees_no_switcher(fiona):
    content = client_for(fiona).get("/c/acme/settings/").content.decode()
    assert "company-switcher" not in content
    assert '<span class="company-name">Acme Corp</span>' in content


def test_switching_company_lands_on_its_settings_page(alice_in_two_companies):
    client = client_for(alice_in_two_companies)
    response = client.post("/switch-company/", {"company": "globex"})
    assert response.status_code == 302
    assert response.url == "/c/globex/settings/"
    page = client.get(response.url)
    assert page.status_code == 200
    assert page.context["request"].membership.role == Role.FINANCE
    # Home now remembers the choice.
    assert client.get("/").url == "/c/globex/settings/"


def test_switching_to_a_company_you_are_not_a_member_of_is_404(alice, globex):
    client = client_for(alice)
    assert client.post("/switch-company/", {"company": "globex"}).status_code == 404
    assert client.post("/switch-company/", {"company": "no-such-company"}).status_code == 404
    assert client.post("/switch-company/", {}).status_code == 404


def test_switching_needs_a_post_and_a_login(alice, globex):
    assert client_for(alice).get("/switch-company/?company=acme").status_code == 405
    response = client_for(None).post("/switch-company/", {"company": "acme"})
    assert response.status_code == 302
    assert response.url.startswith("/login/")


# --- Members list on the settings page


def test_settings_page_lists_the_members_with_their_roles(personas):
    response = client_for(personas["finance"]).get("/c/acme/settings/")
    members = response.context["members"]
    assert [(m.user.email, m.role) for m in members] == [
        ("alice@acme.test", Role.ADMIN),
        ("fiona@acme.test", Role.FINANCE),
        ("oscar@acme.test", Role.OPS),
    ]
    content = response.content.decode()
    for email, role in [
        ("alice@acme.test", "Admin"),
        ("fiona@acme.test", "Finance"),
        ("oscar@acme.test", "Ops"),
    ]:
        assert f'<td>{email}</td><td><span class="badge">{role}</span></td>' in content
    # Another company's admin is not a member here.
    assert "charlie@globex.test" not in content
