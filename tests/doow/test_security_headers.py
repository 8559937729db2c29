"""Security headers every response carries."""

import pytest

from tests.conftest import PASSWORD, client_for


@pytest.mark.parametrize("path", ["/login/", "/c/acme/settings/"])
def test_responses_carry_the_security_headers(alice, path):
    response = client_for(alice if path.startswith("/c/") else None).get(path)
    assert response.status_code == 200
    csp = response.headers["Content-Security-Policy"]
    for directive in (
        "default-src 'self'",
        "script-src 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
    ):
        assert directive in csp
    # No inline scripts or styles: 'unsafe-inline' would undo most of what the policy is for.
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_error_pages_carry_the_security_headers_too(charlie, acme):
    response = client_for(charlie).get("/c/acme/settings/")
    assert response.status_code == 404
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_session_and_csrf_cookies_are_not_readable_by_scripts_and_stay_same_site(alice):
    client = client_for(None)
    client.get("/login/")
    client.post("/login/", {"username": "alice@acme.test", "password": PASSWORD})
    session_cookie = client.cookies["sessionid"]
    assert session_cookie["httponly"] is True
    assert session_cookie["samesite"] == "Lax"


def test_no_company_page_or_download_may_be_cached(personas, acme, emulator):
    """Every page under /c/<company>/ shows one tenant's data: a shared proxy or a browser's disk
    cache must not keep it."""
    from integrations.models import SyncRun
    from tests.support import connect, sync
    from tests.url_walker import company_routes

    connection = connect(acme, emulator)
    sync(connection, emulator)
    values = {"connection_id": connection.pk, "run_id": SyncRun.objects.first().pk, "fmt": "csv"}
    client = client_for(personas["admin"])
    answered = []
    for route in company_routes():
        path = route.url("acme", **values)
        response = client.get(path)
        if response.status_code == 200:
            answered.append(path)
            assert "no-store" in response.headers.get("Cache-Control", ""), path
            assert "private" in response.headers["Cache-Control"], path
    assert any(path.endswith("export.csv") or "export" in path for path in answered)
    assert len(answered) > 5
