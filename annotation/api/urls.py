from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.authtoken.views import obtain_auth_token

from annotation.api import loop, members, views

urlpatterns = [
    # Authentication: POST username and password, get a token for "Authorization: Token <key>".
    path("auth/token/", obtain_auth_token, name="api-token"),
    # The API's description: OpenAPI 3 schema and Swagger UI (assets served locally, no CDN).
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("projects/", views.ProjectListApi.as_view(), name="api-project-list"),
    path("projects/<int:project_id>/", views.ProjectDetailApi.as_view(), name="api-project-detail"),
    path("projects/<int:project_id>/members/", members.MemberListApi.as_view(), name="api-member-list"),
    path(
        "projects/<int:project_id>/members/<int:user_id>/",
        members.MemberDetailApi.as_view(),
        name="api-member-detail",
    ),
    path("projects/<int:project_id>/cells/", views.CellListApi.as_view(), name="api-cell-list"),
    path("projects/<int:project_id>/jobs/", views.JobListApi.as_view(), name="api-job-list"),
    path("jobs/<int:job_id>/", views.JobDetailApi.as_view(), name="api-job-detail"),
    path("projects/<int:project_id>/batches/", views.BatchListApi.as_view(), name="api-batch-list"),
    path(
        "projects/<int:project_id>/batches/<int:batch_id>/",
        views.BatchDetailApi.as_view(),
        name="api-batch-detail",
    ),
    path("projects/<int:project_id>/models/", views.ModelVersionListApi.as_view(), name="api-model-list"),
    path(
        "projects/<int:project_id>/models/<int:version_id>/",
        views.ModelVersionDetailApi.as_view(),
        name="api-model-detail",
    ),
    # The active-learning loop and the labelling page
    path("projects/<int:project_id>/loop/", loop.LoopStateApi.as_view(), name="api-loop"),
    path("projects/<int:project_id>/loop/start/", loop.LoopStartApi.as_view(), name="api-loop-start"),
    path(
        "projects/<int:project_id>/loop/finetune/", loop.LoopFinetuneApi.as_view(), name="api-loop-finetune"
    ),
    path(
        "projects/<int:project_id>/batches/current/", loop.CurrentBatchApi.as_view(), name="api-batch-current"
    ),
    path(
        "projects/<int:project_id>/batches/<int:batch_id>/submit/",
        loop.BatchSubmitApi.as_view(),
        name="api-batch-submit",
    ),
    path(
        "projects/<int:project_id>/batches/<int:batch_id>/skip/",
        loop.BatchSkipApi.as_view(),
        name="api-batch-skip",
    ),
    path(
        "projects/<int:project_id>/annotations/",
        loop.AnnotationListCreateApi.as_view(),
        name="api-annotate",
    ),
    path(
        "annotations/<int:annotation_id>/undo/", loop.AnnotationUndoApi.as_view(), name="api-annotation-undo"
    ),
    path("projects/<int:project_id>/review/", loop.ReviewQueueApi.as_view(), name="api-review"),
    path("cells/<int:cell_id>/why/", loop.CellWhyApi.as_view(), name="api-cell-why"),
    path("cells/<int:cell_id>/similar/", loop.CellSimilarApi.as_view(), name="api-cell-similar"),
]
