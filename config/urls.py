from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/", include("annotation.api.urls")),
    path("api/", include("annotation.exports.urls")),
    path("", include("annotation.dashboard.urls")),
    path("", include("annotation.evaluation_report.urls")),
    path("", include("annotation.project_settings.urls")),
    path("", include("annotation.urls")),
]

handler404 = "annotation.api.errors.not_found"
