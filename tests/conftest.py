"""Personas every test reuses: Alice (admin), Fiona (finance) and Oscar (ops) of Acme; Charlie, the
admin of another company, who must never see Acme's data."""

import pytest
from django.test import Client

from doow.models import Company, Membership, Role, User

PASSWORD = "correct-horse-battery"


def _member(email: str, company: Company, role: str) -> User:
    user = User.objects.create_user(email=email, password=PASSWORD, first_name=email.split("@")[0].title())
    Membership.objects.create(user=user, company=company, role=role)
    return user


@pytest.fixture
def acme(db) -> Company:
    return Company.objects.create(name="Acme Corp", slug="acme")


@pytest.fixture
def globex(db) -> Company:
    return Company.objects.create(name="Globex", slug="globex")


@pytest.fixture
def alice(acme) -> User:
    return _member("alice@acme.test", acme, Role.ADMIN)


@pytest.fixture
def fiona(acme) -> User:
    return _member("fiona@acme.test", acme, Role.FINANCE)


@pytest.fixture
def oscar(acme) -> User:
    return _member("oscar@acme.test", acme, Role.OPS)


@pytest.fixture
def charlie(globex) -> User:
    return _member("charlie@globex.test", globex, Role.ADMIN)


@pytest.fixture
def personas(alice, fiona, oscar, charlie) -> dict[str, User]:
    return {"admin": alice, "finance": fiona, "ops": oscar, "outsider": charlie}


def client_for(user: User | None, **kwargs) -> Client:
    client = Client(**kwargs)
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def as_user():
    return client_for


# --- OpenRouter emulator fixtures


@pytest.fixture(autouse=True)
def _empty_report_cache(settings):
    """Every test starts with an empty in-memory cache, so no cached report of an earlier test can
    answer a later one."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # PBKDF2's deliberate slowness costs a second per persona; tests need no brute-force resistance.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fast_polite_client(settings):
    """No request pacing in tests (the emulator answers at once); keep a few threads to exercise them."""
    settings.OPENROUTER_MAX_REQUESTS_PER_SECOND = 0
    settings.OPENROUTER_CONCURRENCY = 3


@pytest.fixture
def emulator():
    from openrouter.emulator import Emulator, EmulatorConfig

    return Emulator(EmulatorConfig(seed=7, keys=24, today=support.TODAY))


@pytest.fixture
def emulator_server(emulator, settings):
    """The emulator on a real port, with Doow's OPENROUTER_BASE_URL pointing at it."""
    server = emulator.serve()
    settings.OPENROUTER_BASE_URL = server.base_url
    yield server
    server.shutdown()


from tests import support  # noqa: E402


@pytest.fixture
def synced_with_people(acme, emulator, alice, fiona, oscar):
    """Acme's connection after one sync, with its admin, finance and ops members (alert recipients)."""
    connection = support.connect(acme, emulator)
    support.sync(connection, emulator)
    connection.refresh_from_db()
    return connection
