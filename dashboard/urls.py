"""The project lead's dashboard (label budget, learning curve, stopping signal, annotators, embedding map)
and the per-slide differential page."""

from django.urls import URLPattern, path

from dashboard import differential_views, views

urlpatterns: list[URLPattern] = [
    path("projects/<int:project_id>/dashboard/", views.dashboard_page, name="dashboard"),
    path("projects/<int:project_id>/dashboard/data.json", views.dashboard_data_json, name="dashboard-data"),
    path("projects/<int:project_id>/dashboard/map.json", views.dashboard_map_json, name="dashboard-map"),
    path(
        "projects/<int:project_id>/differential/", differential_views.differential_page, name="differential"
    ),
    path(
        "projects/<int:project_id>/differential.csv",
        differential_views.differential_csv,
        name="differential-csv",
    ),
]
