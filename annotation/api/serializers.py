from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from django.db.models import Model
from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from annotation.models import Annotation, Cell, LabelClass, Project
from annotation.roles import SEES_PROVENANCE, SEES_TRACEBACKS
from annotation.selectors import check_class_weights, check_query_source
from jobs.models import Job
from jobs.selectors import error_summary

M = TypeVar("M", bound=Model)
# Ids are 64-bit (BigAutoField). A larger number in a request is refused as invalid: the database cannot
# even compare it (SQLite raises OverflowError, PostgreSQL "out of range"), which would be a 500.
MAX_ID = 2**63 - 1
# Where a cell comes from: the import path names the hidden reference label for a folder import.
CELL_PROVENANCE = ("original_name", "patient_id", "slide_id")
LEADS_ONLY = "Leads and admins only: absent for annotators and reviewers."


class IdField(serializers.IntegerField):
    """The id of a row in a request body: 1 to ``MAX_ID``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(min_value=1, max_value=MAX_ID, **kwargs)


def reader_context(role: str | None) -> dict[str, Any]:
    """The serializer context that says whose eyes an answer is for (``RoleScoped``)."""
    return {"role": role}


class RoleScoped(serializers.ModelSerializer[M]):
    """A serializer whose answer depends on the reader's role (``context["role"]``, see ``reader_context``):
    each field of ``restricted`` is left out unless the reader has one of its roles. Without a role in the
    context every restricted field is left out, so a view that forgets to say who reads sees less, not
    more. The schema lists the restricted fields as optional."""

    restricted: ClassVar[dict[str, tuple[str, ...]]] = {}

    def to_representation(self, instance: M) -> dict[str, Any]:
        data: dict[str, Any] = super().to_representation(instance)
        role = self.context.get("role")
        for name, roles in self.restricted.items():
            if role not in roles:
                data.pop(name, None)
        return data


class LabelClassSerializer(serializers.ModelSerializer[LabelClass]):
    class Meta:
        model = LabelClass
        fields = ["id", "name", "display_name", "colour", "key", "order"]


class ProjectSerializer(serializers.ModelSerializer[Project]):
    classes = LabelClassSerializer(many=True, read_only=True)
    cell_count = serializers.IntegerField(read_only=True)
    labelled_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Project
        fields = [
            "id",
            "name",
            "description",
            "classes",
            "attribute_schema",
            "label_budget",
            "query_strategy",
            "query_batch_size",
            "is_synthetic_demo",
            "cell_count",
            "labelled_count",
            "created_at",
        ]


class CellSerializer(RoleScoped[Cell]):
    """A cell. Reference labels are never shown; where the cell comes from (its import path, which names
    the reference label for a folder import, its patient and slide) only to leads and admins."""

    restricted = dict.fromkeys(CELL_PROVENANCE, SEES_PROVENANCE)
    image_url = serializers.SerializerMethodField()

    class Meta:
        model = Cell
        fields = [
            "id",
            "image_url",
            "content_hash",
            "width",
            "height",
            "original_name",
            "source",
            "patient_id",
            "slide_id",
            "role",
            "created_at",
        ]
        extra_kwargs = {name: {"help_text": LEADS_ONLY} for name in CELL_PROVENANCE}

    def get_image_url(self, cell: Cell) -> str:
        return f"/cells/{cell.pk}/image"


class JobSerializer(RoleScoped[Job]):
    """A background job. Its params and result (server paths, imported file names) only for leads and
    admins; its error in full (with the traceback) only for admins, its first line for everyone else."""

    restricted = dict.fromkeys(("params", "result"), SEES_PROVENANCE)

    class Meta:
        model = Job
        fields = [
            "id",
            "project",
            "kind",
            "status",
            "progress",
            "message",
            "error",
            "params",
            "result",
            "attempts",
            "created_at",
            "started_at",
            "finished_at",
        ]
        extra_kwargs = {
            "params": {"help_text": LEADS_ONLY},
            "result": {"help_text": LEADS_ONLY},
            "error": {"help_text": "Admins read the whole error with its traceback, others its first line."},
        }

    def to_representation(self, instance: Job) -> dict[str, Any]:
        data = super().to_representation(instance)
        if self.context.get("role") not in SEES_TRACEBACKS:
            data["error"] = error_summary(instance.error)
        return data


class AnnotationSerializer(serializers.ModelSerializer[Annotation]):
    """One label given to one cell, with its place in the history."""

    label = serializers.SlugRelatedField(slug_field="name", read_only=True)  # type: ignore[assignment,var-annotated]
    annotator = serializers.SerializerMethodField()
    current = serializers.SerializerMethodField()
    withdrawn = serializers.SerializerMethodField()

    class Meta:
        model = Annotation
        fields = [
            "id",
            "cell",
            "label",
            "unsure",
            "attributes",
            "origin",
            "annotator",
            "seconds_spent",
            "created_at",
            "current",
            "withdrawn",
            "superseded_by",
        ]

    def get_annotator(self, annotation: Annotation) -> str | None:
        return annotation.annotator.get_username() if annotation.annotator else None

    def get_current(self, annotation: Annotation) -> bool:
        return annotation.superseded_by_id is None

    def get_withdrawn(self, annotation: Annotation) -> bool:
        return annotation.withdrawn_at is not None


class ErrorBodySerializer(serializers.Serializer[dict[str, Any]]):
    status = serializers.IntegerField()
    code = serializers.CharField()
    detail = serializers.CharField()

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        # "fields" names a property of Serializer, so it cannot be declared as a class attribute.
        fields = super().get_fields()
        fields["fields"] = serializers.DictField(
            child=serializers.ListField(child=serializers.CharField()),
            required=False,
            help_text="Validation errors only: each bad field of the request and its messages.",
        )
        return fields


class ErrorSerializer(serializers.Serializer[dict[str, Any]]):
    """Every API error: see ``annotation.api.errors``."""

    error = ErrorBodySerializer()


class ProjectSettingsSerializer(serializers.ModelSerializer[Project]):
    """What a lead may change (``Project.EDITABLE_SETTINGS``; the model's validators check the values)."""

    class Meta:
        model = Project
        fields = list(Project.EDITABLE_SETTINGS)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # A misspelt or read-only field would otherwise be ignored without a word.
        unknown = sorted(set(getattr(self, "initial_data", {})) - set(self.fields))
        if unknown:
            raise ValidationError(
                f"cannot be changed here: {', '.join(unknown)} (settings: {', '.join(self.fields)})"
            )
        return attrs

    def validate_class_weights(self, value: dict[str, float]) -> dict[str, float]:
        try:
            return check_class_weights(self.instance, value)
        except ValueError as error:
            raise ValidationError(str(error)) from error

    def validate_query_source(self, value: str) -> str:
        # A misspelt source would query nothing of it without a word: it must be one the cells carry.
        try:
            return check_query_source(self.instance, value)
        except ValueError as error:
            raise ValidationError(str(error)) from error
