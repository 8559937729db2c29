import hashlib

from django.views.decorators.debug import sensitive_variables

from integrations.crypto import mask
from integrations.models import CredentialScope
from integrations.providers import Provider, VerifiedCredential
from openrouter.client import OpenRouterClient

SINGLE_KEY_NOTICE = (
    "A normal OpenRouter API key may only expose usage for that key. Doow will read only this key's own "
    "usage counters; connect a management key to see the whole organization."
)


def safe_label(label: str, secret: str) -> str:
    """OpenRouter labels a key with a masked copy of it ("sk-or-v1-abc...wxyz"): keep no piece of the
    connected key, only Doow's own mask."""
    if any(secret[i : i + 6] in label for i in range(len(secret) - 5)):
        return mask(secret[-4:])
    return label


def key_fingerprint(secret: str) -> str:
    """A stable, non-reversible id for a key OpenRouter gives no hash for (single-key scope)."""
    return "key-" + hashlib.sha256(secret.encode()).hexdigest()[:20]


class OpenRouterProvider(Provider):
    key = "openrouter"
    name = "OpenRouter"
    sync_task = "openrouter.sync_connection"
    connect_url_name = "openrouter:connect"

    @sensitive_variables("secret")
    def verify(self, secret: str, **client_options) -> VerifiedCredential:
        """GET /key: what the key is. Raises ProviderError (permanent for a refused key)."""
        with OpenRouterClient(secret, max_retries=1, max_inline_wait=5, **client_options) as client:
            current = client.get_key()
        label = safe_label(current.label, secret)
        if current.is_management_key:
            account = current.organization_id or (
                f"user:{current.creator_user_id}" if current.creator_user_id else key_fingerprint(secret)
            )
            return VerifiedCredential(
                scope=CredentialScope.ORGANIZATION,
                external_account_id=account,
                account_label=current.organization_id or label or "personal account",
                config={"organization_id": current.organization_id or "", "key_label": label},
            )
        return VerifiedCredential(
            scope=CredentialScope.SINGLE_KEY,
            external_account_id=key_fingerprint(secret),
            account_label=label or "single API key",
            notice=SINGLE_KEY_NOTICE,
            config={"organization_id": current.organization_id or "", "key_label": label},
        )

    def revoke_where(self, connection) -> str:
        if connection.scope == CredentialScope.SINGLE_KEY:
            return "in OpenRouter (Settings → API Keys)"
        return "in OpenRouter (Settings → Management keys)"

    def disconnected(self, connection) -> None:
        # No sync evaluates this connection's alerts any more: none stays open.
        from usage.models import Alert, AlertState, alerts_resolve

        alerts_resolve(
            Alert.objects.filter(connection=connection).exclude(state=AlertState.RESOLVED),
            reason="The connection was disconnected.",
        )

    def purge_data(self, connection) -> int:
        from openrouter.models import ApiKey, ApiKeySnapshot, CreditsSnapshot, Member, Workspace
        from usage.services import usage_delete_for_connection

        deleted = usage_delete_for_connection(connection_id=connection.pk)
        for model in (ApiKeySnapshot, ApiKey, CreditsSnapshot, Member, Workspace):
            model.objects.filter(connection_id=connection.pk).delete()
        return deleted
