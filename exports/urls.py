from django.urls import URLPattern, path

from exports import views

urlpatterns: list[URLPattern] = [
    path("projects/<int:project_id>/exports/", views.ExportListApi.as_view(), name="api-export-list"),
    path("exports/<int:job_id>/download", views.ExportDownloadApi.as_view(), name="api-export-download"),
]
