"""The shape of the differential API's answer, for the schema (``dashboard.differential`` builds it)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

Dict = serializers.Serializer[dict[str, Any]]


class DifferentialProjectSerializer(Dict):
    id = serializers.IntegerField()
    name = serializers.CharField()


class DifferentialClassSerializer(Dict):
    name = serializers.CharField()
    display_name = serializers.CharField()
    retired = serializers.BooleanField(help_text="a retired class that still has labels or predictions")
    blast = serializers.BooleanField(help_text="counts as blasts for the slide's highlight")


class DifferentialModelSerializer(Dict):
    version = serializers.IntegerField(allow_null=True, help_text="the latest classifier; null: no model yet")
    labels = serializers.IntegerField(allow_null=True, help_text="how many labels it was trained on")
    note = serializers.CharField(allow_blank=True, help_text="why there are no predictions, if none")


class DifferentialRowSerializer(Dict):
    slide = serializers.CharField(help_text="the slide id; 'total' for the column total")
    cells = serializers.IntegerField()
    labelled = serializers.IntegerField(help_text="cells with a resolved expert label")
    counted = serializers.IntegerField(help_text="labelled cells this view counts (all, or the first 100)")
    in_review = serializers.IntegerField()
    unlabelled = serializers.IntegerField()
    counts = serializers.DictField(child=serializers.IntegerField(), help_text="class name -> expert count")
    percent = serializers.DictField(
        child=serializers.FloatField(allow_null=True), help_text="class name -> % of the counted cells"
    )
    blasts = serializers.IntegerField()
    predicted_cells = serializers.IntegerField(allow_null=True)
    predicted = serializers.DictField(
        child=serializers.IntegerField(),
        allow_null=True,
        help_text="class name -> cells without an expert label the model puts there; null: no predictions",
    )
    predicted_blasts = serializers.IntegerField(allow_null=True)


class DifferentialSerializer(Dict):
    project = DifferentialProjectSerializer()
    view = serializers.CharField()
    first = serializers.IntegerField(allow_null=True)
    has_slides = serializers.BooleanField()
    cells_without_slide = serializers.IntegerField()
    slide_column = serializers.CharField(help_text="the manifest column slide ids are imported from")
    classes = DifferentialClassSerializer(many=True)
    model = DifferentialModelSerializer()
    slides = DifferentialRowSerializer(many=True)
    total = DifferentialRowSerializer()
