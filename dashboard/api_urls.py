"""The dashboard's part of the API (mounted under /api/): the per-slide differential as JSON."""

from django.urls import URLPattern, path

from dashboard.differential_views import DifferentialApi

urlpatterns: list[URLPattern] = [
    path("projects/<int:project_id>/differential/", DifferentialApi.as_view(), name="api-differential"),
]
