from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Password reset by e-mail (templates/registration/); an invitation's link is a reset confirmation.
    path("accounts/password-reset/", auth_views.PasswordResetView.as_view(), name="password_reset"),
    path(
        "accounts/password-reset/sent/",
        auth_views.PasswordResetDoneView.as_view(),
        name="password_reset_done",
    ),
    path(
        "accounts/reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "accounts/reset/done/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
    path("api/", include("annotation.api.urls")),
    path("api/", include("loop.api.urls")),
    path("api/", include("exports.urls")),
    path("api/", include("dashboard.api_urls")),
    path("", include("annotation.project_settings.urls")),
    path("", include("annotation.urls")),
    path("", include("loop.urls")),
    path("", include("dashboard.urls")),
    path("", include("evaluation_report.urls")),
    path("", include("exports.page_urls")),
]

handler404 = "annotation.api.errors.not_found"
