"""The shapes of the loop API's answers that ``loop.state`` and ``loop.handlers.inference`` build as dicts:
described here for the OpenAPI schema only (see ``annotation.api.responses``)."""

from __future__ import annotations

from rest_framework import serializers

from annotation.api.responses import (
    SUGGESTION_WITHHELD,
    AnnotationSummarySerializer,
    HistoryEntrySerializer,
    JobSummarySerializer,
    Shape,
)
from loop.state import STAGE_OF_KIND

STAGES = [*STAGE_OF_KIND.values(), "ready", "idle"]


class BatchSummarySerializer(Shape):
    """A query batch and the provenance of its choice (``loop.state.batch_summary``)."""

    id = serializers.IntegerField()
    number = serializers.IntegerField()
    strategy = serializers.CharField(help_text="The strategy that ran (cold start replaces some).")
    requested_strategy = serializers.CharField()
    classifier_version = serializers.IntegerField(allow_null=True)
    index_version = serializers.IntegerField(allow_null=True)
    labelled_count = serializers.IntegerField(help_text="Labels in the project when the batch was chosen.")
    created_at = serializers.DateTimeField()
    submitted = serializers.BooleanField()
    assignee = serializers.CharField(allow_null=True, help_text="Split work: the annotator it is for.")
    attribute_suggestions_pending = serializers.BooleanField(
        help_text="More attribute suggestions are coming (its cells measured after it was written)."
    )


class AttributeSuggestionSerializer(Shape):
    value = serializers.CharField()
    confidence = serializers.FloatField()


class BatchItemSerializer(Shape):
    """One cell of a batch as the labelling page shows it, with the caller's own current label."""

    cell = serializers.IntegerField()
    rank = serializers.IntegerField()
    image_url = serializers.CharField()
    score = serializers.FloatField(allow_null=True)
    suggestion = serializers.CharField(
        allow_null=True, help_text="The model's suggestion; null when there is none or it is withheld."
    )
    confidence = serializers.FloatField(allow_null=True, help_text="Its calibrated confidence.")
    suggestion_withheld = serializers.ChoiceField(
        choices=SUGGESTION_WITHHELD,
        allow_null=True,
        help_text="Why a suggestion the model made is not sent: the caller's blind mode, a cell unlike "
        "the labelled ones or those of the class it would be called (the model abstains), or a "
        "confidence below the project's "
        "suggestion_min_confidence.",
    )
    labelled_distance_ratio = serializers.FloatField(
        allow_null=True,
        help_text="The cell's distance to the nearest labelled cell when the batch was built, in units "
        "of the labelled cells' own distances to each other, or to the third-nearest labelled cell of "
        "the suggested class in that class's units when larger (null: too few labels then). Above 2.5 "
        "the model abstains: farther than 98% of the labelled cells lie from their nearest labelled one, "
        "or 98% of the suggested class's cells from their third-nearest of the class.",
    )
    attribute_suggestions = serializers.DictField(
        child=AttributeSuggestionSerializer(),
        help_text="attribute -> the attribute heads' most probable value and its probability; empty "
        "in blind mode, for a cell unlike every labelled one, below the project's "
        "suggestion_min_confidence, and until enough labelled cells carry attributes.",
    )
    skipped = serializers.BooleanField()
    mine = AnnotationSummarySerializer(allow_null=True)


class BatchWithItemsSerializer(BatchSummarySerializer):
    suggestion_min_confidence = serializers.FloatField()
    blind_mode = serializers.BooleanField(help_text="The caller's blind mode: no suggestion is sent.")
    items = BatchItemSerializer(many=True)


class CurrentBatchSerializer(Shape):
    batch = BatchWithItemsSerializer(allow_null=True, help_text="Null before the first batch.")


class LabelCountSerializer(Shape):
    count = serializers.IntegerField()
    budget = serializers.IntegerField()
    left = serializers.IntegerField(
        help_text="Cells the loop may still ask for: the budget less the cells labelled or in review and "
        "the query cells waiting in open batches. At 0 or below no new batch is built."
    )


class LoopStateSerializer(Shape):
    """What the labelling page polls (``loop.state.loop_state``)."""

    project = serializers.IntegerField()
    stage = serializers.ChoiceField(choices=STAGES)
    jobs = JobSummarySerializer(many=True, help_text="The loop's queued, waiting and running jobs.")
    last_failed = JobSummarySerializer(allow_null=True)
    encoder_version = serializers.IntegerField(allow_null=True)
    index_version = serializers.IntegerField(allow_null=True)
    classifier_version = serializers.IntegerField(allow_null=True)
    validation_macro_f1 = serializers.FloatField(allow_null=True)
    batch = BatchSummarySerializer(allow_null=True)
    labels = LabelCountSerializer()
    review_count = serializers.IntegerField(help_text="Cells waiting for a reviewer (they train nothing).")
    suspected_count = serializers.IntegerField(
        help_text="Labels that label-mistake finding doubts, in the reviewer queue (they still train)."
    )


class SubmittedSerializer(Shape):
    retrain_job = JobSummarySerializer()


class SkippedSerializer(Shape):
    cell = serializers.IntegerField()
    skipped = serializers.BooleanField()


class ProvenanceSerializer(BatchSummarySerializer):
    """One batch that chose the cell: why (rank, score) and what the model suggested."""

    batch = serializers.IntegerField(help_text="The batch's number.")
    rank = serializers.IntegerField()
    batch_size = serializers.IntegerField()
    score = serializers.FloatField(allow_null=True)
    suggestion = serializers.CharField(allow_null=True)
    confidence = serializers.FloatField(allow_null=True)


class WhySerializer(Shape):
    cell = serializers.IntegerField()
    queried = ProvenanceSerializer(many=True)
    history = HistoryEntrySerializer(many=True)


class NeighbourSerializer(Shape):
    cell = serializers.IntegerField()
    image_url = serializers.CharField()
    similarity = serializers.FloatField()
    label = serializers.CharField(allow_null=True)  # type: ignore[assignment]  # DRF stubs: Field.label


class SimilarSerializer(Shape):
    cell = serializers.IntegerField()
    index_version = serializers.IntegerField(allow_null=True, help_text="Null before the first index.")
    neighbours = NeighbourSerializer(many=True)
    labels = serializers.ChoiceField(
        choices=["resolved", "yours"],
        help_text="Whose labels the neighbours carry: the resolved label (reviewers, leads, admins) or the "
        "caller's own (annotators).",
    )
    note = serializers.CharField(required=False, help_text="Why there are no neighbours, when it is known.")
