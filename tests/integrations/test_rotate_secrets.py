"""Key rotation (R26): every re-encrypted secret writes one audit row, and a secret that does not
decrypt is named, skipped and reported at the end instead of stopping the run."""

import io
import json

import pytest
from django.core.management import CommandError, call_command

from doow.models import AuditEntry, Company
from integrations import crypto
from integrations.models import Connection
from integrations.services import connection_secret
from openrouter.emulator import Emulator, EmulatorConfig
from tests.support import connect

pytestmark = pytest.mark.django_db

OLD = crypto.generate_key_entry("old")
NEW = crypto.generate_key_entry("new")
LOST = crypto.generate_key_entry("lost")


def pieces(secret: str, size: int = 8):
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


def assert_no_secret_in(text: str, *, keys=(), ciphertexts=()) -> None:
    for key in keys:
        assert not [piece for piece in pieces(key) if piece in text], "a piece of a key leaked"
    for ciphertext in ciphertexts:
        # The base64 body of a ciphertext (after "enc:v1:<key id>:") must not appear either.
        assert ciphertext.split(":")[3][:16] not in text, "a ciphertext leaked"


@pytest.fixture
def three_connections(acme, globex, emulator, settings):
    """Acme, Globex and Initech each connected under the OLD key, in that id order."""
    settings.DOOW_ENCRYPTION_KEYS = OLD
    initech = Company.objects.create(name="Initech", slug="initech")
    emulators = [emulator, Emulator(EmulatorConfig(seed=5, keys=3)), Emulator(EmulatorConfig(seed=9, keys=3))]
    connections = [
        connect(company, em) for company, em in zip((acme, globex, initech), emulators, strict=True)
    ]
    return connections, [em.management_key for em in emulators]


def rotated_rows():
    return AuditEntry.objects.filter(action="connection.secret_rotated").order_by("pk")


def test_rotation_writes_one_audit_row_per_re_encrypted_secret(three_connections, settings):
    connections, keys = three_connections
    old_ciphertexts = [c.secret for c in connections]
    settings.DOOW_ENCRYPTION_KEYS = f"{NEW},{OLD}"

    call_command("rotate_encryption_keys", stdout=io.StringIO())

    rows = list(rotated_rows())
    assert len(rows) == 3
    for row, connection in zip(rows, connections, strict=True):
        connection.refresh_from_db()
        assert row.company_id == connection.company_id
        assert row.target == f"openrouter:{connection.pk}"
        assert row.actor is None  # the CLI has no user
        assert row.ip_address is None
        assert row.detail == {"from_key_id": "old", "to_key_id": "new"}
        assert_no_secret_in(
            json.dumps(row.detail) + row.target,
            keys=keys,
            ciphertexts=old_ciphertexts + [connection.secret],
        )

    # Idempotent: a second run re-encrypts nothing and so writes no further row.
    call_command("rotate_encryption_keys", stdout=io.StringIO())
    assert rotated_rows().count() == 3


def test_rotation_continues_past_a_secret_that_does_not_decrypt_and_names_it(three_connections, settings):
    connections, keys = three_connections
    acme_conn, broken, initech_conn = connections
    # The middle connection's secret was encrypted under a key since dropped from the ring.
    settings.DOOW_ENCRYPTION_KEYS = LOST
    Connection.objects.filter(pk=broken.pk).update(
        secret=crypto.encrypt(keys[1], context=broken.secret_context)
    )
    broken.refresh_from_db()
    broken_ciphertext = broken.secret
    settings.DOOW_ENCRYPTION_KEYS = f"{NEW},{OLD}"
    out, err = io.StringIO(), io.StringIO()

    with pytest.raises(
        CommandError, match=rf"1 stored secret\(s\) do not decrypt.*connection id\(s\) {broken.pk}\b"
    ):
        call_command("rotate_encryption_keys", stdout=out, stderr=err)

    assert f"Connection {broken.pk} (company globex)" in err.getvalue()
    assert "'lost'" in err.getvalue()  # which key id is missing helps the operator; it is no secret
    assert (
        "Re-encrypted 2 secret(s); 0 already used the primary key. 1 could not be decrypted" in out.getvalue()
    )
    assert_no_secret_in(out.getvalue() + err.getvalue(), keys=keys, ciphertexts=[broken_ciphertext])

    # The healthy connections on either side of it were still rotated and audited.
    for connection, key in ((acme_conn, keys[0]), (initech_conn, keys[2])):
        connection.refresh_from_db()
        assert connection.secret.startswith("enc:v1:new:")
        assert connection_secret(connection) == key
    assert [row.target for row in rotated_rows()] == [
        f"openrouter:{acme_conn.pk}",
        f"openrouter:{initech_conn.pk}",
    ]
    # The failing one is left exactly as it was and gets no audit row.
    broken.refresh_from_db()
    assert broken.secret == broken_ciphertext
    assert not rotated_rows().filter(company__slug="globex").exists()


def test_a_key_of_the_primary_id_with_other_bytes_is_reported_not_counted_current(
    three_connections, settings
):
    """A mistyped ring that keeps the id: the secrets under it do not decrypt, and rotation says so."""
    settings.DOOW_ENCRYPTION_KEYS = crypto.generate_key_entry("old")  # same id, other key bytes

    with pytest.raises(CommandError, match=r"3 stored secret\(s\) do not decrypt"):
        call_command("rotate_encryption_keys", stdout=io.StringIO(), stderr=io.StringIO())


def test_the_key_ring_check_warns_of_one_bad_secret_and_stops_commands_only_when_none_decrypts(
    three_connections, settings
):
    from django.core.checks import run_checks

    connections, keys = three_connections
    settings.DOOW_ENCRYPTION_KEYS = LOST
    broken = connections[1]
    Connection.objects.filter(pk=broken.pk).update(
        secret=crypto.encrypt(keys[1], context=broken.secret_context)
    )
    settings.DOOW_ENCRYPTION_KEYS = OLD

    found = {message.id: message.msg for message in run_checks() if message.id.startswith("integrations.")}
    assert found == {
        "integrations.W001": f"Connection {broken.pk}: " + found["integrations.W001"].split(": ", 1)[1]
    }

    settings.DOOW_ENCRYPTION_KEYS = NEW  # a deploy that lost both keys in use: nothing decrypts
    ids = [message.id for message in run_checks() if message.id.startswith("integrations.")]
    assert ids == ["integrations.E001"] * 3  # each secret named once
    # The repair command still runs under the error, and names what it cannot decrypt.
    with pytest.raises(CommandError, match=r"3 stored secret\(s\) do not decrypt"):
        call_command("rotate_encryption_keys", stdout=io.StringIO(), stderr=io.StringIO())
