"""Encrypting stored credentials: a thin layer on `cryptography`'s AES-GCM.

Why not a ready-made encrypted-field library: the common ones fail open (a value that does not
decrypt is returned as if it were the secret) or derive the key from SECRET_KEY. Here:
- the key ring comes from DOOW_ENCRYPTION_KEYS, "id:base64key,id:base64key"; the first encrypts,
  all decrypt, so keys rotate without downtime;
- a ciphertext is "enc:v1:<key id>:<base64(nonce + ciphertext)>", and the company, connection and
  provider it belongs to are authenticated as associated data, so a ciphertext copied to another
  row does not decrypt;
- anything that does not decrypt raises DecryptionError. Callers never fall back to the raw value.
"""

import base64
import binascii
import os
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.views.decorators.debug import sensitive_variables

PREFIX = "enc"
VERSION = "v1"
NONCE_BYTES = 12


class DecryptionError(Exception):
    """A stored secret could not be decrypted with the configured key ring. Never carries the secret."""


@dataclass(frozen=True)
class KeyRing:
    primary_id: str
    keys: dict[str, bytes]


def generate_key_entry(key_id: str | None = None) -> str:
    key_id = key_id or base64.b32encode(os.urandom(5)).decode().lower()
    return f"{key_id}:{base64.urlsafe_b64encode(AESGCM.generate_key(bit_length=256)).decode()}"


@lru_cache(maxsize=8)
def _parse_key_ring(value: str) -> KeyRing:
    keys: dict[str, bytes] = {}
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        key_id, sep, encoded = entry.partition(":")
        if not sep or not key_id or not key_id.isalnum():
            raise ImproperlyConfigured("DOOW_ENCRYPTION_KEYS entries must look like 'id:base64key'.")
        try:
            key = base64.urlsafe_b64decode(encoded.encode())
        except (binascii.Error, ValueError):
            raise ImproperlyConfigured(f"DOOW_ENCRYPTION_KEYS key {key_id!r} is not valid base64.") from None
        if len(key) != 32:
            raise ImproperlyConfigured(f"DOOW_ENCRYPTION_KEYS key {key_id!r} must be 32 bytes (AES-256).")
        if key_id in keys:
            raise ImproperlyConfigured(f"DOOW_ENCRYPTION_KEYS lists key id {key_id!r} twice.")
        keys[key_id] = key
    if not keys:
        raise ImproperlyConfigured("DOOW_ENCRYPTION_KEYS holds no key.")
    return KeyRing(primary_id=next(iter(keys)), keys=keys)


def key_ring() -> KeyRing:
    return _parse_key_ring(settings.DOOW_ENCRYPTION_KEYS or "")


@sensitive_variables()
def encrypt(plaintext: str, *, context: str) -> str:
    ring = key_ring()
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(ring.keys[ring.primary_id]).encrypt(nonce, plaintext.encode(), context.encode())
    return f"{PREFIX}:{VERSION}:{ring.primary_id}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"


def key_id_of(token: str) -> str:
    parts = token.split(":")
    if len(parts) != 4 or parts[0] != PREFIX or parts[1] != VERSION:
        raise DecryptionError("The stored secret is not in a format this version of Doow reads.")
    return parts[2]


@sensitive_variables()
def decrypt(token: str, *, context: str) -> str:
    key_id = key_id_of(token)
    key = key_ring().keys.get(key_id)
    if key is None:
        raise DecryptionError(
            f"The stored secret was encrypted with key {key_id!r}, which is not in the key ring."
        )
    try:
        raw = base64.urlsafe_b64decode(token.split(":")[3].encode())
        return AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode()).decode()
    except (InvalidTag, ValueError, binascii.Error):
        raise DecryptionError("The stored secret does not decrypt for this connection.") from None


def needs_rotation(token: str) -> bool:
    return key_id_of(token) != key_ring().primary_id


def mask(last4: str) -> str:
    return f"sk-or-…{last4}" if last4 else ""
