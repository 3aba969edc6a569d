"""A 2-D map of the latest index's embeddings (UMAP), cached on disk per index version, with what each
point can be coloured by: label, prediction, uncertainty, source.

The map is drawn by a background job (``map``), which the embed job starts after every new index: UMAP
takes seconds to minutes (numba compiles it on first use in a process), far too long for a web request.
A request that finds no map for the newest index starts that job if none is on its way and answers
"pending"; the page asks again."""

from __future__ import annotations

import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings

from annotation.labels import LabelStatus, cell_labels
from annotation.models import Cell, Project
from jobs.models import Job
from jobs.selectors import error_summary
from jobs.services import job_create
from loop.models import ModelVersion
from loop.selectors import latest_version

MAX_POINTS = 3000
SAMPLE_SEED = 0
_lock = threading.Lock()  # one computation at a time per process


def maps_dir(project: Project | int) -> Path:
    project_id = project if isinstance(project, int) else project.pk
    return Path(settings.LEUKOLOOP_ARTIFACTS_DIR) / f"project-{project_id}" / "maps"


def map_path(index: ModelVersion) -> Path:
    return maps_dir(index.project_id) / f"index-v{index.version}-umap.npz"


def sample_rows(n: int, *, limit: int = MAX_POINTS, seed: int = SAMPLE_SEED) -> np.ndarray:
    """Rows to draw: all when ``n <= limit``, else ``limit`` chosen at random (fixed seed), sorted."""
    if n <= limit:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=limit, replace=False)).astype(np.int64)


def umap_settings(n: int) -> dict[str, Any]:
    """UMAP parameters for ``n`` points: fewer epochs for small sets, which converge fast."""
    return {
        "n_components": 2,
        "n_neighbors": max(2, min(15, n - 1)),
        "min_dist": 0.1,
        "n_epochs": 200 if n > 1000 else 100 if n > 200 else 50,
        "random_state": 0,
        "init": "spectral" if n > 20 else "random",
    }


def project_2d(embeddings: np.ndarray) -> tuple[np.ndarray, str]:
    """(N, D) -> (N, 2) float32 and the method used: UMAP, or PCA when there are too few points for it."""
    n = len(embeddings)
    if n < 8:
        centred = embeddings - embeddings.mean(axis=0, keepdims=True)
        if n < 2:
            return np.zeros((n, 2), dtype=np.float32), "pca"
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T
        if xy.shape[1] < 2:
            xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
        return xy.astype(np.float32), "pca"
    import umap  # numba compiles on first use: import only when a map is really computed

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reducer = umap.UMAP(**umap_settings(n))
        xy = reducer.fit_transform(np.asarray(embeddings, dtype=np.float32))
    return np.asarray(xy, dtype=np.float32), "umap"


def _read(path: Path) -> dict[str, Any]:
    with np.load(path) as cached:
        return {
            "ids": cached["ids"].astype(np.int64),
            "xy": cached["xy"].astype(np.float32),
            "n_total": int(cached["n_total"]),
            "method": str(cached["method"]),
            "embeddings": str(cached["embeddings"]),
        }


def _embeddings_source(index: ModelVersion) -> str:
    """The embeddings a map is drawn from, as an absolute path: relative paths are the same in every
    database, and a map drawn from another database's files must not count."""
    return str(index.artifact_path("embeddings")) if index.artifacts.get("embeddings") else ""


def cached_coordinates(index: ModelVersion) -> dict[str, Any] | None:
    """The map of ``index`` if it has been drawn, else None. A cached map made from other embeddings files
    (a reused project id in a fresh database) does not count."""
    path = map_path(index)
    if not path.is_file():
        return None
    cached = _read(path)
    return cached if cached["embeddings"] == _embeddings_source(index) else None


def coordinates(index: ModelVersion) -> dict[str, Any]:
    """Cell ids (M,), 2-D coordinates (M, 2), the index's cell count and the method, from the cache or
    computed now (then cached): what the ``map`` job runs."""
    from loop.handlers.artifacts import index_embeddings

    path = map_path(index)
    source = _embeddings_source(index)
    with _lock:
        cached = cached_coordinates(index)
        if cached is None:
            ids, emb = index_embeddings(index)
            rows = sample_rows(len(ids))
            xy, method = project_2d(emb[rows])
            path.parent.mkdir(parents=True, exist_ok=True)
            # Written to a temporary file first: a reader never sees half a map.
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
            with os.fdopen(fd, "wb") as handle:
                np.savez(
                    handle,
                    ids=ids[rows],
                    xy=xy,
                    n_total=np.int64(len(ids)),
                    method=np.str_(method),
                    embeddings=np.str_(source),
                )
            os.replace(tmp, path)
            cached = _read(path)
        return cached


def _predictions(index: ModelVersion, ids: np.ndarray) -> tuple[ModelVersion | None, list[Any], list[Any]]:
    """The latest classifier's prediction and uncertainty (1 - top probability) for ``ids``, when that
    classifier was trained on this index's embeddings; otherwise no classifier and Nones."""
    from threadpoolctl import threadpool_limits

    from loop.handlers.artifacts import classifier as load_classifier
    from loop.handlers.artifacts import index_embeddings
    from loop.handlers.training_set import rows_of

    latest = latest_version(index.project_id, ModelVersion.Kind.CLASSIFIER)
    if latest is None or latest.parent_id != index.pk or len(ids) == 0:
        return None, [None] * len(ids), [None] * len(ids)
    all_ids, emb = index_embeddings(index)
    rows, found = rows_of(all_ids, ids)
    clf = load_classifier(latest)
    with threadpool_limits(limits=1):
        probs = np.asarray(clf.predict_proba(emb[rows]))
    classes = np.asarray(clf.classes)
    predicted: list[Any] = [None] * len(ids)
    uncertain: list[Any] = [None] * len(ids)
    names, tops = classes[probs.argmax(axis=1)], probs.max(axis=1)
    for j, i in enumerate(np.flatnonzero(found)):  # row j of probs belongs to ids[i]
        predicted[int(i)] = str(names[j])
        uncertain[int(i)] = round(1.0 - float(tops[j]), 4)
    return latest, predicted, uncertain


def map_request(*, project: Project, created_by: Any = None) -> Job:
    """The ``map`` job that will draw the newest index's map: one already queued or running, or a new one."""
    active = (
        Job.objects.filter(
            project=project, kind=Job.Kind.MAP, status__in=(Job.Status.QUEUED, Job.Status.RUNNING)
        )
        .order_by("pk")
        .first()
    )
    if active is not None:
        return active
    return job_create(kind=Job.Kind.MAP, project=project, created_by=created_by)


def _failed_since(project: Project, index: ModelVersion) -> Job | None:
    """The latest ``map`` job if it failed after ``index`` was made and none is on its way again."""
    latest = Job.objects.filter(project=project, kind=Job.Kind.MAP).order_by("-pk").first()
    if latest is None or latest.status != Job.Status.FAILED:
        return None
    return latest if latest.finished_at is not None and latest.finished_at >= index.created_at else None


def draw_latest_map(project: Project) -> dict[str, Any]:
    """The ``map`` job's work: the newest index's map (an index newer than the one that started the job
    is drawn instead: the dashboard only ever shows the newest)."""
    index = latest_version(project, ModelVersion.Kind.INDEX)
    if index is None:
        return {"index_version": None, "message": "no index yet: nothing to draw"}
    coords = coordinates(index)
    return {
        "index_version": index.version,
        "points": len(coords["ids"]),
        "method": coords["method"],
        "message": f"{coords['method'].upper()} map of index v{index.version} ready",
    }


def embedding_map(project: Project, *, user: Any = None) -> dict[str, Any]:
    """The map of the project's latest index: columns of equal length, one entry per drawn cell; or, while
    the map is being drawn, ``pending`` with the job that draws it (started here if none is on its way)."""
    index = latest_version(project, ModelVersion.Kind.INDEX)
    if index is None:
        return {"index_version": None, "points": None, "note": "no index yet: the cells are not embedded"}
    coords = cached_coordinates(index)
    if coords is None:
        failed = _failed_since(project, index)
        if failed is not None:
            # Not started again: the page asks every few seconds and would queue failing job after job.
            reason = error_summary(failed.error) or "no reason recorded"
            return {
                "index_version": index.version,
                "points": None,
                "failed": True,
                "job": failed.pk,
                "note": f"Drawing the map of index v{index.version} failed (job {failed.pk}: {reason}); "
                "it is drawn again with the next index.",
            }
        job = map_request(project=project, created_by=user)
        return {
            "index_version": index.version,
            "points": None,
            "pending": True,
            "job": job.pk,
            "note": f"The map of index v{index.version} is being drawn in the background (job {job.pk}).",
        }
    ids = coords["ids"]
    id_list = [int(i) for i in ids]
    states = cell_labels(project=project, cell_ids=id_list)
    sources = dict(Cell.objects.filter(pk__in=id_list).values_list("pk", "source"))
    classifier, predicted, uncertain = _predictions(index, ids)

    def label_of(cell_id: int) -> str | None:
        state = states.get(cell_id)
        if state is None:
            return None
        return state.label if state.status is LabelStatus.LABELLED else "(in review)"

    xy = coords["xy"]
    return {
        "index_version": index.version,
        "classifier_version": classifier.version if classifier else None,
        "method": coords["method"],
        "n_total": coords["n_total"],
        "n_shown": len(id_list),
        "max_points": MAX_POINTS,
        "points": {
            "cell": id_list,
            "x": [round(float(v), 4) for v in xy[:, 0]],
            "y": [round(float(v), 4) for v in xy[:, 1]],
            "label": [label_of(i) for i in id_list],
            "prediction": predicted,
            "uncertainty": uncertain,
            "source": [sources.get(i) or "(unknown)" for i in id_list],
        },
    }
