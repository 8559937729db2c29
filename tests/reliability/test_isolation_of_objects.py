"""Tenant isolation with real objects behind every id: another company's admin, using his own
connection or Acme's, reaches none of Acme's budgets, alert rules, alerts or runs (the walk over
every URL with an id fills ids that match no row; this one fills them with Acme's rows)."""

import pytest
from django.forms.models import model_to_dict

from openrouter.emulator import Emulator, EmulatorConfig
from tests.conftest import client_for
from tests.support import connect, objects_behind_every_id
from tests.url_walker import company_routes
from usage.models import Alert, AlertState, Budget

pytestmark = pytest.mark.django_db

# What a real form would send, so that a view that failed to scope its lookup would act.
ACTION_DATA = {
    "action": "resolve",
    "enabled": "",
    "threshold": "1",
    "confirm": "on",
    "notify_roles": ["admin"],
}


def test_another_companys_admin_reaches_none_of_acmes_objects_by_id(acme, globex, charlie, emulator):
    acme_objects = objects_behind_every_id(acme, emulator)
    acme_connection, budget, rule, alert = (
        acme_objects[name] for name in ("connection_id", "budget_id", "rule_id", "alert_id")
    )
    globex_connection = connect(globex, Emulator(EmulatorConfig(seed=11, keys=2)))
    acme_ids = {name: obj.pk for name, obj in acme_objects.items() if name != "connection_id"}
    before = {obj: model_to_dict(obj) for obj in (budget, rule, alert)}
    client = client_for(charlie)
    routes = [route for route in company_routes() if set(route.dummy_kwargs) & set(acme_ids)]
    assert {"budget_id", "rule_id", "alert_id", "run_id"} <= {name for r in routes for name in r.dummy_kwargs}

    for route in routes:
        for connection in (globex_connection, acme_connection):
            path = route.url("globex", **acme_ids, connection_id=connection.pk)
            get, post = client.get(path).status_code, client.post(path, ACTION_DATA).status_code
            # 405 only for the method a view does not take; the other must be 404.
            assert sorted((get, post)) in ([404, 404], [404, 405]), (path, get, post)

    for obj, fields in before.items():
        obj.refresh_from_db()
        assert model_to_dict(obj) == fields
    assert Budget.objects.filter(pk=budget.pk).exists()
    assert Alert.objects.get(pk=alert.pk).state == AlertState.OPEN
