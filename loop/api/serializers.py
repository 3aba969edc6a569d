"""Serializers of the loop's records: model versions, query batches and their items."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from annotation.api.responses import SUGGESTION_WITHHELD
from annotation.api.serializers import AnnotationSerializer
from loop.api.responses import AttributeSuggestionSerializer
from loop.models import ModelVersion, QueryBatch, QueryItem
from loop.state import SentSuggestion, sent_attribute_suggestions, sent_suggestion


class ModelVersionSerializer(serializers.ModelSerializer[ModelVersion]):
    """A trained encoder, index or classifier with its validation metrics. Artefact paths on the server
    are not shown, only what the version consists of."""

    artifact_names = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "project",
            "kind",
            "version",
            "job",
            "parent",
            "label_count",
            "metrics",
            "artifact_names",
            "created_at",
        ]

    def get_artifact_names(self, version: ModelVersion) -> list[str]:
        return sorted((version.artifacts or {}).keys())


class ModelVersionDetailSerializer(ModelVersionSerializer):
    trained_on = serializers.ListField(child=serializers.IntegerField(), read_only=True)

    class Meta(ModelVersionSerializer.Meta):
        fields = [*ModelVersionSerializer.Meta.fields, "trained_on"]


class QueryBatchSerializer(serializers.ModelSerializer[QueryBatch]):
    """A query batch and the provenance of its choice: strategy, model and index versions."""

    classifier_version = serializers.IntegerField(
        source="classifier.version", read_only=True, allow_null=True
    )
    index_version = serializers.IntegerField(source="index.version", read_only=True, allow_null=True)
    item_count = serializers.IntegerField(read_only=True)
    submitted = serializers.SerializerMethodField()
    assignee = serializers.SerializerMethodField()

    class Meta:
        model = QueryBatch
        fields = [
            "id",
            "number",
            "strategy",
            "requested_strategy",
            "classifier",
            "classifier_version",
            "index",
            "index_version",
            "job",
            "labelled_count",
            "item_count",
            "created_at",
            "submitted",
            "submitted_at",
            "assignee",
        ]

    def get_submitted(self, batch: QueryBatch) -> bool:
        return batch.submitted_at is not None

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_assignee(self, batch: QueryBatch) -> str | None:
        """With split work, the annotator the batch is for (None: the project's shared batch)."""
        return batch.assignee.get_username() if batch.assignee is not None else None


class QueryItemSerializer(serializers.ModelSerializer[QueryItem]):
    """One queried cell: why it was chosen (rank, score) and what the model suggested."""

    suggestion = serializers.SerializerMethodField()
    confidence = serializers.SerializerMethodField()
    suggestion_withheld = serializers.SerializerMethodField()
    attribute_suggestions = serializers.SerializerMethodField()
    skipped = serializers.SerializerMethodField()
    image_url = serializers.SerializerMethodField()
    mine = serializers.SerializerMethodField()
    purpose = serializers.SerializerMethodField()

    class Meta:
        model = QueryItem
        fields = [
            "cell",
            "rank",
            "image_url",
            "score",
            "suggestion",
            "confidence",
            "suggestion_withheld",
            "labelled_distance_ratio",
            "attribute_suggestions",
            "skipped",
            "mine",
            "purpose",
        ]

    def _sent(self, item: QueryItem) -> SentSuggestion:
        # The labelling page's own rule (``rule`` in the context): a blind-mode user or a suggestion
        # below the lead's threshold gets no suggestion from this endpoint either.
        return sent_suggestion(item, self.context.get("rule"))

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_suggestion(self, item: QueryItem) -> str | None:
        return self._sent(item).name

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_confidence(self, item: QueryItem) -> float | None:
        return self._sent(item).confidence

    @extend_schema_field(serializers.ChoiceField(choices=SUGGESTION_WITHHELD, allow_null=True))
    def get_suggestion_withheld(self, item: QueryItem) -> str | None:
        """Why the suggestion is not sent: the caller's blind mode, a cell unlike every labelled one, or
        the lead's confidence threshold."""
        return self._sent(item).withheld

    @extend_schema_field(serializers.DictField(child=AttributeSuggestionSerializer()))
    def get_attribute_suggestions(self, item: QueryItem) -> dict[str, Any]:
        """attribute -> {value, confidence} from the attribute heads, under the same rule as the class."""
        return sent_attribute_suggestions(item, self.context.get("rule"))

    @extend_schema_field(serializers.ChoiceField(choices=QueryItem.Purpose.choices, allow_null=True))
    def get_purpose(self, item: QueryItem) -> str | None:
        """Why the cell is in the batch (query, overlap, gold): for reviewers, leads and admins only
        (``sees_purpose`` in the context); an annotator's agreement and gold cells look like the rest."""
        return item.purpose if self.context.get("sees_purpose") else None

    def get_skipped(self, item: QueryItem) -> bool:
        return item.skipped_at is not None

    def get_image_url(self, item: QueryItem) -> str:
        return f"/cells/{item.cell_id}/image"

    @extend_schema_field(AnnotationSerializer(allow_null=True))
    def get_mine(self, item: QueryItem) -> dict[str, Any] | None:
        """The caller's current label of the cell (from the ``mine`` context), if any."""
        annotation = self.context.get("mine", {}).get(item.cell_id)
        return AnnotationSerializer(annotation).data if annotation is not None else None


class QueryBatchDetailSerializer(QueryBatchSerializer):
    items = serializers.SerializerMethodField()

    class Meta(QueryBatchSerializer.Meta):
        fields = [*QueryBatchSerializer.Meta.fields, "items"]

    @extend_schema_field(QueryItemSerializer(many=True))
    def get_items(self, batch: QueryBatch) -> list[dict[str, Any]]:
        items = batch.items.select_related("suggestion").order_by("rank")
        return list(QueryItemSerializer(items, many=True, context=self.context).data)
