from django.contrib import admin

from doow.admin import ReadOnlyAdmin
from usage.models import UsageDaily


@admin.register(UsageDaily)
class UsageDailyAdmin(ReadOnlyAdmin):
    """Read-only: no add, change or delete. A sync writes these rows and keeps the summaries reports
    read (UsageDailyByModel, UsageDailyByKey, UsageMonthlyByKey) in step; an edit here would bypass
    them and reports would stop matching the rows. Rows changed by other means need `manage.py usage_summaries_rebuild`.
    The summaries themselves are not registered here, so they cannot be edited from the admin either."""

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
