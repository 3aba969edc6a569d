"""Evaluation report of one classifier version on a project's test cells, as clinicians validate cell
counters: per-class F1, confusion, calibration and a differential-count comparison per slide.

Which cells: by default the project's ``role=test`` cells (e.g. an external cohort imported with
``default_role="test"``), optionally only one ``source``; a project without any test cells (the demo)
is scored on its validation cells instead, and the report says so (``cell_role``). Per-class scores, the
confusion matrix and the differential follow the project's class order (the labelling page's keys).

A cell's true class is its resolved annotation label (:func:`annotation.labels.cell_labels`, labelled
cells only), else its hidden reference label, the same rule as the validation cells of
:mod:`loop.handlers.training_set`; cells with neither are counted as ``unlabelled`` and left out.

Predictions: the version's classifier applied to the embeddings of its index version (``parent``).
Cells imported after that index was built have no embedding: they are counted and listed under
``not_scored`` ("imported after the index; re-embed") and left out of every score.

Scores (:func:`learning.evaluation.evaluate`): over the classes present in the test set's true labels,
so a cohort holding 5 of the 9 classes is scored over those 5; predictions of an absent class still
count as errors. Macro-F1 with a percentile bootstrap interval, per-class F1, confusion matrix (rows
true, columns predicted, over every true or predicted class), top-label ECE (15 bins, Guo et al. 2017),
per-source scores.

Reliability diagram: 10 equal-width confidence bins (lo, hi]; per bin the number of cells, their mean
top-label confidence and their accuracy, plus the ECE over these 10 bins.

Before and after adapting (:func:`source_comparison`): the same cells scored by this version and an
earlier one, per source, beside how many labels of each source each version was trained on. A lead
who pointed the query at a new site (``Project.query_source``) sees the new site's score move with its
labels, and whether the old sources' scores held (forgetting).

Differential count: cells are grouped per slide (``slide_id``; a cell without one is grouped by its
``source``, and by "unknown" without either). For each slide and class: the true proportion, the
predicted proportion and their absolute difference; the true and the predicted proportions of a slide
each sum to 1 over the listed classes (every class that is true or predicted anywhere in the set). Per
class, the mean absolute difference across slides (each slide weighted equally) summarises the
agreement, as in CellaVision-style validations of automated differentials against the reference count.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from django.db.models import QuerySet
from threadpoolctl import threadpool_limits

from annotation.labels import LabelStatus, cell_labels
from annotation.models import Cell, Project
from learning.evaluation import evaluate, macro_f1
from loop.handlers.artifacts import classifier as load_classifier
from loop.handlers.artifacts import index_embeddings
from loop.handlers.retention import is_pruned
from loop.handlers.training_set import rows_of
from loop.models import ModelVersion

RELIABILITY_BINS = 10
NOT_SCORED_REASON = "imported after the index; re-embed"


def pruned_message(version: ModelVersion) -> str:
    """Why classifier ``version`` cannot be scored any more: its index's files were deleted to save disk
    (``loop.handlers.retention``)."""
    index = version.parent
    return (
        f"classifier version {version.version} cannot be scored any more: the embeddings of its index "
        f"(v{index.version if index else '?'}) were deleted to save disk, as the platform keeps only the "
        "newest index versions (LEUKOLOOP_KEEP_INDEX_VERSIONS); its validation figures stay on the dashboard"
    )


UNKNOWN = "unknown"
DIFFERENTIAL_METHOD = (
    "Per slide (slide_id; cells without one are grouped by source): the true and the predicted "
    "proportion of each class and their absolute difference; per class, the mean absolute difference "
    "across slides, each slide weighted equally (as in CellaVision-style validations of automated "
    "differential counts against the reference count)."
)


class ReportError(ValueError):
    """The version cannot be evaluated (not a classifier, or no index behind it)."""


class IndexPruned(ReportError):
    """The version's index files were deleted to save disk (``loop.handlers.retention``): the pages
    answer 410 Gone with :func:`pruned_message`."""


VALIDATION_FALLBACK = (
    "This project has no test cells, so the report scores its validation cells instead: held out of "
    "every training set, but the ones the loop's own validation scores come from, so not an "
    "independent test. For a proper test, import an external set with `import_cells --role test`."
)


def evaluation_role(project_id: int) -> str:
    """The cells a report scores: the project's test cells; without any (the demo, a project that never
    imported a test set), its validation cells, which no classifier is trained on."""
    if Cell.objects.filter(project_id=project_id, role=Cell.Role.TEST).exists():
        return str(Cell.Role.TEST)
    return str(Cell.Role.VALIDATION)


def evaluation_cells(project_id: int, *, source: str | None = None) -> Any:
    """The cells of :func:`evaluation_role` (optionally of one ``source``), as a queryset."""
    cells = Cell.objects.filter(project_id=project_id, role=evaluation_role(project_id))
    if source is not None:
        cells = cells.filter(source=source)
    return cells


def in_display_order(labels: Iterable[str], order: list[str]) -> list[str]:
    """``labels`` in the project's class order (the labelling page's keys 1-9), unknown ones last."""
    rank = {name: i for i, name in enumerate(order)}
    return sorted(labels, key=lambda name: (rank.get(name, len(rank)), name))


def _metrics_in_display_order(metrics: dict[str, Any], order: list[str]) -> dict[str, Any]:
    """Per-class F1 and the confusion matrix (rows and columns) in the project's class order."""
    labels = in_display_order(metrics["labels"], order)
    confusion = metrics["confusion"]
    where = {name: i for i, name in enumerate(confusion["labels"])}
    axis = in_display_order(confusion["labels"], order)
    matrix = [[confusion["matrix"][where[t]][where[p]] for p in axis] for t in axis]
    return {
        **metrics,
        "labels": labels,
        "per_class_f1": {name: metrics["per_class_f1"][name] for name in labels},
        "confusion": {**confusion, "labels": axis, "matrix": matrix},
    }


def reliability_bins(
    confidence: np.ndarray, correct: np.ndarray, *, n_bins: int = RELIABILITY_BINS
) -> dict[str, Any]:
    """Reliability diagram of top-label ``confidence`` (N,) against ``correct`` (N,) bool: ``n_bins``
    equal-width bins (lo, hi] (confidence 0 in the first), each ``{"lo", "hi", "n", "confidence",
    "accuracy"}`` (means; None in an empty bin), and the ECE over these bins."""
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    hit_sum = np.bincount(idx, weights=hit, minlength=n_bins)
    bins = []
    for b in range(n_bins):
        n = int(counts[b])
        bins.append(
            {
                "lo": b / n_bins,
                "hi": (b + 1) / n_bins,
                "n": n,
                "confidence": float(conf_sum[b] / n) if n else None,
                "accuracy": float(hit_sum[b] / n) if n else None,
            }
        )
    ece = float(np.abs(hit_sum - conf_sum).sum() / len(conf)) if len(conf) else None
    return {"n_bins": n_bins, "bins": bins, "ece": ece}


def differential_counts(
    y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, *, classes: list[str]
) -> dict[str, Any]:
    """True vs predicted class proportions per group (slide). ``classes`` must hold every value of
    ``y_true`` and ``y_pred``. Returns ``{"classes", "slides": [{"slide", "n", "true": {c: p},
    "predicted": {c: p}, "abs_diff": {c: d}}], "mean_abs_diff": {c: d}, "overall_mean_abs_diff"}``."""
    t, p, g = np.asarray(y_true, dtype=str), np.asarray(y_pred, dtype=str), np.asarray(groups, dtype=str)
    slides = []
    diffs = np.zeros((0, len(classes)), dtype=np.float64)
    for group in sorted(set(g.tolist())):
        rows = g == group
        n = int(rows.sum())
        true_p = np.array([(t[rows] == c).sum() / n for c in classes], dtype=np.float64)
        pred_p = np.array([(p[rows] == c).sum() / n for c in classes], dtype=np.float64)
        diff = np.abs(true_p - pred_p)
        diffs = np.vstack([diffs, diff])
        slides.append(
            {
                "slide": group,
                "n": n,
                "true": dict(zip(classes, true_p.tolist(), strict=True)),
                "predicted": dict(zip(classes, pred_p.tolist(), strict=True)),
                "abs_diff": dict(zip(classes, diff.tolist(), strict=True)),
            }
        )
    mean = diffs.mean(axis=0) if len(diffs) else np.zeros(len(classes))
    return {
        "classes": classes,
        "slides": slides,
        "mean_abs_diff": dict(zip(classes, mean.tolist(), strict=True)) if len(diffs) else {},
        "overall_mean_abs_diff": float(mean.mean()) if len(diffs) and len(classes) else None,
        "method": DIFFERENTIAL_METHOD,
    }


def _cell_ids(cells: Iterable[Cell | int] | QuerySet[Cell]) -> list[int]:
    if isinstance(cells, QuerySet):
        return [int(pk) for pk in cells.values_list("pk", flat=True)]
    return [int(c.pk) if isinstance(c, Cell) else int(c) for c in cells]


def _labelled(project: Project, cell_ids: list[int]) -> tuple[list[dict[str, Any]], int]:
    """(rows {"id", "label", "source", "slide"} sorted by id, count of cells without any label)."""
    rows = (
        Cell.objects.filter(pk__in=cell_ids, project=project)
        .order_by("pk")
        .values("pk", "source", "slide_id", "reference_label__name")
    )
    states = cell_labels(project=project, cell_ids=cell_ids)
    out: list[dict[str, Any]] = []
    unlabelled = 0
    for row in rows:
        state = states.get(int(row["pk"]))
        label = state.label if state is not None and state.status is LabelStatus.LABELLED else None
        label = label or row["reference_label__name"]
        if not label:
            unlabelled += 1
            continue
        source = row["source"] or UNKNOWN
        out.append(
            {"id": int(row["pk"]), "label": label, "source": source, "slide": row["slide_id"] or source}
        )
    return out, unlabelled


def evaluation_report(
    version: ModelVersion,
    cells: Iterable[Cell | int] | QuerySet[Cell] | None = None,
    *,
    source: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The report of classifier ``version`` on ``cells`` (default: the project's test cells), optionally
    only those of ``source``. JSON-able; see the module docstring for every part."""
    if version.kind != ModelVersion.Kind.CLASSIFIER:
        raise ReportError(f"version {version.pk} is a {version.kind} version, not a classifier")
    index = version.parent
    if index is None or index.kind != ModelVersion.Kind.INDEX:
        raise ReportError(f"classifier version {version.pk} has no index version to embed its cells")
    if is_pruned(index):
        raise IndexPruned(pruned_message(version))
    project = version.project
    role = evaluation_role(project.pk) if cells is None else None
    chosen = evaluation_cells(project.pk) if cells is None else cells
    if source is not None:
        chosen = Cell.objects.filter(pk__in=_cell_ids(chosen), source=source)
    labelled, unlabelled = _labelled(project, _cell_ids(chosen))

    ids, emb = index_embeddings(index)
    wanted = np.array([r["id"] for r in labelled], dtype=np.int64)
    if len(ids) and len(wanted):
        rows, found = rows_of(ids, wanted)
    else:
        rows, found = np.zeros(0, dtype=np.int64), np.zeros(len(wanted), dtype=bool)
    scored = [r for r, f in zip(labelled, found.tolist(), strict=True) if f]
    missing = [r["id"] for r, f in zip(labelled, found.tolist(), strict=True) if not f]

    clf = load_classifier(version)
    classes = [str(c) for c in clf.classes]
    report: dict[str, Any] = {
        "version": {
            "id": version.pk,
            "number": version.version,
            "index_version": index.version,
            "label_count": version.label_count,
            "created_at": version.created_at.isoformat(),
        },
        "project": project.pk,
        # Which cells were scored: "test", "validation" (the project has no test cells) or None (given).
        "cell_role": role,
        "cell_role_note": VALIDATION_FALLBACK if role == Cell.Role.VALIDATION else "",
        "source_filter": source,
        "n_selected": len(labelled) + unlabelled,
        "unlabelled": unlabelled,
        "not_scored": {"n": len(missing), "reason": NOT_SCORED_REASON, "cell_ids": missing},
        "n": len(scored),
        "classes": classes,
    }
    if not scored:
        report.update(labels=[], metrics=None, reliability=None, differential=None, cells=[])
        return report

    with threadpool_limits(limits=1):
        probs = np.asarray(clf.predict_proba(emb[rows]), dtype=np.float64)
    top = probs.argmax(axis=1)
    predicted = np.asarray(classes)[top]
    confidence = probs.max(axis=1)
    truth = np.array([r["label"] for r in scored], dtype=str)
    sources = np.array([r["source"] for r in scored], dtype=str)
    slides = np.array([r["slide"] for r in scored], dtype=str)

    metrics = evaluate(
        truth, predicted, probs=probs, classes=classes, sources=sources, n_boot=n_boot, seed=seed
    )
    metrics["per_source"] = {str(k): v for k, v in metrics.get("per_source", {}).items()}
    order = list(project.classes.values_list("name", flat=True))
    metrics = _metrics_in_display_order(metrics, order)
    support = {lab: int((truth == lab).sum()) for lab in metrics["labels"]}
    present = set(truth.tolist()) | set(predicted.tolist())
    diff_classes = in_display_order(present, order)
    report.update(
        labels=metrics["labels"],
        metrics={**metrics, "support": support, "ece_bins": 15},
        reliability=reliability_bins(confidence, predicted == truth),
        differential=differential_counts(truth, predicted, slides, classes=diff_classes),
        cells=[
            {
                "id": r["id"],
                "true": r["label"],
                "predicted": str(p),
                "confidence": float(c),
                "source": r["source"],
                "slide": r["slide"],
            }
            for r, p, c in zip(scored, predicted.tolist(), confidence.tolist(), strict=True)
        ],
    )
    return report


def _labels_per_source(version: ModelVersion) -> dict[str, int]:
    """How many of the labels a classifier version was trained on came from each source."""
    from django.db.models import Count

    from annotation.models import Annotation

    rows = (
        Annotation.objects.filter(pk__in=version.trained_on)
        .values("cell__source")
        .annotate(n=Count("cell", distinct=True))
    )
    return {str(r["cell__source"] or UNKNOWN): int(r["n"]) for r in rows}


def _predicted(version: ModelVersion, cell_ids: np.ndarray) -> dict[int, str]:
    """The version's class for each of ``cell_ids`` its index holds."""
    assert version.parent is not None
    ids, emb = index_embeddings(version.parent)
    if not len(ids) or not len(cell_ids):
        return {}
    rows, found = rows_of(ids, cell_ids)
    clf = load_classifier(version)
    with threadpool_limits(limits=1):
        probs = np.asarray(clf.predict_proba(emb[rows]))
    names = np.asarray([str(c) for c in clf.classes])[probs.argmax(axis=1)]
    return {int(c): str(n) for c, n in zip(cell_ids[found].tolist(), names.tolist(), strict=True)}


def source_comparison(
    before: ModelVersion, after: ModelVersion, cells: Iterable[Cell | int] | QuerySet[Cell] | None = None
) -> dict[str, Any]:
    """Per source, the macro-F1 of ``before`` and ``after`` on the same evaluation cells (default: the
    project's test cells, else its validation cells; only cells both versions' indexes hold), and the
    labels of that source each was trained on. ``change`` is after minus before: up on a new site after
    adapting, and below 0 on an old one where the labels of the new site cost it (forgetting)."""
    for version in (before, after):
        if version.kind != ModelVersion.Kind.CLASSIFIER or version.parent is None:
            raise ReportError(f"version {version.pk} is not a classifier with an index")
        if is_pruned(version.parent):
            raise IndexPruned(pruned_message(version))
    project = after.project
    chosen = evaluation_cells(project.pk) if cells is None else cells
    labelled, _ = _labelled(project, _cell_ids(chosen))
    wanted = np.array(sorted(r["id"] for r in labelled), dtype=np.int64)
    first, second = _predicted(before, wanted), _predicted(after, wanted)
    scored = [r for r in labelled if r["id"] in first and r["id"] in second]
    labels_before, labels_after = _labels_per_source(before), _labels_per_source(after)
    by_source: dict[str, list[dict[str, Any]]] = {}
    for r in scored:
        by_source.setdefault(r["source"], []).append(r)

    def score(predictions: dict[int, str], rows: list[dict[str, Any]]) -> float:
        return macro_f1([r["label"] for r in rows], [predictions[r["id"]] for r in rows])

    sources = []
    for name in sorted(set(by_source) | set(labels_before) | set(labels_after)):
        rows = by_source.get(name, [])
        f1_before = score(first, rows) if rows else None
        f1_after = score(second, rows) if rows else None
        sources.append(
            {
                "source": name,
                "n": len(rows),
                "labels_before": labels_before.get(name, 0),
                "labels_after": labels_after.get(name, 0),
                "macro_f1_before": f1_before,
                "macro_f1_after": f1_after,
                "change": None if f1_before is None or f1_after is None else f1_after - f1_before,
            }
        )
    return {
        "before": {"number": before.version, "label_count": before.label_count},
        "after": {"number": after.version, "label_count": after.label_count},
        "n": len(scored),
        "sources": sources,
    }
