"""API of a project's taxonomy: every member reads the classes (retired ones included, as the project's
detail lists them); leads and admins add classes (or the lab presets), rename, merge, retire and restore
them and read the history of those changes. A change that alters which classes the model learns queues a
retrain (``loop.services.taxonomy``), returned as ``retrain`` (null when the loop has not started).

Refusals: a bad name, display name or colour is 400; a change the classes' state forbids (the class is
retired, the name is taken, fewer than two active classes would remain) is 409."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import selectors
from annotation.access import project_for_user, require_role
from annotation.api.errors import Conflict
from annotation.api.responses import JobSummarySerializer
from annotation.api.views import NOT_FOUND, errors
from annotation.models import LabelClass, Project, TaxonomyChange
from annotation.roles import LEADS
from annotation.services.taxonomy import TaxonomyConflict, TaxonomyError, class_rename
from annotation.taxonomy import PRESET_CLASSES
from jobs.models import Job
from jobs.selectors import job_summary
from loop.services.taxonomy import (
    taxonomy_add,
    taxonomy_add_presets,
    taxonomy_merge,
    taxonomy_restore,
    taxonomy_retire,
)


class TaxonomyClassSerializer(serializers.ModelSerializer[LabelClass]):
    retired = serializers.SerializerMethodField()
    merged_into = serializers.SlugRelatedField(  # type: ignore[var-annotated]
        slug_field="name", read_only=True, allow_null=True
    )

    class Meta:
        model = LabelClass
        fields = ["id", "name", "display_name", "colour", "key", "order", "retired", "merged_into"]

    def get_retired(self, label_class: LabelClass) -> bool:
        return label_class.retired_at is not None


class ClassAddSerializer(serializers.Serializer[dict[str, Any]]):
    display_name = serializers.CharField(max_length=120)
    name = serializers.CharField(
        max_length=64,
        required=False,
        allow_blank=True,
        help_text="Stable id (lower-case, digits, '_', '-'); made from the display name when left out.",
    )
    colour = serializers.CharField(max_length=7, required=False, allow_blank=True, help_text="#rrggbb")


class ClassChangeSerializer(serializers.Serializer[dict[str, Any]]):
    display_name = serializers.CharField(max_length=120, required=False)
    colour = serializers.CharField(max_length=7, required=False, help_text="#rrggbb")


class MergeSerializer(serializers.Serializer[dict[str, Any]]):
    into = serializers.CharField(max_length=64, help_text="The name of the class that keeps the labels.")


class PresetsSerializer(serializers.Serializer[dict[str, Any]]):
    names = serializers.ListField(
        child=serializers.ChoiceField(choices=[spec["name"] for spec in PRESET_CLASSES]),
        required=False,
        max_length=len(PRESET_CLASSES),
        help_text="Which presets to add; all of them when left out. Ones the project has are left alone.",
    )


class ClassChangedSerializer(serializers.Serializer[dict[str, Any]]):
    retrain = JobSummarySerializer(allow_null=True, help_text="The retrain queued on the new taxonomy.")

    def get_fields(self) -> dict[str, Any]:
        # "class" is a Python keyword: added here rather than declared as an attribute.
        return {"class": TaxonomyClassSerializer(), **super().get_fields()}


class PresetsAddedSerializer(serializers.Serializer[dict[str, Any]]):
    added = TaxonomyClassSerializer(many=True)
    retrain = JobSummarySerializer(allow_null=True)


class MergedSerializer(serializers.Serializer[dict[str, Any]]):
    merged = TaxonomyClassSerializer()
    into = TaxonomyClassSerializer()
    annotations_moved = serializers.IntegerField()
    ground_truth_moved = serializers.IntegerField(help_text="Hidden reference labels of cells moved.")
    retrain = JobSummarySerializer(allow_null=True)


class TaxonomyChangeSerializer(serializers.ModelSerializer[TaxonomyChange]):
    actor = serializers.SerializerMethodField()
    label_class = serializers.SlugRelatedField(slug_field="name", read_only=True)  # type: ignore[var-annotated]

    class Meta:
        model = TaxonomyChange
        fields = ["id", "created_at", "actor", "action", "label_class", "summary", "before", "after"]

    def get_actor(self, change: TaxonomyChange) -> str | None:
        return change.actor.get_username() if change.actor else None


def _lead_project(request: Request, project_id: int) -> Project:
    project = project_for_user(user=request.user, project_id=project_id)
    require_role(user=request.user, project=project, roles=LEADS)
    return project


def _class(project: Project, name: str) -> LabelClass:
    label_class = LabelClass.objects.filter(project=project, name=name).select_related("merged_into").first()
    if label_class is None:
        raise NotFound(f"No such class {name!r} in this project")
    return label_class


def _refused(error: TaxonomyError) -> Exception:
    return Conflict(str(error)) if isinstance(error, TaxonomyConflict) else ValidationError(str(error))


def _retrain(job: Job | None) -> dict[str, Any] | None:
    return job_summary(job) if job is not None else None


def _user(request: Request) -> User:
    return request.user  # type: ignore[return-value]  # IsAuthenticated: never anonymous here


def _changed(label_class: LabelClass, job: Job | None) -> dict[str, Any]:
    label_class.refresh_from_db()
    return {"class": TaxonomyClassSerializer(label_class).data, "retrain": _retrain(job)}


class ClassListApi(APIView):
    parser_classes = [JSONParser]  # the pages and clients send JSON; one request shape to check

    @extend_schema(responses={200: TaxonomyClassSerializer(many=True), **NOT_FOUND})
    def get(self, request: Request, project_id: int) -> Response:
        """Every class of the project in display order, retired and merged ones included (members)."""
        project = project_for_user(user=request.user, project_id=project_id)
        classes: Any = selectors.class_list(project=project)
        return Response(TaxonomyClassSerializer(classes, many=True).data)

    @extend_schema(
        request=ClassAddSerializer, responses={201: ClassChangedSerializer, **errors(400, 403, 404, 409)}
    )
    def post(self, request: Request, project_id: int) -> Response:
        """Add a class at the end; it gets the next free key (leads)."""
        project = _lead_project(request, project_id)
        data = ClassAddSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            label_class, job = taxonomy_add(project=project, actor=_user(request), **data.validated_data)
        except TaxonomyError as error:
            raise _refused(error) from None
        return Response(_changed(label_class, job), status=status.HTTP_201_CREATED)


class ClassDetailApi(APIView):
    parser_classes = [JSONParser]  # the pages and clients send JSON; one request shape to check

    @extend_schema(
        request=ClassChangeSerializer, responses={200: ClassChangedSerializer, **errors(400, 403, 404)}
    )
    def patch(self, request: Request, project_id: int, name: str) -> Response:
        """Rename a class (its display name) or change its colour; no retrain (leads)."""
        project = _lead_project(request, project_id)
        label_class = _class(project, name)
        data = ClassChangeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            class_rename(label_class=label_class, actor=_user(request), **data.validated_data)
        except TaxonomyError as error:
            raise _refused(error) from None
        return Response(_changed(label_class, None))


class ClassMergeApi(APIView):
    parser_classes = [JSONParser]  # the pages and clients send JSON; one request shape to check

    @extend_schema(request=MergeSerializer, responses={200: MergedSerializer, **errors(400, 403, 404, 409)})
    def post(self, request: Request, project_id: int, name: str) -> Response:
        """Merge this class into ``into``: its labels become ``into``'s and it is retired (leads)."""
        project = _lead_project(request, project_id)
        source = _class(project, name)
        data = MergeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        target = LabelClass.objects.filter(project=project, name=data.validated_data["into"]).first()
        if target is None:
            raise ValidationError({"into": f"{data.validated_data['into']!r} is not a class of this project"})
        try:
            result, job = taxonomy_merge(source=source, target=target, actor=_user(request))
        except TaxonomyError as error:
            raise _refused(error) from None
        return Response(
            {
                "merged": TaxonomyClassSerializer(result.source).data,
                "into": TaxonomyClassSerializer(result.target).data,
                "annotations_moved": result.annotations_moved,
                "ground_truth_moved": result.ground_truth_moved,
                "retrain": _retrain(job),
            }
        )


class ClassRetireApi(APIView):
    parser_classes = [JSONParser]  # the pages and clients send JSON; one request shape to check

    @extend_schema(request=None, responses={200: ClassChangedSerializer, **errors(403, 404, 409)})
    def post(self, request: Request, project_id: int, name: str) -> Response:
        """Retire a class: off the labelling keys and out of the model; its labels stay (leads)."""
        project = _lead_project(request, project_id)
        try:
            label_class, job = taxonomy_retire(label_class=_class(project, name), actor=_user(request))
        except TaxonomyError as error:
            raise _refused(error) from None
        return Response(_changed(label_class, job))


class ClassRestoreApi(APIView):
    parser_classes = [JSONParser]  # the pages and clients send JSON; one request shape to check

    @extend_schema(request=None, responses={200: ClassChangedSerializer, **errors(403, 404, 409)})
    def post(self, request: Request, project_id: int, name: str) -> Response:
        """Make a retired (not merged) class active again (leads)."""
        project = _lead_project(request, project_id)
        try:
            label_class, job = taxonomy_restore(label_class=_class(project, name), actor=_user(request))
        except TaxonomyError as error:
            raise _refused(error) from None
        return Response(_changed(label_class, job))


class TaxonomyPresetsApi(APIView):
    parser_classes = [JSONParser]  # the pages and clients send JSON; one request shape to check

    @extend_schema(
        request=PresetsSerializer, responses={200: PresetsAddedSerializer, **errors(400, 403, 404, 409)}
    )
    def post(self, request: Request, project_id: int) -> Response:
        """Add the classes a lab commonly adds (band neutrophil, reactive lymphocyte, smudge cell, artefact,
        unidentifiable), or those of ``names``, that the project does not have yet (leads)."""
        project = _lead_project(request, project_id)
        data = PresetsSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            added, job = taxonomy_add_presets(
                project=project, actor=_user(request), names=data.validated_data.get("names")
            )
        except TaxonomyError as error:
            raise _refused(error) from None
        return Response({"added": TaxonomyClassSerializer(added, many=True).data, "retrain": _retrain(job)})


class TaxonomyHistoryApi(APIView):
    parser_classes = [JSONParser]  # the pages and clients send JSON; one request shape to check

    @extend_schema(responses={200: TaxonomyChangeSerializer(many=True), **errors(403, 404)})
    def get(self, request: Request, project_id: int) -> Response:
        """Who changed the taxonomy, when, what, before and after; newest first (leads)."""
        project = _lead_project(request, project_id)
        changes: Any = selectors.taxonomy_history(project=project)
        return Response(TaxonomyChangeSerializer(changes, many=True).data)
