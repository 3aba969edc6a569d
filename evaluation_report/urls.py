"""Evaluation report of a classifier version on the project's test cells (page and JSON)."""

from django.urls import URLPattern, path

from evaluation_report import views

urlpatterns: list[URLPattern] = [
    path(
        "projects/<int:project_id>/models/<int:version_id>/report/",
        views.report_page,
        name="evaluation-report",
    ),
    path(
        "projects/<int:project_id>/models/<int:version_id>/report.json",
        views.report_json,
        name="evaluation-report-data",
    ),
]
