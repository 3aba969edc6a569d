"""Which index versions keep their files on disk, and deleting the others'.

Every re-embedding (the start, each pretraining and each fine-tune) writes a new index version: the
embeddings of every cell and their FAISS index, 166 MB at 16k cells with EfficientNet-Lite0 (83 MB each).
Kept for ever they fill a disk in months of labelling. The loop only ever reads the newest index (queries,
similar cells, the map, the label check) and the index of the newest classifier (suggestions, exports,
saliency maps); a batch only names the index it was chosen on. The evaluation report scores a classifier
version on its own index. So an embed job, once its version is committed, deletes the files of every
index version but

- the newest ``settings.LEUKOLOOP_KEEP_INDEX_VERSIONS`` (3 by default; 0 keeps every file; never fewer
  than 2, so that a retrain that started on the previous index finishes on it), so that recent
  classifier versions stay scoreable in the evaluation report;
- the index of the newest classifier version: an embed job stores its index before the retrain that
  trains on it, so until then the newest classifier's index is an older one.

The version rows stay, marked ``pruned``, so that the history (label budget against accuracy) is whole;
the evaluation report says a pruned version's index is gone instead of failing.
``manage.py prune_artifacts`` applies the same rule on demand, with a dry run.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from annotation.models import Project
from loop.models import ModelVersion
from loop.selectors import latest_version

logger = logging.getLogger(__name__)

# Files an index version names (``loop.handlers.indexing``): both go when it is pruned.
INDEX_ARTIFACT_KEYS = ("embeddings", "index")

# Fewer than this kept whatever the setting says (other than 0): a retrain that started on the index
# before the newest must find its files.
MIN_KEPT_INDEX_VERSIONS = 2


def is_pruned(version: ModelVersion | None) -> bool:
    """Whether ``version``'s files were deleted by :func:`prune_index_versions` (or another pruning)."""
    return version is not None and bool(version.artifacts.get("pruned"))


def index_versions_to_keep(project: Project, keep: int) -> set[int]:
    """Primary keys of the index versions whose files stay (see the module docstring)."""
    indexes = ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.INDEX)
    kept = set(
        indexes.order_by("-version").values_list("pk", flat=True)[: max(keep, MIN_KEPT_INDEX_VERSIONS)]
    )
    newest_classifier = latest_version(project, ModelVersion.Kind.CLASSIFIER)
    if newest_classifier is not None and newest_classifier.parent_id is not None:
        kept.add(newest_classifier.parent_id)
    return kept


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


@dataclass
class Pruned:
    """What :func:`prune_index_versions` deleted (or, in a dry run, would delete)."""

    versions: list[int] = field(default_factory=list)  # version numbers
    bytes: int = 0


def prune_index_versions(project: Project, *, keep: int | None = None, dry_run: bool = False) -> Pruned:
    """Delete the files of ``project``'s index versions that :func:`index_versions_to_keep` does not keep
    (``keep``: how many of the newest; ``settings.LEUKOLOOP_KEEP_INDEX_VERSIONS`` by default, 0 keeps
    all) and mark their rows ``pruned``. A file that cannot be deleted is logged and its version keeps it
    named (the next pruning tries again)."""
    keep = settings.LEUKOLOOP_KEEP_INDEX_VERSIONS if keep is None else keep
    pruned = Pruned()
    if keep <= 0:
        return pruned
    kept = index_versions_to_keep(project, keep)
    candidates = (
        ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.INDEX)
        .exclude(pk__in=kept)
        .order_by("version")
    )
    for version in candidates:
        keys = [key for key in INDEX_ARTIFACT_KEYS if version.artifacts.get(key)]
        if not keys:
            continue
        paths = {key: version.artifact_path(key) for key in keys}
        pruned.versions.append(version.version)
        pruned.bytes += sum(_size(p) for p in paths.values())
        if dry_run:
            continue
        # Marked first: no reader takes a version whose files are going for a whole one.
        version.artifacts = {**version.artifacts, "pruned": True}
        version.save(update_fields=["artifacts"])
        for key, path in paths.items():
            try:
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
            except OSError as exc:  # left named: the next pruning tries again
                logger.warning("index v%s: %s not deleted (%s)", version.version, key, exc)
                continue
            del version.artifacts[key]
        version.save(update_fields=["artifacts"])
    if pruned.versions and not dry_run:
        logger.info(
            "project %s: index versions %s pruned (%s bytes)", project.pk, pruned.versions, pruned.bytes
        )
    return pruned


__all__ = [
    "INDEX_ARTIFACT_KEYS",
    "MIN_KEPT_INDEX_VERSIONS",
    "Pruned",
    "index_versions_to_keep",
    "is_pruned",
    "prune_index_versions",
]
