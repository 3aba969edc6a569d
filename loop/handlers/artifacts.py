"""Where a project's encoders, embeddings, indexes and classifiers lie on disk, and cached loading.

Every job writes into its own folder (``<artifacts>/project-<id>/job-<id>/``), so a retried job
overwrites its own half-written files and never another version's. Versions record these paths relative
to the artefacts folder (``loop.models.relative_artifact``; read back with ``ModelVersion.artifact_path``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from django.conf import settings

from jobs.models import Job
from learning.calibration import TemperatureScaled
from learning.embeddings import load_embeddings
from learning.index import EmbeddingIndex
from loop.models import ModelVersion

EMBEDDINGS_DIR = "embeddings"
INDEX_DIR = "index"
ENCODER_FILE = "encoder.pt"
CLASSIFIER_FILE = "classifier.joblib"


def job_dir(job: Job) -> Path:
    path = Path(settings.LEUKOLOOP_ARTIFACTS_DIR) / f"project-{job.project_id}" / f"job-{job.pk}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@functools.lru_cache(maxsize=4)
def _embeddings(directory: str) -> tuple[np.ndarray, np.ndarray]:
    ids, emb, _ = load_embeddings(directory, mmap=True)  # read-only pages shared by every user of it
    return ids.astype(np.int64), emb


def index_embeddings(index_version: ModelVersion) -> tuple[np.ndarray, np.ndarray]:
    """(cell ids (N,) int64, L2-normalised embeddings (N, D) float32) of an index version; cached, since
    the worker and the web process reuse the same few versions many times. Treat as read-only."""
    return _embeddings(str(index_version.artifact_path("embeddings")))


@functools.lru_cache(maxsize=4)
def _faiss_index(directory: str) -> EmbeddingIndex:
    return EmbeddingIndex.load(directory)


def faiss_index(index_version: ModelVersion) -> EmbeddingIndex:
    return _faiss_index(str(index_version.artifact_path("index")))


@functools.lru_cache(maxsize=4)
def _classifier(path: str) -> Any:
    return joblib.load(path)


def classifier(classifier_version: ModelVersion) -> TemperatureScaled:
    """The fitted ``AlignedClassifier`` of a classifier version (cached), with the temperature fitted on
    the validation cells at its retrain (``learning.calibration``; 1 for versions from before
    calibration): every probability the platform shows or uses (suggestions, query scores, the map,
    exports, the evaluation report, the TorchScript bundle) comes out of this one object."""
    raw = _classifier(str(classifier_version.artifact_path("classifier")))
    return TemperatureScaled(raw, float(classifier_version.artifacts.get("temperature", 1.0)))
