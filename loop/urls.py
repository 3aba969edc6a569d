from django.urls import path

from loop import views

urlpatterns = [
    path("projects/<int:project_id>/label/", views.label_page, name="label"),
    path("cells/<int:cell_id>/saliency.png", views.cell_saliency, name="cell-saliency"),
]
