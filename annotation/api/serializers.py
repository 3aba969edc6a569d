from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from annotation.models import Annotation, Cell, LabelClass, Project
from jobs.models import Job


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


class CellSerializer(serializers.ModelSerializer[Cell]):
    # Reference labels are hidden from this serializer on purpose: annotators must never see them.
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

    def get_image_url(self, cell: Cell) -> str:
        return f"/cells/{cell.pk}/image"


class JobSerializer(serializers.ModelSerializer[Job]):
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
