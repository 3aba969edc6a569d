from __future__ import annotations

from rest_framework import serializers

from annotation.models import Cell, Job, LabelClass, Project


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
