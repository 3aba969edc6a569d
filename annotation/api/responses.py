"""The shapes of the API's answers that are built as dicts by the selectors rather than by a model
serializer (``annotation.selectors.annotation_summary``, ``review_queue``, ``jobs.selectors.job_summary``):
described here for the OpenAPI schema only, so that clients and the schemathesis run
(tests/api/test_fuzz.py) hold the views to them."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from annotation.models import Annotation
from jobs.models import Job

Shape = serializers.Serializer[dict[str, Any]]

# Why a suggestion the model made is not sent to the caller: their blind mode, or (on the labelling page) a
# cell unlike the labelled ones or those of its class (the model abstains: learning.shift.ABSTAIN_RATIO) or
# a confidence below the project's ``suggestion_min_confidence``. One list for every endpoint, so the
# schema has one enum.
SUGGESTION_WITHHELD = ["blind", "unlike_labelled", "low_confidence"]


class JobSummarySerializer(Shape):
    """A job as the labelling page polls it (``jobs.selectors.job_summary``): its error's first line only."""

    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=Job.Kind.choices)
    status = serializers.ChoiceField(choices=Job.Status.choices)
    progress = serializers.FloatField(min_value=0.0, max_value=1.0)
    message = serializers.CharField(allow_blank=True)
    error = serializers.CharField(allow_blank=True, help_text="The first line of the error, if it failed.")
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)


class AnnotationSummarySerializer(Shape):
    """One label as the labelling page and the review queue show it."""

    id = serializers.IntegerField()
    cell = serializers.IntegerField()
    # (type: DRF's stubs take ``label`` for Field.label, the field's title)
    label = serializers.CharField(  # type: ignore[assignment]
        allow_null=True, help_text="The class's name; null when only unsure."
    )
    unsure = serializers.BooleanField()
    attributes = serializers.DictField(child=serializers.CharField())
    origin = serializers.ChoiceField(choices=Annotation.Origin.choices)
    annotator = serializers.CharField(allow_null=True, help_text="Null for labels that came with an import.")
    created_at = serializers.DateTimeField()


class HistoryEntrySerializer(AnnotationSummarySerializer):
    current = serializers.BooleanField()
    withdrawn = serializers.BooleanField()


class AnnotationsCreatedSerializer(Shape):
    annotations = AnnotationSummarySerializer(many=True)


class UndoneSerializer(Shape):
    withdrawn = serializers.IntegerField(help_text="The annotation taken back.")
    restored = AnnotationSummarySerializer(
        allow_null=True, help_text="The caller's earlier label of the cell, current again (if any)."
    )


class SuggestionSerializer(Shape):
    label = serializers.CharField(help_text="The suggested class's name.")  # type: ignore[assignment]
    display_name = serializers.CharField()
    confidence = serializers.FloatField(allow_null=True, min_value=0.0, max_value=1.0)


class SuspectSerializer(Shape):
    label = serializers.CharField(help_text="The doubted label's class name.")  # type: ignore[assignment]
    display_name = serializers.CharField()
    label_probability = serializers.FloatField(
        min_value=0.0, max_value=1.0, help_text="Its out-of-fold probability (lower: more likely wrong)."
    )
    rank = serializers.IntegerField(min_value=1, help_text="1: the most likely mistake of its run.")
    index_version = serializers.IntegerField(help_text="The index whose embeddings were ranked.")


class ReviewEntrySerializer(Shape):
    cell = serializers.IntegerField()
    image_url = serializers.CharField()
    reason = serializers.ChoiceField(choices=["unsure", "disagreement", "suspected_mistake"])
    annotations = AnnotationSummarySerializer(many=True)
    suggestion = SuggestionSerializer(
        allow_null=True,
        help_text="What the model suggested when the cell was last queried; for a suspected mistake, the "
        "class the out-of-fold model prefers.",
    )
    suspect = SuspectSerializer(
        allow_null=True, help_text="Why label-mistake finding doubts the cell's current label."
    )
    suggestion_withheld = serializers.ChoiceField(
        choices=SUGGESTION_WITHHELD,
        allow_null=True,
        help_text="Why no suggestion is sent: the caller's blind mode (set on the labelling page).",
    )


class ReviewQueueSerializer(Shape):
    queue = ReviewEntrySerializer(many=True)
