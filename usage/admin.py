from django.contrib import admin

from usage.models import UsageDaily


@admin.register(UsageDaily)
class UsageDailyAdmin(admin.ModelAdmin):
    list_display = [
        "day",
        "connection",
        "api_key_hash",
        "model_permaslug",
        "provider_name",
        "requests",
        "spend_usd",
    ]
    list_filter = ["day"]
    search_fields = ["api_key_hash", "model_permaslug"]
    list_select_related = ["connection"]
    show_full_result_count = False  # counting a million rows on every page is not worth it

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
