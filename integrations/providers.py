"""What integrations/ expects of a provider package (see registry.PROVIDERS)."""

from dataclasses import dataclass, field


class ProviderError(Exception):
    """A failure talking to a provider. `permanent` errors (bad credential, wrong scope) are not retried."""

    def __init__(
        self, message: str, *, permanent: bool = False, code: str = "provider_error", retry_after=None
    ):
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.code = code
        self.retry_after = retry_after


@dataclass(frozen=True)
class VerifiedCredential:
    scope: str
    external_account_id: str
    account_label: str
    notice: str = ""
    config: dict = field(default_factory=dict)


class Provider:
    key: str = ""
    name: str = ""
    sync_task: str = ""  # Celery task name taking (connection_id, trigger)
    connect_url_name: str = ""

    def verify(self, secret: str) -> VerifiedCredential:
        raise NotImplementedError

    def revoke_where(self, connection) -> str:
        """Where, in the provider, an admin revokes the connection's key (Doow cannot)."""
        return f"in {self.name}"

    def purge_data(self, connection) -> int:
        """Delete synced data of a connection (disconnect with "delete usage data")."""
        raise NotImplementedError

    def disconnected(self, connection) -> None:
        """Close what only a sync would have closed (open alerts, say), in the disconnect's transaction."""
