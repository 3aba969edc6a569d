"""Background jobs: one row per unit of work a worker does, with its state, progress and outcome.

Jobs know their kinds by name only; what a kind does is registered by the app that owns it
(``jobs.registry``), so this layer imports nothing above it. ``project`` is a lazy reference for the
same reason."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q


class Job(models.Model):
    class Kind(models.TextChoices):
        IMPORT = "import", "Import cells"
        PRETRAIN = "pretrain", "Pretrain encoder"
        EMBED = "embed", "Embed and index cells"
        EMBED_SHARD = "embed_shard", "Embed a shard of the cells (for an embed job)"
        RETRAIN = "retrain", "Retrain classifier"
        FINETUNE = "finetune", "Fine-tune the encoder on the labels"
        QUERY = "query", "Build query batch"
        EXPORT = "export", "Export"
        MAP = "map", "Draw the embedding map"
        LABEL_CHECK = "label_check", "Find likely label mistakes"
        SHIFT = "shift", "Report each source's shift"
        ATTRIBUTE_HEADS = "attribute_heads", "Fit the attribute heads on the cell measurements"
        MEASURE = "measure", "Measure the cells for the attribute heads"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        # A retrain requested while another retrain of the project runs: it starts when that one ends.
        WAITING = "waiting", "Waiting for the running retrain"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    project = models.ForeignKey(
        "annotation.Project", null=True, blank=True, on_delete=models.CASCADE, related_name="jobs"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)])
    message = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # Written every few seconds while a worker runs the job; a running job whose heartbeat stopped
    # belongs to a dead worker and is handed to another (see jobs.services.job_requeue_stale).
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # When a message for this job last reached the broker; null while it never has (the broker was down
    # when the job was queued). The sweep re-sends queued jobs by it (jobs.services.job_requeue_stale).
    sent_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "annotation_job"  # created by the annotation app; moved here with its rows
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(progress__gte=0.0) & Q(progress__lte=1.0), name="job_progress_between_0_and_1"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} job {self.pk} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED
