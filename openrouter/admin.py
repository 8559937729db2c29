from django.contrib import admin

from doow.admin import ReadOnlyAdmin
from openrouter.models import ApiKey, ApiKeySnapshot, CreditsSnapshot, Member, Model, Workspace


class SyncedAdmin(ReadOnlyAdmin):
    """Synced from OpenRouter: the next sync would overwrite any edit or undo any delete (and a
    deleted key would lose its owner and budgets meanwhile), so none is offered."""


@admin.register(ApiKey)
class ApiKeyAdmin(SyncedAdmin):
    list_display = [
        "name",
        "key_hash",
        "connection",
        "workspace_id",
        "disabled",
        "usage",
        "last_used_at",
        "missing_since",
    ]
    list_filter = ["disabled"]
    search_fields = ["name", "label", "key_hash"]
    list_select_related = ["connection"]


@admin.register(ApiKeySnapshot)
class ApiKeySnapshotAdmin(SyncedAdmin):
    list_display = ["key_hash", "day", "usage", "usage_daily", "connection"]
    list_select_related = ["connection"]


@admin.register(CreditsSnapshot)
class CreditsSnapshotAdmin(SyncedAdmin):
    list_display = ["connection", "taken_at", "total_credits", "total_usage"]
    list_select_related = ["connection"]


@admin.register(Workspace)
class WorkspaceAdmin(SyncedAdmin):
    list_display = ["name", "workspace_id", "connection"]
    list_select_related = ["connection"]


@admin.register(Member)
class MemberAdmin(SyncedAdmin):
    list_display = ["email", "first_name", "last_name", "role", "connection"]
    search_fields = ["email", "first_name", "last_name"]
    list_select_related = ["connection"]


@admin.register(Model)
class ModelAdmin(SyncedAdmin):
    list_display = ["name", "slug", "permaslug", "context_length", "prompt_price", "completion_price"]
    search_fields = ["name", "slug"]
