from django.urls import path

from annotation.project_settings import views

urlpatterns = [
    path("projects/<int:project_id>/settings/", views.settings_page, name="project-settings"),
    path("projects/<int:project_id>/members/", views.member_add, name="member-add"),
    path("projects/<int:project_id>/invite/", views.member_invite, name="member-invite"),
    path("projects/<int:project_id>/members/<int:user_id>/", views.member_change, name="member-change"),
]
