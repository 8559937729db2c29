from django.contrib import admin

from doow.admin import ReadOnlyAdmin
from integrations.models import Connection, SyncEvent, SyncRun


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    """The ciphertext is never shown or editable here; the masked last four characters are."""

    list_display = ["name", "company", "provider", "state", "scope", "masked_secret", "last_synced_at"]
    list_filter = ["provider", "state", "scope"]
    search_fields = ["name", "company__name", "external_account_id"]
    exclude = ["secret", "secret_last4", "sync_lease_token"]
    readonly_fields = [
        "masked_secret",
        "company",
        "provider",
        "scope",
        "external_account_id",
        "generation",
        "last_synced_at",
        "last_sync_attempt_at",
        "complete_through",
        "reported_spans",  # written by syncs only: the page trusts it to tell unknown days from zero ones
        "sync_progress",
        "sync_lease_until",
        "created_by",
        "disconnected_at",
    ]

    def has_add_permission(self, request):
        return False  # Connections are made by verifying a key (the connect page or command).

    def has_delete_permission(self, request, obj=None):
        # Disconnect instead (the page or `openrouter_disconnect`): it deletes the key at once,
        # keeps the usage history and writes the audit row; a delete here would drop the history.
        return False


@admin.register(SyncRun)
class SyncRunAdmin(ReadOnlyAdmin):
    """The ops log: what happened stays."""

    list_display = [
        "pk",
        "connection",
        "trigger",
        "status",
        "started_at",
        "finished_at",
        "requests_made",
        "rows_written",
    ]
    list_filter = ["status", "trigger"]
    list_select_related = ["connection"]


@admin.register(SyncEvent)
class SyncEventAdmin(ReadOnlyAdmin):
    """The ops log: what happened stays."""

    list_display = ["created_at", "connection", "level", "kind", "code", "message"]
    list_filter = ["level", "kind"]
    search_fields = ["code", "message"]
    list_select_related = ["connection"]
