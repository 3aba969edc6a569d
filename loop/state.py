"""Reads for the labelling page and its API: the loop's state, the current batch as one annotator sees it,
and the provenance of a queried cell."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Q

from annotation.labels import label_counts
from annotation.models import Annotation, Cell, Project
from annotation.selectors import AnyUser, annotation_summary, page_preferences, suspected_count
from jobs.models import Job
from jobs.selectors import ACTIVE, job_summary
from learning.shift import ABSTAIN_RATIO
from loop.models import ModelVersion, QueryBatch, QueryItem
from loop.selectors import label_budget, latest_version

STAGE_OF_KIND = {
    Job.Kind.PRETRAIN: "pretraining",
    Job.Kind.EMBED: "indexing",
    Job.Kind.RETRAIN: "retraining",
    Job.Kind.FINETUNE: "fine-tuning",
    Job.Kind.QUERY: "querying",
    Job.Kind.IMPORT: "importing",
}


def current_batch(project: Project, user: AnyUser | None = None) -> QueryBatch | None:
    """The batch a member labels now: the project's newest shared batch, or with split work the newest
    batch of their own (None until the loop built one for them)."""
    batches = QueryBatch.objects.filter(project=project).select_related("classifier", "index", "assignee")
    if project.split_work:
        if user is None or not user.is_authenticated:
            return None
        batches = batches.filter(assignee_id=user.pk)
    else:
        batches = batches.filter(assignee__isnull=True)
    return batches.order_by("-number").first()


def batch_summary(batch: QueryBatch) -> dict[str, Any]:
    return {
        "id": batch.pk,
        "number": batch.number,
        "strategy": batch.strategy,
        "requested_strategy": batch.requested_strategy,
        "classifier_version": batch.classifier.version if batch.classifier else None,
        "index_version": batch.index.version if batch.index else None,
        "labelled_count": batch.labelled_count,
        "created_at": batch.created_at.isoformat(),
        "submitted": batch.submitted_at is not None,
        "assignee": batch.assignee.get_username() if batch.assignee_id and batch.assignee else None,
        "attribute_suggestions_pending": attribute_suggestions_pending(batch),
    }


def attribute_suggestions_pending(batch: QueryBatch) -> bool:
    """Whether more attribute suggestions are coming for the batch's cells: its flag is set and the job
    that wrote it is still running (one that died after the write sends no more)."""
    if not batch.attribute_suggestions_pending or batch.job_id is None:
        return False
    return Job.objects.filter(pk=batch.job_id, status__in=ACTIVE).exists()


def loop_state(*, project: Project, user: AnyUser | None = None) -> dict[str, Any]:
    """What the page polls: the loop's running jobs with progress, the versions in use, the newest batch.
    Exports and the dashboard's map run beside the loop and hold no one up, so they are left out."""
    active = list(
        Job.objects.filter(project=project, status__in=ACTIVE, kind__in=list(STAGE_OF_KIND)).order_by(
            "created_at", "pk"
        )
    )
    last_failed = (
        Job.objects.filter(project=project, status=Job.Status.FAILED, kind__in=list(STAGE_OF_KIND))
        .order_by("-finished_at", "-pk")
        .first()
    )
    batch = current_batch(project, user)
    running = next((j for j in active if j.status == Job.Status.RUNNING), active[0] if active else None)
    if running is not None:
        stage = STAGE_OF_KIND.get(Job.Kind(running.kind), running.kind)
    elif batch is not None:
        stage = "ready"
    else:
        stage = "idle"
    counts = label_counts(project=project)
    classifier = latest_version(project, ModelVersion.Kind.CLASSIFIER)
    return {
        "project": project.pk,
        "stage": stage,
        "jobs": [job_summary(j) for j in active],
        "last_failed": job_summary(last_failed) if last_failed else None,
        "encoder_version": getattr(latest_version(project, ModelVersion.Kind.ENCODER), "version", None),
        "index_version": getattr(latest_version(project, ModelVersion.Kind.INDEX), "version", None),
        "classifier_version": getattr(classifier, "version", None),
        "validation_macro_f1": (classifier.metrics or {}).get("macro_f1") if classifier else None,
        "batch": batch_summary(batch) if batch else None,
        "labels": {
            "count": counts.labelled,
            "budget": project.label_budget,
            # What the loop may still ask for (loop.selectors.LabelBudget): at 0 no batch is built.
            "left": label_budget(project, counts).left,
        },
        "review_count": counts.review,
        "suspected_count": suspected_count(project=project),
    }


def current_labels_of(*, user: AnyUser, cell_ids: list[int]) -> dict[int, Annotation]:
    """The user's current annotation of each of ``cell_ids`` that has one."""
    return {
        a.cell_id: a
        for a in Annotation.objects.filter(
            cell_id__in=cell_ids, annotator_id=user.pk, superseded_by__isnull=True
        ).select_related("label", "annotator")
    }


@dataclass(frozen=True)
class SuggestionRule:
    """Which of the model's suggestions the labelling page shows one user: none in blind mode, else those
    whose calibrated confidence reaches the project's ``suggestion_min_confidence``."""

    min_confidence: float
    blind: bool

    @classmethod
    def for_user(cls, *, project: Project, user: AnyUser) -> SuggestionRule:
        blind = bool(page_preferences(user=user)["blind_mode"])
        return cls(min_confidence=project.suggestion_min_confidence, blind=blind)

    def withheld(self, item: QueryItem) -> str | None:
        """Why the item's suggestion is not shown ("blind", "unlike_labelled", "low_confidence"), or None
        when it is."""
        if self.blind:
            return "blind"  # also where the model has none: the page says nothing either way
        if item.suggestion_id is None:
            return None
        if self.unlike_labelled(item):
            return "unlike_labelled"
        if not self.confident(item.confidence):
            return "low_confidence"
        return None

    @staticmethod
    def unlike_labelled(item: QueryItem) -> bool:
        """Far from every labelled cell (another lab's, say) the model's guesses are guesses, however
        confident: it was confidently wrong on another lab's cells (bench/README.md, shift report)."""
        ratio = item.labelled_distance_ratio
        return ratio is not None and ratio > ABSTAIN_RATIO

    def confident(self, confidence: float | None) -> bool:
        """Whether a calibrated confidence reaches the lead's threshold (always, with no threshold)."""
        return self.min_confidence <= 0 or (confidence is not None and confidence >= self.min_confidence)


@dataclass(frozen=True)
class SentSuggestion:
    name: str | None
    confidence: float | None
    withheld: str | None  # why it is not sent: "blind", "unlike_labelled", "low_confidence", or None


def sent_suggestion(item: QueryItem, rule: SuggestionRule | None) -> SentSuggestion:
    """What of the item's suggestion a reader under ``rule`` (None: no restriction) is sent. A withheld
    suggestion is not sent at all (blind mode, below the lead's threshold): the page cannot show it, nor
    can Enter accept it; nor one of a class retired since the batch was built (it cannot be labelled)."""
    withheld = rule.withheld(item) if rule is not None else None
    if withheld is None and item.suggestion is not None and item.suggestion.is_active:
        return SentSuggestion(item.suggestion.name, item.confidence, None)
    return SentSuggestion(None, None, withheld)


def sent_attribute_suggestions(item: QueryItem, rule: SuggestionRule | None) -> dict[str, Any]:
    """The attribute heads' suggestions a reader under ``rule`` is sent: none in blind mode or for a cell
    unlike every labelled one (as for the class), and only those that reach the lead's threshold."""
    suggestions = dict(item.attribute_suggestions or {})
    if rule is None:
        return suggestions
    if rule.blind or rule.unlike_labelled(item):
        return {}
    return {name: s for name, s in suggestions.items() if rule.confident(s.get("confidence"))}


def _item_summary(item: QueryItem, mine: Annotation | None, rule: SuggestionRule) -> dict[str, Any]:
    sent = sent_suggestion(item, rule)
    return {
        "cell": item.cell_id,
        "rank": item.rank,
        "image_url": f"/cells/{item.cell_id}/image",
        "score": item.score,
        "suggestion": sent.name,
        "confidence": sent.confidence,
        "suggestion_withheld": sent.withheld,
        "labelled_distance_ratio": item.labelled_distance_ratio,
        "attribute_suggestions": sent_attribute_suggestions(item, rule),
        "skipped": item.skipped_at is not None,
        "mine": annotation_summary(mine) if mine is not None else None,
    }


def batch_for_annotator(*, batch: QueryBatch, user: AnyUser) -> dict[str, Any]:
    """The batch's cells in query order with the model's suggestion (as ``SuggestionRule`` lets this user
    see it) and this user's current label."""
    items = list(batch.items.select_related("suggestion").order_by("rank"))
    mine = current_labels_of(user=user, cell_ids=[i.cell_id for i in items])
    rule = SuggestionRule.for_user(project=batch.project, user=user)
    return {
        **batch_summary(batch),
        "suggestion_min_confidence": rule.min_confidence,
        "blind_mode": rule.blind,
        "items": [_item_summary(item, mine.get(item.cell_id), rule) for item in items],
    }


def item_for_annotator(*, item: QueryItem, user: AnyUser) -> dict[str, Any]:
    """One cell of a batch as ``batch_for_annotator`` lists it."""
    rule = SuggestionRule.for_user(project=item.batch.project, user=user)
    mine = current_labels_of(user=user, cell_ids=[item.cell_id]).get(item.cell_id)
    return _item_summary(item, mine, rule)


def _shown(item: QueryItem, rule: SuggestionRule | None) -> bool:
    return rule is None or rule.withheld(item) is None


def cell_provenance(
    *, cell: Cell, rule: SuggestionRule | None = None, reader: AnyUser | None = None
) -> list[dict[str, Any]]:
    """Every batch that chose this cell: strategy, score, rank, model and index versions, and the model's
    suggestion where ``rule`` (the reader's, as on the labelling page) lets it be seen. ``reader``: an
    annotator, who sees only the shared batches and their own (not that it was in another's)."""
    items = QueryItem.objects.filter(cell=cell)
    if reader is not None:
        items = items.filter(Q(batch__assignee__isnull=True) | Q(batch__assignee_id=reader.pk))
    items = items.select_related("batch__classifier", "batch__index", "batch__assignee", "suggestion")
    return [
        {
            **batch_summary(item.batch),
            "batch": item.batch.number,
            "rank": item.rank,
            "batch_size": item.batch.items.count(),
            "score": item.score,
            "suggestion": item.suggestion.name if item.suggestion and _shown(item, rule) else None,
            "confidence": item.confidence if _shown(item, rule) else None,
        }
        for item in items.order_by("-batch__number")
    ]
