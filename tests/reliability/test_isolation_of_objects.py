"""Tenant isolation with real objects behind every id: another company's admin, using his own
connection or Acme's, reaches none of Acme's budgets, alert rules, alerts or runs (the walk over
every URL with an id fills ids that match no row; this one fills them with Acme's rows)."""

import pytest
from django.forms.models import model_to_dict

from integrations.models import SyncRun
from openrouter.alerts import budget_create
from openrouter.emulator import Emulator, EmulatorConfig
from tests.conftest import client_for
from tests.support import connect, sync
from tests.url_walker import company_routes
from usage.models import Alert, AlertRule, AlertState, Budget, BudgetScope

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
    acme_connection = connect(acme, emulator)
    sync(acme_connection, emulator)
    budget = budget_create(
        connection=acme_connection, scope=BudgetScope.CONNECTION, target="", target_label="", monthly_usd=100
    )
    rule = AlertRule.objects.filter(connection=acme_connection).first()
    alert = Alert.objects.create(
        company=acme,
        connection=acme_connection,
        rule=rule,
        kind=rule.kind,
        period="2026-11",
        title="t",
        message="m",
    )
    globex_connection = connect(globex, Emulator(EmulatorConfig(seed=11, keys=2)))
    acme_ids = {
        "budget_id": budget.pk,
        "rule_id": rule.pk,
        "alert_id": alert.pk,
        "run_id": SyncRun.objects.filter(connection=acme_connection).first().pk,
    }
    before = {obj: model_to_dict(obj) for obj in (budget, rule, alert)}
    client = client_for(charlie)
    routes = [route for route in company_routes() if set(route.dummy_kwargs) & set(acme_ids)]
    assert {"budget_id", "rule_id", "alert_id", "run_id"} <= {name for r in routes for name in r.dummy_kwargs}

    for route in routes:
        for connection in (globex_connection, acme_connection):
            kwargs = {**route.dummy_kwargs, **{k: v for k, v in acme_ids.items() if k in route.dummy_kwargs}}
            if "connection_id" in kwargs:
                kwargs["connection_id"] = connection.pk
            path = type(route)(route.route, route.name, route.view, kwargs).url("globex")
            get, post = client.get(path).status_code, client.post(path, ACTION_DATA).status_code
            # 405 only for the method a view does not take; the other must be 404.
            assert sorted((get, post)) in ([404, 404], [404, 405]), (path, get, post)

    for obj, fields in before.items():
        obj.refresh_from_db()
        assert model_to_dict(obj) == fields
    assert Budget.objects.filter(pk=budget.pk).exists()
    assert Alert.objects.get(pk=alert.pk).state == AlertState.OPEN
