from django.urls import path

from usage import views

app_name = "usage"
urlpatterns = [
    path("", views.alert_list, name="alerts"),
    path("<int:alert_id>/", views.alert_update, name="alert-update"),
]
