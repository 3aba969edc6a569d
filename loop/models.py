"""The active-learning loop's records: model versions (encoder, index, classifier), the batches of cells
chosen for labelling, and why each cell was chosen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q

# The keys of a version's ``artifacts`` that name files or folders (the others are figures and settings).
ARTIFACT_PATH_KEYS = ("checkpoint", "classifier", "embeddings", "index")


def relative_artifact(path: Path | str) -> str:
    """How a file under ``LEUKOLOOP_ARTIFACTS_DIR`` is recorded: relative to that folder, so a restore into
    another folder (``manage.py restore``) finds it. Raises ValueError for a path outside it."""
    return Path(path).relative_to(Path(settings.LEUKOLOOP_ARTIFACTS_DIR)).as_posix()


def artifact_file(value: str) -> Path:
    """Where a recorded artefact lies now (a value from before relative paths is absolute: kept)."""
    return Path(settings.LEUKOLOOP_ARTIFACTS_DIR) / value


class ModelVersion(models.Model):
    class Kind(models.TextChoices):
        ENCODER = "encoder", "Self-supervised encoder"
        INDEX = "index", "Embeddings and FAISS index"
        CLASSIFIER = "classifier", "Classifier"
        # Fitted beside the loop on the cells' measurements (loop.handlers.measurement_heads).
        ATTRIBUTE_HEADS = "attribute_heads", "Attribute heads on the cell measurements"

    project = models.ForeignKey("annotation.Project", on_delete=models.CASCADE, related_name="model_versions")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    version = models.PositiveIntegerField()
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    artifacts: models.JSONField[dict[str, Any], dict[str, Any]] = models.JSONField(
        default=dict, blank=True, help_text="Paths of the files this version consists of."
    )
    metrics = models.JSONField(default=dict, blank=True)
    label_count = models.PositiveIntegerField(default=0)
    # Annotation ids are never reused or overwritten, so this list pins the exact training labels.
    trained_on = models.JSONField(default=list, blank=True, help_text="Ids of the annotations used.")
    # The version this one was built from: an index's encoder, a classifier's index.
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "annotation_modelversion"  # moved from the annotation app with its rows
        ordering = ["project", "kind", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["project", "kind", "version"], name="unique_model_version"),
            # A retried job finds the version it wrote before it died instead of writing a second one.
            models.UniqueConstraint(
                fields=["job", "kind"], condition=Q(job__isnull=False), name="one_model_version_per_job"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project} {self.kind} v{self.version}"

    def artifact_path(self, key: str) -> Path:
        """The file or folder recorded under ``key`` (one of ``ARTIFACT_PATH_KEYS``)."""
        return artifact_file(str(self.artifacts[key]))


class QueryBatch(models.Model):
    """A batch of cells chosen for labelling, with the provenance of the choice."""

    project = models.ForeignKey("annotation.Project", on_delete=models.CASCADE, related_name="batches")
    number = models.PositiveIntegerField()
    requested_strategy = models.CharField(max_length=32)
    strategy = models.CharField(max_length=32, help_text="The strategy that ran (cold start replaces some).")
    classifier = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    index = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # One job writes one shared batch, or with split work one per annotator who needs one.
    job = models.ForeignKey(
        "jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="batches"
    )
    # With ``Project.split_work``, the one annotator the batch is for; None: the project's shared batch.
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    labelled_count = models.PositiveIntegerField(default=0, help_text="Labels in the project when chosen.")
    # True from the write until the retrain that wrote the batch has given every cell its attribute
    # suggestions: cells not measured yet get theirs after the write, so that no batch waits for
    # measuring (loop.handlers.retraining). The page refreshes the suggestions until it is False.
    attribute_suggestions_pending = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        db_table = "annotation_querybatch"  # moved from the annotation app with its rows
        ordering = ["project", "-number"]
        constraints = [models.UniqueConstraint(fields=["project", "number"], name="unique_batch_number")]

    def __str__(self) -> str:
        return f"{self.project} batch {self.number}"


class QueryItem(models.Model):
    """One cell of a batch: why it was chosen (score, rank) and what the model suggested."""

    class Purpose(models.TextChoices):
        QUERY = "query", "Chosen by the query strategy"
        OVERLAP = "overlap", "Agreement sample: another annotator's cell, shown a second time"
        GOLD = "gold", "Gold cell: a reviewer decided its label; measures the annotator's accuracy"

    batch = models.ForeignKey(QueryBatch, on_delete=models.CASCADE, related_name="items")
    cell = models.ForeignKey("annotation.Cell", on_delete=models.CASCADE, related_name="query_items")
    rank = models.PositiveIntegerField()
    score = models.FloatField(null=True, blank=True, help_text="The strategy's informativeness score.")
    suggestion = models.ForeignKey(
        "annotation.LabelClass", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    confidence = models.FloatField(null=True, blank=True)
    labelled_distance_ratio = models.FloatField(
        null=True,
        blank=True,
        help_text="Distance to the nearest labelled cell when the batch was built, in units of the "
        "labelled cells' own distances to each other, or to the labelled cells of the suggested class in "
        "theirs when larger (learning.shift.LabelledNeighbourhood); above learning.shift.ABSTAIN_RATIO "
        "(2.5) the model's class would be a guess.",
    )
    # What the attribute heads suggest for this cell when the batch was built: attribute -> {"value",
    # "confidence"} (loop.handlers.attribute_suggestions); empty until enough cells carry attributes.
    attribute_suggestions = models.JSONField(default=dict, blank=True)
    # Never sent to annotators: an agreement or gold cell looks like any other in their batch.
    purpose = models.CharField(max_length=8, choices=Purpose.choices, default=Purpose.QUERY)
    skipped_at = models.DateTimeField(null=True, blank=True)
    skipped_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        db_table = "annotation_queryitem"  # moved from the annotation app with its rows
        ordering = ["batch", "rank"]
        constraints = [models.UniqueConstraint(fields=["batch", "cell"], name="unique_cell_per_batch")]

    def __str__(self) -> str:
        return f"cell {self.cell_id} in batch {self.batch_id}"


class CellMeasurement(models.Model):
    """A cell's morphometry (:mod:`learning.morphometry`), measured once from its file when the attribute
    heads first need it. ``definition`` names the measurement list it was taken with: a changed list
    measures again."""

    cell = models.OneToOneField(
        "annotation.Cell", on_delete=models.CASCADE, primary_key=True, related_name="measurement"
    )
    definition = models.CharField(max_length=16)
    values = models.JSONField()

    def __str__(self) -> str:
        return f"measurements of cell {self.cell_id}"
