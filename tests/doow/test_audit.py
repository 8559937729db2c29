"""Audit rows, and the usage rows reports are built from, are read-only in the Django admin, for
superusers too (R26): the admin shows them but offers no add, change or delete, bulk delete included."""

import pytest
from django.urls import reverse

from doow.models import AuditEntry, User
from doow.services import audit_record
from tests.conftest import PASSWORD, client_for
from tests.support import connect, sync
from usage.models import UsageDaily

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser(db) -> User:
    return User.objects.create_superuser(email="root@doow.test", password=PASSWORD)


@pytest.fixture
def entry(acme, alice) -> AuditEntry:
    return audit_record(
        company=acme,
        action="connection.connected",
        actor=alice,
        target="openrouter:1",
        detail={"name": "Prod"},
    )


def assert_no_bulk_delete(client, changelist_url: str, pks: list[int]) -> None:
    page = client.get(changelist_url)
    assert page.status_code == 200
    action_form = page.context.get("action_form")
    choices = [name for name, _label in action_form.fields["action"].choices] if action_form else []
    assert "delete_selected" not in choices
    # Posting the action anyway (a forged form) deletes nothing.
    response = client.post(
        changelist_url, {"action": "delete_selected", "_selected_action": pks, "index": 0, "post": "yes"}
    )
    assert response.status_code in (200, 302, 403)


# --- Audit entries


def test_superuser_sees_audit_rows_in_the_admin(superuser, entry):
    client = client_for(superuser)
    changelist = client.get(reverse("admin:doow_auditentry_changelist"))
    assert changelist.status_code == 200
    assert "connection.connected" in changelist.content.decode()

    change = client.get(reverse("admin:doow_auditentry_change", args=[entry.pk]))
    assert change.status_code == 200
    body = change.content.decode()
    assert "openrouter:1" in body
    assert 'name="_save"' not in body  # shown read-only, nothing to save


def test_superuser_cannot_add_change_or_delete_audit_rows(superuser, entry, alice):
    client = client_for(superuser)
    add_url = reverse("admin:doow_auditentry_add")
    assert client.get(add_url).status_code == 403
    assert client.post(add_url, {"company": entry.company_id, "action": "forged"}).status_code == 403

    change_url = reverse("admin:doow_auditentry_change", args=[entry.pk])
    response = client.post(
        change_url,
        {"company": entry.company_id, "actor": alice.pk, "action": "forged", "target": "x", "detail": "{}"},
    )
    assert response.status_code == 403

    delete_url = reverse("admin:doow_auditentry_delete", args=[entry.pk])
    assert client.get(delete_url).status_code == 403
    assert client.post(delete_url, {"post": "yes"}).status_code == 403

    entry.refresh_from_db()
    assert (entry.action, entry.target) == ("connection.connected", "openrouter:1")
    assert AuditEntry.objects.count() == 1


def test_audit_rows_cannot_be_deleted_with_the_changelist_bulk_action(superuser, entry):
    assert_no_bulk_delete(client_for(superuser), reverse("admin:doow_auditentry_changelist"), [entry.pk])
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


# --- Usage rows: the summaries reports read are kept in step by syncs only


@pytest.fixture
def usage_rows(acme, emulator):
    connection = connect(acme, emulator)
    sync(connection, emulator)
    pks = list(UsageDaily.objects.filter(connection=connection).values_list("pk", flat=True)[:3])
    assert pks
    return pks


def test_superuser_sees_but_cannot_add_change_or_delete_usage_rows(superuser, usage_rows):
    client = client_for(superuser)
    total = UsageDaily.objects.count()
    assert client.get(reverse("admin:usage_usagedaily_changelist")).status_code == 200
    change_url = reverse("admin:usage_usagedaily_change", args=[usage_rows[0]])
    page = client.get(change_url)
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert client.post(change_url, {"requests": 0}).status_code == 403

    assert client.get(reverse("admin:usage_usagedaily_add")).status_code == 403

    delete_url = reverse("admin:usage_usagedaily_delete", args=[usage_rows[0]])
    assert client.get(delete_url).status_code == 403
    assert client.post(delete_url, {"post": "yes"}).status_code == 403
    assert UsageDaily.objects.count() == total


def test_usage_rows_cannot_be_deleted_with_the_changelist_bulk_action(superuser, usage_rows):
    total = UsageDaily.objects.count()
    assert_no_bulk_delete(client_for(superuser), reverse("admin:usage_usagedaily_changelist"), usage_rows)
    assert UsageDaily.objects.count() == total


def test_usage_summaries_are_not_editable_in_the_admin(superuser, rf):
    from django.contrib import admin

    from usage.models import UsageDailyByKey, UsageDailyByModel

    request = rf.get("/admin/")
    request.user = superuser
    for model in (UsageDailyByModel, UsageDailyByKey):
        registered = admin.site._registry.get(model)
        assert registered is None or not (
            registered.has_add_permission(request)
            or registered.has_change_permission(request)
            or registered.has_delete_permission(request)
        )


# --- Synced data and the ops log

# What a superuser may still delete in the admin: people and companies (offboarding), and axes'
# login-attempt records (deleting them lifts a lockout). Everything else is written by syncs or is a log.
DELETABLE_IN_ADMIN = {"auth.Group", "doow.User", "doow.Company", "doow.Membership"}


def test_synced_data_connections_and_the_ops_log_cannot_be_deleted_in_the_admin(superuser, rf):
    from django.contrib import admin

    request = rf.get("/admin/")
    request.user = superuser
    deletable = {
        model._meta.label
        for model, model_admin in admin.site._registry.items()
        if model_admin.has_delete_permission(request) and model._meta.app_label != "axes"
    }
    assert deletable == DELETABLE_IN_ADMIN


def test_a_connection_is_not_deleted_from_its_admin_page(superuser, acme, emulator):
    from integrations.models import Connection

    connection = connect(acme, emulator)
    sync(connection, emulator)
    client = client_for(superuser)
    response = client.post(
        reverse("admin:integrations_connection_delete", args=[connection.pk]), {"post": "yes"}
    )
    assert response.status_code == 403
    assert Connection.objects.filter(pk=connection.pk).exists()
    assert UsageDaily.objects.filter(connection=connection).exists()
