"""A connection is only ever found within the company a request may see: whether a view reads it by
a filter (connection_get) or a connection's page reads it with the membership in one statement
(integrations.access.connection_view, doow.rows.get_one_and_child)."""

import pytest
from django.db import connection as db_connection
from django.http import Http404
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from doow import rows
from doow.models import Membership
from integrations.models import Connection
from integrations.selectors import connection_get
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def own(acme) -> Connection:
    return Connection.objects.create(company=acme, provider="openrouter", name="Prod")


@pytest.fixture
def theirs(globex) -> Connection:
    return Connection.objects.create(company=globex, provider="openrouter", name="Theirs")


def ids_no_acme_connection_has(own, theirs) -> list[int]:
    return [theirs.pk, own.pk + theirs.pk + 1000, 2**63, 10**30]


def test_a_filter_finds_the_companys_own_connection_and_nothing_else(acme, own, theirs):
    assert connection_get(company=acme, connection_id=own.pk) == own
    for connection_id in ids_no_acme_connection_has(own, theirs):
        with pytest.raises(Http404):
            connection_get(company=acme, connection_id=connection_id)


def read(user, slug: str, connection_id, fields=None):
    return rows.get_one_and_child(
        Membership,
        related="company",
        child=Connection,
        child_key="company",
        child_pk=connection_id,
        child_fields=fields,
        user_id=user.pk,
        company__slug=slug,
    )


def test_the_membership_and_the_companys_connection_are_read_in_one_statement(alice, acme, own, theirs):
    with CaptureQueriesContext(db_connection) as queries:
        membership, connection = read(alice, "acme", own.pk)
        company = membership.company
        assert connection.company is company
    assert len(queries) == 1
    assert (membership, company, connection) == (Membership.objects.get(user=alice), acme, own)
    assert {f.attname: getattr(connection, f.attname) for f in Connection._meta.concrete_fields} == {
        f.attname: getattr(own, f.attname) for f in Connection._meta.concrete_fields
    }
    for connection_id in ids_no_acme_connection_has(own, theirs):
        membership, connection = read(alice, "acme", connection_id)
        assert membership == Membership.objects.get(user=alice) and connection is None
    assert read(alice, "globex", theirs.pk) == (None, None)  # not her company: no membership, no row


def test_only_the_fields_asked_for_are_read_and_the_rest_load_when_used(alice, own):
    with CaptureQueriesContext(db_connection) as queries:
        _membership, connection = read(alice, "acme", own.pk, fields=("id",))
    assert len(queries) == 1 and connection.pk == own.pk
    assert connection.get_deferred_fields() >= {"name", "secret", "config"}
    assert connection.name == "Prod"  # loaded on use, as with only()


def test_a_connections_page_is_404_for_another_companys_or_no_connection_and_403_first_for_a_role(
    alice, fiona, own, theirs
):
    admin, finance = client_for(alice), client_for(fiona)
    assert admin.get(reverse("openrouter:reconciliation", args=["acme", own.pk])).status_code == 200
    for connection_id in ids_no_acme_connection_has(own, theirs):
        for name in ("openrouter:reconciliation", "integrations:disconnect-confirm"):
            assert admin.get(reverse(name, args=["acme", connection_id])).status_code == 404
        assert admin.post(reverse("openrouter:key-owner", args=["acme", connection_id])).status_code == 404
        # A role that may not use the page learns nothing about which connections exist.
        confirm = reverse("integrations:disconnect-confirm", args=["acme", connection_id])
        assert finance.get(confirm).status_code == 403
    assert admin.get(reverse("openrouter:reconciliation", args=["globex", theirs.pk])).status_code == 404
