from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/", include("annotation.api.urls")),
    path("api/", include("loop.api.urls")),
    path("api/", include("exports.urls")),
    path("", include("annotation.project_settings.urls")),
    path("", include("annotation.urls")),
    path("", include("loop.urls")),
    path("", include("dashboard.urls")),
    path("", include("evaluation_report.urls")),
    path("", include("exports.page_urls")),
]

handler404 = "annotation.api.errors.not_found"
