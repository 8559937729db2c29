from django.urls import path

from integrations import views

app_name = "integrations"
urlpatterns = [
    path("cards/", views.integration_cards, name="cards"),
    path("events/", views.event_log, name="events"),
    path("events/newer/", views.event_log_newer, name="events-newer"),
    path("runs/<int:run_id>/", views.run_detail, name="run"),
    path("<int:connection_id>/sync/", views.sync_now, name="sync-now"),
    path("<int:connection_id>/disconnect/", views.disconnect, name="disconnect"),
    path("<int:connection_id>/disconnect/confirm/", views.disconnect_confirm, name="disconnect-confirm"),
]
