"""A connection is only ever found within the company a request may see, whether a view reads the
whole row (connection_get) or only its id (connection_id_get, for downloads)."""

import pytest
from django.http import Http404

from integrations.models import Connection
from integrations.selectors import connection_get, connection_id_get


@pytest.mark.django_db
def test_both_lookups_find_the_companys_own_connection_and_nothing_else(acme, globex):
    own = Connection.objects.create(company=acme, provider="openrouter", name="Prod")
    other = Connection.objects.create(company=globex, provider="openrouter", name="Theirs")
    assert connection_get(company=acme, connection_id=own.pk) == own
    assert connection_id_get(company=acme, connection_id=own.pk) == own.pk
    for connection_id in (other.pk, own.pk + other.pk + 1000, 2**63, 10**30):
        with pytest.raises(Http404):
            connection_get(company=acme, connection_id=connection_id)
        with pytest.raises(Http404):
            connection_id_get(company=acme, connection_id=connection_id)
