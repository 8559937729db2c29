"""`manage.py seed_demo`: the demo company and its logins, safe to run again, development only."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client, override_settings

from doow.management.commands.seed_demo import DEMO_PASSWORD
from doow.models import Company, Membership, Role, User


def seed_demo() -> str:
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def demo_rows() -> list[tuple]:
    return sorted(
        Membership.objects.filter(company__slug="demo").values_list(
            "company__name", "user__email", "user__first_name", "role", "user_id", "company_id"
        )
    )


@override_settings(DEBUG=True)
def test_seed_demo_creates_the_company_and_one_login_per_role(db):
    output = seed_demo()
    assert [(email, role) for _name, email, _first, role, *_ids in demo_rows()] == [
        ("admin@demo.test", Role.ADMIN),
        ("finance@demo.test", Role.FINANCE),
        ("ops@demo.test", Role.OPS),
    ]
    assert Company.objects.get(slug="demo").name == "Demo Inc"
    assert "admin@demo.test" in output and DEMO_PASSWORD in output


@override_settings(DEBUG=True)
def test_seed_demo_is_idempotent(db):
    seed_demo()
    first = demo_rows()
    counts = (Company.objects.count(), User.objects.count(), Membership.objects.count())
    seed_demo()
    assert demo_rows() == first
    assert (Company.objects.count(), User.objects.count(), Membership.objects.count()) == counts


@override_settings(DEBUG=True)
def test_seed_demo_restores_a_changed_password_and_role(db):
    seed_demo()
    finance = User.objects.get(email="finance@demo.test")
    finance.set_password("something-else")
    finance.save()
    Membership.objects.filter(user=finance).update(role=Role.OPS)
    seed_demo()
    finance.refresh_from_db()
    assert finance.check_password(DEMO_PASSWORD)
    assert Membership.objects.get(user=finance).role == Role.FINANCE


@override_settings(DEBUG=True)
@pytest.mark.parametrize("email", ["admin@demo.test", "finance@demo.test", "ops@demo.test"])
def test_demo_users_can_log_in(db, email):
    seed_demo()
    seed_demo()
    client = Client()
    response = client.post("/login/", {"username": email, "password": DEMO_PASSWORD})
    assert response.status_code == 302
    assert client.get("/").url == "/c/demo/settings/"


@override_settings(DEBUG=False)
def test_seed_demo_refuses_when_debug_is_off(db):
    with pytest.raises(CommandError, match="only runs with DEBUG=true"):
        seed_demo()
    assert not Company.objects.filter(slug="demo").exists()
    assert not User.objects.filter(email__endswith="@demo.test").exists()
