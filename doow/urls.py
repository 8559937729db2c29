from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from doow import views

urlpatterns = [
    path("", views.home, name="home"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("switch-company/", views.company_switch, name="company-switch"),
    path("c/<slug:company_slug>/settings/", views.company_settings, name="company-settings"),
    path("c/<slug:company_slug>/integrations/", include("integrations.urls")),
    path("c/<slug:company_slug>/integrations/openrouter/", include("openrouter.urls")),
    path("c/<slug:company_slug>/alerts/", include("usage.urls")),
    path("admin/", admin.site.urls),
]
