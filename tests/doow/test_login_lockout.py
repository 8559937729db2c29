"""Login lockout (R25) and the client's address behind Doow's proxies (R25, R26).

After DOOW_LOGIN_FAILURE_LIMIT failed logins from one client address, logging in from it is refused,
right password or not, until DOOW_LOGIN_COOLOFF_MINUTES have passed since its last attempt. The address
is the one Doow's trusted proxies vouch for (DOOW_TRUSTED_PROXY_COUNT), never one the client wrote into
X-Forwarded-For itself; audit rows record the same address.
"""

import io
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import SESSION_KEY
from django.core.management import call_command
from django.db.models import F
from django.urls import reverse

from doow.client_ip import client_ip
from doow.models import AuditEntry
from doow.services import audit_record
from tests.conftest import PASSWORD, client_for
from tests.support import connect

pytestmark = pytest.mark.django_db

LIMIT = 5
COOL_OFF = timedelta(minutes=15)
PROXY = "10.0.0.9"  # the reverse proxy's own address: REMOTE_ADDR of every proxied request
LOCKED_OUT = b"Too many failed log-ins"


@pytest.fixture(autouse=True)
def _lockout_settings(settings):
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.AXES_COOLOFF_TIME = COOL_OFF
    settings.DOOW_TRUSTED_PROXY_COUNT = 0


def log_in(client, email: str = "alice@acme.test", password: str = PASSWORD, **headers):
    return client.post("/login/", {"username": email, "password": password}, **headers)


def fail(client, times: int, email: str = "alice@acme.test", **headers) -> list:
    return [log_in(client, email, "wrong-password", **headers) for _ in range(times)]


def assert_locked_out(client, response) -> None:
    assert response.status_code == 429
    assert LOCKED_OUT in response.content
    assert f"After {LIMIT} failed attempts".encode() in response.content
    assert b"paused for 15 minutes" in response.content
    assert SESSION_KEY not in client.session


def assert_logged_in(client, response, user) -> None:
    assert response.status_code == 302, response.content.decode()[:500]
    assert client.session[SESSION_KEY] == str(user.pk)


def turn_clock(by: timedelta) -> None:
    """As if `by` had passed since every recorded failure."""
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - by)


# --- The lockout


def test_failures_below_the_limit_only_show_the_usual_error(alice):
    client = client_for(None, REMOTE_ADDR="198.51.100.7")
    for response in fail(client, LIMIT - 1):
        assert response.status_code == 200
        assert b"did not match" in response.content
    assert_logged_in(client, log_in(client), alice)


def test_after_the_limit_even_the_right_password_is_refused(alice):
    client = client_for(None, REMOTE_ADDR="198.51.100.7")
    *_, last = fail(client, LIMIT)
    assert_locked_out(client, last)

    response = log_in(client)
    assert_locked_out(client, response)
    assert b"did not match" not in response.content
    # The login page itself still shows, so the user can try again after the cool-off.
    assert client.get("/login/").status_code == 200


def test_the_right_password_works_again_after_the_cool_off(alice):
    client = client_for(None, REMOTE_ADDR="198.51.100.7")
    fail(client, LIMIT)

    turn_clock(COOL_OFF - timedelta(minutes=1))
    assert_locked_out(client, log_in(client))

    # That refused attempt restarted the cool-off: a minute more is not enough any more.
    turn_clock(timedelta(minutes=1, seconds=1))
    assert_locked_out(client, log_in(client))

    turn_clock(COOL_OFF + timedelta(seconds=1))
    assert_logged_in(client, log_in(client), alice)


def test_another_client_address_is_not_locked_out(alice):
    attacker = client_for(None, REMOTE_ADDR="198.51.100.7")
    fail(attacker, LIMIT)
    assert_locked_out(attacker, log_in(attacker))

    colleague = client_for(None, REMOTE_ADDR="198.51.100.8")
    assert_logged_in(colleague, log_in(colleague), alice)


def test_the_lockout_covers_every_account_tried_from_that_address(alice, fiona):
    """Keyed on the address alone: one try at each of many accounts counts like many at one."""
    client = client_for(None, REMOTE_ADDR="198.51.100.7")
    for number in range(LIMIT):
        log_in(client, f"user{number}@acme.test", "Summer2026!")
    assert_locked_out(client, log_in(client, "fiona@acme.test"))


def test_a_successful_login_does_not_clear_the_failures_of_its_address(alice, charlie):
    """Otherwise anyone holding one account could log in with it between guesses at another."""
    client = client_for(None, REMOTE_ADDR="198.51.100.7")
    fail(client, LIMIT - 1)
    assert_logged_in(client, log_in(client, "charlie@globex.test"), charlie)
    client.post("/logout/")

    assert_locked_out(client, fail(client, 1)[0])


# --- Behind a proxy


def test_behind_a_proxy_clients_are_counted_by_the_address_the_proxy_appended(settings, alice):
    settings.DOOW_TRUSTED_PROXY_COUNT = 1
    attacker = client_for(None, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.66")
    fail(attacker, LIMIT)
    assert_locked_out(attacker, log_in(attacker))
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"203.0.113.66"}

    # Another client reaching Doow through the same proxy is not locked out.
    colleague = client_for(None, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.67")
    assert_logged_in(colleague, log_in(colleague), alice)


def test_behind_a_proxy_prepending_fake_addresses_does_not_dodge_the_lockout(settings, alice):
    settings.DOOW_TRUSTED_PROXY_COUNT = 1
    # The attacker writes a new X-Forwarded-For each time; the proxy appends the real address.
    for number in range(LIMIT):
        log_in(
            client_for(None, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=f"192.0.2.{number}, 203.0.113.66"),
            password="wrong-password",
        )
    client = client_for(None, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="192.0.2.200, 203.0.113.66")
    assert_locked_out(client, log_in(client))


def test_without_trusted_proxies_x_forwarded_for_is_ignored(alice):
    # Doow reached directly (DOOW_TRUSTED_PROXY_COUNT=0): whatever X-Forwarded-For says, the client is
    # the connection's peer, so a new header each time does not dodge the lockout...
    for number in range(LIMIT):
        log_in(
            client_for(None, REMOTE_ADDR="198.51.100.7", HTTP_X_FORWARDED_FOR=f"192.0.2.{number}"),
            password="wrong-password",
        )
    client = client_for(None, REMOTE_ADDR="198.51.100.7", HTTP_X_FORWARDED_FOR="192.0.2.200")
    assert_locked_out(client, log_in(client))
    # ...nor does claiming another client's address lock that client out.
    other = client_for(None, REMOTE_ADDR="198.51.100.8", HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert_logged_in(other, log_in(other), alice)


# --- client_ip on its own


@pytest.mark.parametrize(
    ("proxies", "forwarded_for", "expected"),
    [
        (0, None, PROXY),
        (0, "203.0.113.66", PROXY),  # nobody vouches for the header: ignored
        (1, "203.0.113.66", "203.0.113.66"),
        (1, "192.0.2.1, 203.0.113.66", "203.0.113.66"),  # the client's own entries on the left
        (1, " 192.0.2.1 ,203.0.113.66 ", "203.0.113.66"),
        (2, "192.0.2.1, 203.0.113.66, 10.0.0.5", "203.0.113.66"),  # the second proxy's entry is the first's
        (1, None, PROXY),  # reached without passing the proxy
        (2, "203.0.113.66", PROXY),  # fewer entries than proxies: no guess
        (1, "192.0.2.1, unknown", PROXY),  # garbled where the client should be
        (1, "203.0.113.66:51234", "203.0.113.66"),  # some proxies append the port
        (1, "[2001:DB8::1]:443", "2001:db8::1"),
        (1, "2001:db8:0:0::1", "2001:db8::1"),
    ],
)
def test_client_ip(settings, rf, proxies, forwarded_for, expected):
    settings.DOOW_TRUSTED_PROXY_COUNT = proxies
    headers = {"REMOTE_ADDR": PROXY}
    if forwarded_for is not None:
        headers["HTTP_X_FORWARDED_FOR"] = forwarded_for
    assert client_ip(rf.get("/", **headers)) == expected


# --- Audit rows (R26)


@pytest.mark.parametrize(("proxies", "expected"), [(0, PROXY), (1, "203.0.113.66")])
def test_audit_record_stores_the_client_address(settings, rf, acme, alice, proxies, expected):
    settings.DOOW_TRUSTED_PROXY_COUNT = proxies
    request = rf.post("/", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="192.0.2.1, 203.0.113.66")
    request.user = alice
    entry = audit_record(company=acme, action="connection.connected", request=request)
    entry.refresh_from_db()
    assert entry.ip_address == expected
    assert entry.actor == alice


def test_an_audited_action_behind_the_proxy_records_the_client_address(settings, acme, alice, emulator):
    settings.DOOW_TRUSTED_PROXY_COUNT = 1
    connection = connect(acme, emulator)
    client = client_for(alice, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="192.0.2.1, 203.0.113.66")
    client.post(reverse("integrations:disconnect", args=["acme", connection.pk]), {"confirm": "on"})
    entry = AuditEntry.objects.get(action="connection.disconnected")
    assert (entry.actor, entry.ip_address) == (alice, "203.0.113.66")


def test_an_operator_can_lift_a_lockout_before_the_cool_off_ends(alice):
    client = client_for(None, REMOTE_ADDR="198.51.100.7")
    fail(client, LIMIT)
    call_command("axes_reset_ip", "198.51.100.7", stdout=io.StringIO())
    assert_logged_in(client, log_in(client), alice)
