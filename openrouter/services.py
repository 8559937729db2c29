"""The OpenRouter side of connecting: verify a pasted key, then hand it to integrations to store."""

import hmac
import logging
from typing import NamedTuple

from django.views.decorators.debug import sensitive_variables

from doow.models import Company
from integrations import crypto
from integrations.models import Connection, CredentialScope
from integrations.providers import ProviderError, VerifiedCredential
from integrations.selectors import connection_disconnected_for
from integrations.services import (
    CredentialMismatch,
    DuplicateConnection,
    connection_create,
    connection_replace_secret,
)
from openrouter.provider import OpenRouterProvider

logger = logging.getLogger(__name__)


class ConnectError(Exception):
    """Why a key was not connected, in words for the admin. Never contains the key."""


class Connected(NamedTuple):
    connection: Connection
    notice: str  # for the admin: a limited scope, or that an earlier connection was connected again
    again: bool  # an earlier, disconnected connection of the organization goes on (not a new one)
    same_key: bool = False  # the key it already held, pasted again (checked, not rotated)


@sensitive_variables("secret")
def openrouter_connect(
    *, company: Company, secret: str, name: str = "", actor=None, request=None, transport=None
) -> Connected:
    """Verify the key with OpenRouter and store it.

    An account this company connected before and disconnected is connected again in that same
    connection, so its history, budgets and owners go on (a second connection would start again from
    OpenRouter's 30-day window beside them)."""
    secret = secret.strip()
    verified = _verify(secret, company=company, transport=transport)
    earlier = connection_disconnected_for(
        company=company, provider=OpenRouterProvider.key, external_account_id=verified.external_account_id
    )
    if earlier is not None:
        disconnected_on = earlier.disconnected_at
        connection = _store_in(
            earlier,
            secret,
            verified,
            actor=actor,
            request=request,
            name=name.strip()[:120],
            refused="Disconnect it first to connect it again.",
        )
        continued = (
            f"This organization was connected before"
            f"{f' (disconnected {disconnected_on:%-d %b %Y})' if disconnected_on else ''}: Doow connected that "
            "connection again, so its usage history, budgets and key owners go on."
        )
        return Connected(
            connection, " ".join(part for part in (continued, verified.notice) if part), again=True
        )
    try:
        connection = connection_create(
            company=company,
            provider=OpenRouterProvider.key,
            name=name.strip() or f"OpenRouter {verified.account_label}"[:120],
            secret=secret,
            verified=verified,
            actor=actor,
            request=request,
        )
    except DuplicateConnection as exc:
        raise ConnectError(f"{exc} Disconnect it first to connect it again.") from None
    return Connected(connection, verified.notice, again=False)


@sensitive_variables("secret")
def openrouter_replace_key(
    *, connection: Connection, secret: str, actor=None, request=None, transport=None, name: str = ""
) -> Connected:
    """Verify a new key of the connection's own organization (or normal key) and store it in place
    of the old one, which may have been revoked, or of none after a disconnect (`again`); a `name`
    renames it."""
    secret = secret.strip()
    again = not connection.is_live
    same_key = not again and _is_the_stored_key(connection, secret)
    verified = _verify(secret, company=connection.company, transport=transport)
    problem = _replacement_problem(connection, verified)
    if problem:
        raise ConnectError(f"{problem} Nothing was changed.")
    stored = _store_in(
        connection, secret, verified, actor=actor, request=request, refused="Nothing was changed.", name=name
    )
    return Connected(stored, "", again=again, same_key=same_key)


@sensitive_variables("secret", "stored")
def _is_the_stored_key(connection: Connection, secret: str) -> bool:
    """Whether `secret` is the key the connection holds now: pasted again to check it, it is not a
    rotation, and the admin must not be told to revoke it."""
    if not connection.secret:
        return False
    try:
        stored = crypto.decrypt(connection.secret, context=connection.secret_context)
    except crypto.DecryptionError:
        return False
    return hmac.compare_digest(stored.encode(), secret.encode())


@sensitive_variables("secret")
def _store_in(
    connection: Connection,
    secret: str,
    verified: VerifiedCredential,
    *,
    actor,
    request,
    refused: str,
    name="",
) -> Connection:
    """The verified key stored in this existing connection, or ConnectError ending with `refused`."""
    try:
        return connection_replace_secret(
            connection=connection, secret=secret, verified=verified, actor=actor, request=request, name=name
        )
    except (CredentialMismatch, DuplicateConnection) as exc:
        raise ConnectError(f"{exc} {refused}") from None


def _replacement_problem(connection: Connection, verified: VerifiedCredential) -> str:
    if connection.scope == CredentialScope.SINGLE_KEY:
        if verified.external_account_id != connection.external_account_id:
            return (
                "This connection reads one API key, which another key cannot stand in for: connect the "
                "new key as a connection of its own."
            )
    elif verified.scope != CredentialScope.ORGANIZATION:
        return "This connection reads a whole organization: its key must be a management key of it."
    elif verified.external_account_id != connection.external_account_id:
        return (
            f"That key belongs to {verified.account_label}, not to {connection.account_label}, which this "
            f"connection reads. Use a management key of {connection.account_label}, or connect "
            f"{verified.account_label} as a connection of its own."
        )
    return ""


@sensitive_variables("secret")
def _verify(secret: str, *, company: Company, transport=None) -> VerifiedCredential:
    """What OpenRouter says the pasted key is, or ConnectError in words for the admin."""
    if not secret:
        raise ConnectError("Paste an OpenRouter key.")
    # Keys are printable ASCII; anything else (a curly quote from a document, a control character)
    # could not even travel in an HTTP header.
    if not (20 <= len(secret) <= 300 and secret.isascii() and secret.isprintable()) or " " in secret:
        raise ConnectError("That does not look like an OpenRouter key. Copy the whole key from OpenRouter.")
    try:
        return OpenRouterProvider().verify(secret, transport=transport)
    except ProviderError as exc:
        logger.info("OpenRouter key verification failed for company %s: %s", company.slug, exc.code)
        if exc.code in ("http_401", "http_403"):
            raise ConnectError(
                "OpenRouter did not accept this key: it is invalid, revoked or expired. Nothing was stored."
            ) from None
        if exc.code == "rate_limited":
            raise ConnectError(
                "OpenRouter is limiting requests right now, so the key could not be verified. Nothing was "
                "stored; please try again in a minute."
            ) from None
        if exc.code in ("timeout", "network") or exc.code.startswith("http_5"):
            raise ConnectError(
                "Could not reach OpenRouter to verify the key. Nothing was stored; please try again in a minute."
            ) from None
        # An answer that came but cannot be used (a body that is not OpenRouter's, another 4xx):
        # "could not reach" would send the admin to check their network for nothing.
        raise ConnectError(
            f"OpenRouter's answer to the key check could not be used ({exc.code}). Nothing was stored; "
            "please try again in a minute."
        ) from None
