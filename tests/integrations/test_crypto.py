import pytest
from django.core.management import call_command
from django.db import connection as db
from hypothesis import given
from hypothesis import strategies as st

from integrations import crypto
from integrations.models import Connection, ConnectionState, SyncEvent
from integrations.selectors import key_ring_problems
from integrations.services import connection_secret
from tests.support import connect, sync

OLD = crypto.generate_key_entry("old")
NEW = crypto.generate_key_entry("new")


def pieces(secret: str, size: int = 8):
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


def raw_secret(connection_id: int) -> str:
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT secret, secret_last4 FROM integrations_connection WHERE id = %s", [connection_id]
        )
        return cursor.fetchone()


def test_round_trip_and_format(settings):
    settings.DOOW_ENCRYPTION_KEYS = f"{NEW},{OLD}"
    token = crypto.encrypt("sk-or-v1-" + "ab" * 32, context="doow:1:2:openrouter")
    assert token.startswith("enc:v1:new:")
    assert crypto.decrypt(token, context="doow:1:2:openrouter") == "sk-or-v1-" + "ab" * 32


def test_a_ciphertext_does_not_decrypt_in_another_context(settings):
    settings.DOOW_ENCRYPTION_KEYS = NEW
    token = crypto.encrypt("secret-value", context="doow:1:2:openrouter")
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(token, context="doow:9:2:openrouter")


def test_tampered_or_foreign_values_fail_closed(settings):
    settings.DOOW_ENCRYPTION_KEYS = NEW
    token = crypto.encrypt("secret-value", context="c")
    for bad in [token[:-4] + "AAAA", "sk-or-v1-plaintext", "enc:v1:new:!!!", "enc:v9:new:abc", ""]:
        with pytest.raises(crypto.DecryptionError):
            crypto.decrypt(bad, context="c")


def test_a_key_missing_from_the_ring_fails_closed(settings):
    settings.DOOW_ENCRYPTION_KEYS = OLD
    token = crypto.encrypt("secret-value", context="c")
    settings.DOOW_ENCRYPTION_KEYS = NEW
    with pytest.raises(crypto.DecryptionError, match="not in the key ring"):
        crypto.decrypt(token, context="c")


@given(st.text(min_size=0, max_size=4))
def test_mask_shows_only_the_last_four(last4):
    masked = crypto.mask(last4)
    assert masked == ("sk-or-…" + last4 if last4 else "")


@pytest.mark.django_db
def test_stored_key_is_ciphertext_without_any_eight_character_piece(acme, emulator):
    connection = connect(acme, emulator)
    secret, last4 = raw_secret(connection.pk)
    assert secret.startswith("enc:v1:")
    assert not any(piece in secret for piece in pieces(emulator.management_key))
    assert last4 == emulator.management_key[-4:]
    assert connection_secret(connection) == emulator.management_key


@pytest.mark.django_db
def test_wrong_key_ring_makes_no_request_and_needs_attention(acme, emulator, settings):
    connection = connect(acme, emulator)
    settings.DOOW_ENCRYPTION_KEYS = crypto.generate_key_entry("other")
    emulator.request_log.clear()

    result = sync(connection, emulator)

    assert result.status == "failed"
    assert len(emulator.request_log) == 0
    connection.refresh_from_db()
    assert connection.state == ConnectionState.NEEDS_ATTENTION
    assert SyncEvent.objects.filter(connection=connection, code="decrypt_failed").exists()
    # The ciphertext is left as it was: never re-saved or used as the key.
    assert raw_secret(connection.pk)[0].startswith("enc:v1:")
    assert key_ring_problems()[0]


@pytest.mark.django_db
def test_ciphertext_copied_to_another_company_does_not_decrypt(acme, globex, emulator):
    from openrouter.emulator import Emulator, EmulatorConfig

    ours = connect(acme, emulator)
    other_emulator = Emulator(EmulatorConfig(seed=99, keys=3))
    theirs = connect(globex, other_emulator)
    Connection.objects.filter(pk=theirs.pk).update(secret=ours.secret)
    theirs.refresh_from_db()
    other_emulator.request_log.clear()

    with pytest.raises(crypto.DecryptionError):
        connection_secret(theirs)
    assert sync(theirs, other_emulator).status == "failed"
    assert len(other_emulator.request_log) == 0


@pytest.mark.django_db
def test_rotation_round_trip_is_idempotent(acme, globex, emulator, settings, capsys):
    from openrouter.emulator import Emulator, EmulatorConfig

    settings.DOOW_ENCRYPTION_KEYS = OLD
    first = connect(acme, emulator)
    second_emulator = Emulator(EmulatorConfig(seed=5, keys=3))
    second = connect(globex, second_emulator)

    settings.DOOW_ENCRYPTION_KEYS = f"{NEW},{OLD}"
    call_command("rotate_encryption_keys")
    assert "Re-encrypted 2 secret(s); 0 already" in capsys.readouterr().out
    call_command("rotate_encryption_keys")
    assert "Re-encrypted 0 secret(s); 2 already" in capsys.readouterr().out

    settings.DOOW_ENCRYPTION_KEYS = NEW
    for connection, expected in ((first, emulator.management_key), (second, second_emulator.management_key)):
        connection.refresh_from_db()
        assert connection.secret.startswith("enc:v1:new:")
        assert connection_secret(connection) == expected
    assert Connection.objects.count() == 2
    assert key_ring_problems() == ([], False)


@pytest.mark.django_db
def test_start_up_canary_reports_a_key_ring_that_cannot_decrypt(acme, emulator, settings):
    from django.core.checks import run_checks

    connect(acme, emulator)
    assert not [e for e in run_checks() if e.id == "integrations.E001"]
    settings.DOOW_ENCRYPTION_KEYS = crypto.generate_key_entry("fresh")
    assert [e for e in run_checks() if e.id == "integrations.E001"]


@pytest.mark.django_db
def test_workers_report_a_key_ring_that_cannot_decrypt_at_start(acme, emulator, settings, caplog):
    from celery.signals import worker_ready

    connect(acme, emulator)
    settings.DOOW_ENCRYPTION_KEYS = crypto.generate_key_entry("fresh")
    worker_ready.send(sender=None)
    assert any("Key ring canary" in record.getMessage() for record in caplog.records)


@pytest.mark.django_db
def test_every_page_renders_when_no_stored_key_decrypts(acme, alice, emulator, settings):
    """Pages never decrypt: with a key ring that opens nothing, every company page still renders
    (the key shown masked), and only a sync finds out."""
    from integrations.models import SyncRun
    from tests.conftest import client_for
    from tests.url_walker import company_routes

    connection = connect(acme, emulator)
    sync(connection, emulator)
    settings.DOOW_ENCRYPTION_KEYS = crypto.generate_key_entry("other")
    values = {"connection_id": connection.pk, "run_id": SyncRun.objects.first().pk, "fmt": "csv"}
    client = client_for(alice)
    rendered = 0
    for route in company_routes():
        response = client.get(route.url("acme", **values))
        assert response.status_code in (200, 302, 404, 405), route
        rendered += response.status_code == 200
    assert rendered > 5
    assert f"sk-or-…{emulator.management_key[-4:]}" in client.get("/c/acme/settings/").content.decode()
