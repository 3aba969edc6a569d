"""Evaluation report of a classifier version on the project's test cells (page and JSON). ``<version>`` is
the classifier's version number within the project (as the pages and the README show it), not a row id."""

from django.urls import URLPattern, path

from evaluation_report import views

urlpatterns: list[URLPattern] = [
    path(
        "projects/<int:project_id>/models/<int:version>/report/",
        views.report_page,
        name="evaluation-report",
    ),
    path(
        "projects/<int:project_id>/models/<int:version>/report.json",
        views.report_json,
        name="evaluation-report-data",
    ),
]
