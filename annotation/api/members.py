"""Who works on a project.

- Members: leads and admins see the list; only project admins (and superusers) add people, change
  roles and take people out. A project that has an admin always keeps one. Taking someone out keeps their
  labels: annotations belong to the project's history, not to the membership.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import selectors
from annotation.access import project_for_user, require_role
from annotation.api.errors import Conflict
from annotation.api.views import errors
from annotation.models import Membership, Project
from annotation.roles import ADMINS, LEADS
from annotation.services.memberships import (
    LastAdminError,
    membership_add,
    membership_change,
    membership_pause,
    membership_remove,
)


class MemberSerializer(serializers.Serializer[Membership]):
    user = serializers.IntegerField(source="user_id", read_only=True)
    username = serializers.CharField(source="user.username", read_only=True)
    role = serializers.ChoiceField(choices=Membership.Role.choices)
    labelling_paused = serializers.BooleanField(
        read_only=True, help_text="A lead paused this member's labelling here (their labels stay)."
    )
    labels = serializers.IntegerField(read_only=True, help_text="Current labels this member gave here.")
    created_at = serializers.DateTimeField(read_only=True)


class MemberAddSerializer(serializers.Serializer[dict[str, Any]]):
    username = serializers.CharField()
    role = serializers.ChoiceField(choices=Membership.Role.choices, default=Membership.Role.ANNOTATOR)


class MemberChangeSerializer(serializers.Serializer[dict[str, Any]]):
    role = serializers.ChoiceField(
        choices=Membership.Role.choices, required=False, help_text="A new role (project admins)."
    )
    labelling_paused = serializers.BooleanField(
        required=False,
        help_text="Pause (true) or resume (false) this member's labelling here (leads and admins): a "
        "paused member's labels, batch submissions and skips are refused with 403 labelling_paused.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(getattr(self, "initial_data", {})) - set(self.fields))
        if unknown:
            raise ValidationError(f"cannot be changed here: {', '.join(unknown)}")
        if not attrs:
            raise ValidationError("give a role, or labelling_paused")
        return attrs


def _member(project: Project, user_id: int) -> Membership:
    membership = selectors.member_list(project=project).filter(user_id=user_id).first()
    if membership is None:
        raise NotFound("No such member")
    return membership


class MemberListApi(APIView):
    @extend_schema(responses={200: MemberSerializer(many=True), **errors(403, 404)})
    def get(self, request: Request, project_id: int) -> Response:
        """The project's members with their roles (leads and admins)."""
        project = project_for_user(user=request.user, project_id=project_id)
        require_role(user=request.user, project=project, roles=LEADS)
        members: Any = selectors.member_list(project=project)  # DRF's stubs type one instance, not many
        return Response(MemberSerializer(members, many=True).data)

    @extend_schema(request=MemberAddSerializer, responses={201: MemberSerializer, **errors(400, 403, 404)})
    def post(self, request: Request, project_id: int) -> Response:
        """Add an existing user to the project (project admins)."""
        project = project_for_user(user=request.user, project_id=project_id)
        require_role(user=request.user, project=project, roles=ADMINS)
        data = MemberAddSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = User.objects.filter(username=data.validated_data["username"], is_active=True).first()
        if user is None:
            raise ValidationError({"username": [f"no active user {data.validated_data['username']!r}"]})
        try:
            membership_add(project=project, user=user, role=data.validated_data["role"])
        except ValueError as error:
            raise Conflict(str(error)) from None
        return Response(MemberSerializer(_member(project, user.pk)).data, status=status.HTTP_201_CREATED)


class MemberDetailApi(APIView):
    @extend_schema(
        request=MemberChangeSerializer, responses={200: MemberSerializer, **errors(400, 403, 404, 409)}
    )
    def patch(self, request: Request, project_id: int, user_id: int) -> Response:
        """Change a member's role (project admins), or pause or resume their labelling (leads and admins)."""
        project = project_for_user(user=request.user, project_id=project_id)
        require_role(user=request.user, project=project, roles=LEADS)
        data = MemberChangeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        if "role" in values:
            require_role(user=request.user, project=project, roles=ADMINS)
        membership = _member(project, user_id)
        with transaction.atomic():
            if "labelling_paused" in values:
                membership_pause(membership=membership, paused=values["labelling_paused"])
            if "role" in values:
                try:
                    membership_change(membership=membership, role=values["role"])
                except LastAdminError as error:
                    raise Conflict(str(error)) from None
        return Response(MemberSerializer(_member(project, user_id)).data)

    @extend_schema(responses={204: None, **errors(403, 404, 409)})
    def delete(self, request: Request, project_id: int, user_id: int) -> Response:
        """Take a member out of the project; their labels stay (project admins)."""
        project = project_for_user(user=request.user, project_id=project_id)
        require_role(user=request.user, project=project, roles=ADMINS)
        try:
            membership_remove(membership=_member(project, user_id))
        except LastAdminError as error:
            raise Conflict(str(error)) from None
        return Response(status=status.HTTP_204_NO_CONTENT)
