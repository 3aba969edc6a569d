from django.urls import URLPattern, path

from exports import pages

urlpatterns: list[URLPattern] = [
    path("projects/<int:project_id>/exports/", pages.exports_page, name="exports"),
]
