from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from annotation.api import annotations, auth, comments, docs, members, preferences, views

urlpatterns = [
    # Authentication: POST username and password, get an expiring token for "Authorization: Token <key>";
    # revoke it (logout) or every token of the caller (logoutall).
    path("auth/token/", auth.TokenLoginApi.as_view(), name="api-token"),
    path("auth/token/logout/", auth.TokenLogoutApi.as_view(), name="api-token-logout"),
    path("auth/token/logoutall/", auth.TokenLogoutAllApi.as_view(), name="api-token-logoutall"),
    # The API's description: OpenAPI 3 schema and Swagger UI (assets served locally, no CDN).
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", docs.SwaggerUiView.as_view(url_name="api-schema"), name="api-docs"),
    # The caller's own labelling-page preferences (tile size, blind mode).
    path("me/page-settings/", preferences.PagePreferencesApi.as_view(), name="api-page-settings"),
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
    path(
        "projects/<int:project_id>/annotations/",
        annotations.AnnotationListCreateApi.as_view(),
        name="api-annotate",
    ),
    path(
        "annotations/<int:annotation_id>/undo/",
        annotations.AnnotationUndoApi.as_view(),
        name="api-annotation-undo",
    ),
    path("projects/<int:project_id>/review/", annotations.ReviewQueueApi.as_view(), name="api-review"),
    path("cells/<int:cell_id>/comments/", comments.CellCommentsApi.as_view(), name="api-cell-comments"),
]
