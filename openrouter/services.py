"""The OpenRouter side of connecting: verify a pasted key, then hand it to integrations to store."""

import logging

from django.views.decorators.debug import sensitive_variables

from doow.models import Company
from integrations.models import Connection
from integrations.providers import ProviderError
from integrations.services import DuplicateConnection, connection_create
from openrouter.provider import OpenRouterProvider

logger = logging.getLogger(__name__)


class ConnectError(Exception):
    """Why a key was not connected, in words for the admin. Never contains the key."""


@sensitive_variables("secret")
def openrouter_connect(
    *, company: Company, secret: str, name: str = "", actor=None, request=None, transport=None
) -> tuple[Connection, str]:
    """Verify the key with OpenRouter and store it. Returns (connection, notice for the admin)."""
    secret = secret.strip()
    if not secret:
        raise ConnectError("Paste an OpenRouter key.")
    # Keys are printable ASCII; anything else (a curly quote from a document, a control character)
    # could not even travel in an HTTP header.
    if not (20 <= len(secret) <= 300 and secret.isascii() and secret.isprintable()) or " " in secret:
        raise ConnectError("That does not look like an OpenRouter key. Copy the whole key from OpenRouter.")
    provider = OpenRouterProvider()
    try:
        verified = provider.verify(secret, transport=transport)
    except ProviderError as exc:
        logger.info("OpenRouter key verification failed for company %s: %s", company.slug, exc.code)
        if exc.code in ("http_401", "http_403"):
            raise ConnectError(
                "OpenRouter did not accept this key: it is invalid, revoked or expired. Nothing was stored."
            ) from None
        raise ConnectError(
            "Could not reach OpenRouter to verify the key. Nothing was stored; please try again in a minute."
        ) from None
    try:
        connection = connection_create(
            company=company,
            provider=provider.key,
            name=name.strip() or f"OpenRouter {verified.account_label}"[:120],
            secret=secret,
            verified=verified,
            actor=actor,
            request=request,
        )
    except DuplicateConnection as exc:
        raise ConnectError(f"{exc} Disconnect it first to connect it again.") from None
    return connection, verified.notice
