"""The people and reconciliation pages read the usage summaries, like the detail page, and cache
their sums under the connection's data version; their figures stay those of the usage rows."""

from datetime import timedelta
from decimal import Decimal
from unittest import mock

import pytest
from django.db import connection as db
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from openrouter.models import CreditsSnapshot
from tests.conftest import client_for
from tests.support import TODAY, noon

pytestmark = pytest.mark.django_db

PAGES = ["people", "reconciliation"]


@pytest.fixture
def synced(synced_with_people, emulator):
    """A synced connection with two credit snapshots inside the activity window, so the
    reconciliation also compares credits with the activity of each day between them."""
    for days_ago, usage in ((6, Decimal(100)), (2, Decimal(140))):
        CreditsSnapshot.objects.create(
            company_id=synced_with_people.company_id,
            connection=synced_with_people,
            taken_at=noon(emulator.today - timedelta(days=days_ago)),
            total_credits=Decimal(1_000_000),
            total_usage=usage,
        )
    return synced_with_people


def page_url(name, connection, emulator):
    start, end = emulator.truth.activity_window()
    path = reverse(f"openrouter:{name}", args=["acme", connection.pk])
    return f"{path}?range=custom&from={start}&to={end}"


def view(user, url):
    """The page as `user` sees it at noon of the emulator's day, and the SQL it ran."""
    with mock.patch("django.utils.timezone.now", return_value=noon(TODAY)), CaptureQueriesContext(db) as ctx:
        response = client_for(user).get(url)
    assert response.status_code == 200
    return response.content.decode(), [query["sql"] for query in ctx.captured_queries]


def reading(table, queries):
    return [sql for sql in queries if f'FROM "{table}"' in sql]


def test_the_people_page_reads_the_keys_owners_once(alice, synced, emulator):
    _html, queries = view(alice, page_url("people", synced, emulator))

    assert len(reading("openrouter_member", queries)) == 1
    assert len(reading("openrouter_keyowner", queries)) == 1
