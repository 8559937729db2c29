from django.urls import path

from openrouter import views

app_name = "openrouter"
urlpatterns = [
    path("connect/", views.connect, name="connect"),
    path("<int:connection_id>/", views.detail, name="detail"),
    path("<int:connection_id>/export.<str:fmt>", views.export, name="export"),
]
