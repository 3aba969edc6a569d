"""The project lead's dashboard: label budget, learning curve, stopping signal, annotators, embedding map."""

from django.urls import URLPattern, path

from dashboard import views

urlpatterns: list[URLPattern] = [
    path("projects/<int:project_id>/dashboard/", views.dashboard_page, name="dashboard"),
    path("projects/<int:project_id>/dashboard/data.json", views.dashboard_data_json, name="dashboard-data"),
    path("projects/<int:project_id>/dashboard/map.json", views.dashboard_map_json, name="dashboard-map"),
]
