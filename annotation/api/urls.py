from django.urls import path

from annotation.api import views

urlpatterns = [
    path("projects/", views.ProjectListApi.as_view(), name="api-project-list"),
    path("projects/<int:project_id>/", views.ProjectDetailApi.as_view(), name="api-project-detail"),
    path("projects/<int:project_id>/cells/", views.CellListApi.as_view(), name="api-cell-list"),
    path("projects/<int:project_id>/jobs/", views.JobListApi.as_view(), name="api-job-list"),
    path("jobs/<int:job_id>/", views.JobDetailApi.as_view(), name="api-job-detail"),
]
