from django.urls import path

from annotation import views

urlpatterns = [
    path("", views.project_list, name="project-list"),
    path("projects/<int:project_id>/", views.project_detail, name="project-detail"),
    path("projects/<int:project_id>/review/", views.review_page, name="review"),
    path("cells/<int:cell_id>/image", views.cell_image, name="cell-image"),
    path("healthz", views.healthz, name="healthz"),
]
