from django.urls import path

from openrouter import insights_views, views

app_name = "openrouter"
urlpatterns = [
    path("connect/", views.connect, name="connect"),
    path("<int:connection_id>/", views.detail, name="detail"),
    path("<int:connection_id>/key/", views.replace_key, name="replace-key"),
    path("<int:connection_id>/export.<str:fmt>", views.export, name="export"),
    path("<int:connection_id>/budgets/", insights_views.budgets, name="budgets"),
    path(
        "<int:connection_id>/budgets/<int:budget_id>/delete/",
        insights_views.budget_delete,
        name="budget-delete",
    ),
    path(
        "<int:connection_id>/alert-rules/<int:rule_id>/", insights_views.alert_rule_update, name="alert-rule"
    ),
    path("<int:connection_id>/people/", insights_views.people, name="people"),
    path("<int:connection_id>/people/owner/", insights_views.key_owner, name="key-owner"),
    path("<int:connection_id>/reconciliation/", insights_views.reconciliation, name="reconciliation"),
]
