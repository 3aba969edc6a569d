"""Sharded embedding on real cells: an embed job over more cells than a shard splits them into shard jobs,
embeds every shard no other worker took, and writes the same embeddings as one pass would, memory-mapped;
a shard another worker embedded is not embedded again."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from annotation.models import Cell, Project
from jobs.models import Job
from jobs.services import job_create
from jobs.tasks import run_job
from loop.handlers.artifacts import EMBEDDINGS_DIR, index_embeddings, job_dir
from loop.handlers.encoders import encoder_crop, load_backbone
from loop.handlers.sharding import SHARDS_DIR, _shard_jobs, embed_cells, embed_in_shards, shard_ranges
from loop.models import ModelVersion
from loop.selectors import latest_version
from tests.conftest import run_queued_jobs

pytestmark = [pytest.mark.django_db, pytest.mark.realdata, pytest.mark.usefixtures("own_artifacts")]

SHARD = 20  # the loop project's 72 cells make 4 shards


def one_pass(project: Project, encoder: ModelVersion) -> np.ndarray:
    model, size = load_backbone(encoder)
    return embed_cells(
        model, size, encoder_crop(encoder), list(Cell.objects.filter(project=project).order_by("pk"))
    )


def test_an_embed_job_shards_its_cells_and_writes_what_one_pass_would(
    loop_project: Project, settings: Any
) -> None:
    settings.LEUKOLOOP_EMBED_SHARD_CELLS = SHARD
    job_create(kind=Job.Kind.PRETRAIN, project=loop_project)
    run_queued_jobs()
    index = latest_version(loop_project, ModelVersion.Kind.INDEX)
    assert index is not None and index.artifacts["n_cells"] == 72
    assert (index.metrics["shards"], index.metrics["shards_embedded_by_this_job"]) == (4, 4)
    ids, emb = index_embeddings(index)
    assert isinstance(emb, np.memmap) and not emb.flags.writeable  # memory-mapped, read-only
    assert ids.tolist() == sorted(Cell.objects.filter(project=loop_project).values_list("pk", flat=True))
    np.testing.assert_allclose(emb, one_pass(loop_project, index.parent), atol=1e-5)  # type: ignore[arg-type]
    shards = Job.objects.filter(project=loop_project, kind=Job.Kind.EMBED_SHARD)
    assert shards.count() == 4 and set(shards.values_list("status", flat=True)) == {Job.Status.SUCCEEDED}
    # Their files went once the index version was stored: the embeddings hold them.
    embed = Job.objects.get(project=loop_project, kind=Job.Kind.EMBED)
    assert not (job_dir(embed) / SHARDS_DIR).exists()
    assert (job_dir(embed) / EMBEDDINGS_DIR).is_dir()
    # Their messages, delivered later to another worker, run nothing.
    assert {run_job(job.pk) for job in shards} == {"skipped"}


def test_a_shard_another_worker_embedded_is_not_embedded_again(loop_project: Project, settings: Any) -> None:
    job_create(kind=Job.Kind.PRETRAIN, project=loop_project)
    run_queued_jobs()  # unsharded: 72 cells are fewer than the default shard
    encoder = latest_version(loop_project, ModelVersion.Kind.ENCODER)
    assert encoder is not None
    settings.LEUKOLOOP_EMBED_SHARD_CELLS = SHARD
    parent = job_create(kind=Job.Kind.EMBED, project=loop_project, params={"encoder_version": encoder.pk})
    ids = np.array(sorted(Cell.objects.filter(project=loop_project).values_list("pk", flat=True)))
    shard_jobs = _shard_jobs(parent, encoder, ids, shard_ranges(ids, SHARD))
    assert run_job(shard_jobs[2].pk) == "succeeded"  # another train worker took shard 2 first
    run_queued_jobs()
    parent.refresh_from_db()
    assert parent.status == Job.Status.SUCCEEDED, parent.error
    index = ModelVersion.objects.get(job=parent, kind=ModelVersion.Kind.INDEX)
    assert (index.metrics["shards"], index.metrics["shards_embedded_by_this_job"]) == (4, 3)
    np.testing.assert_allclose(index_embeddings(index)[1], one_pass(loop_project, encoder), atol=1e-5)


def test_progress_rises_shard_by_shard_within_the_first_pass(
    loop_project: Project, settings: Any, tmp_path: Any
) -> None:
    """The embed job claims and embeds shard after shard in its first pass over them; at a million cells
    that pass is most of the embedding, so it must report after each shard, not once at the pass's end."""
    job_create(kind=Job.Kind.PRETRAIN, project=loop_project)
    run_queued_jobs()
    encoder = latest_version(loop_project, ModelVersion.Kind.ENCODER)
    assert encoder is not None
    parent = job_create(
        kind=Job.Kind.EMBED, project=loop_project, params={"encoder_version": encoder.pk}, enqueue=False
    )
    cells = list(Cell.objects.filter(project=loop_project).order_by("pk"))
    reported: list[tuple[float, str]] = []
    _, counts = embed_in_shards(
        parent, encoder, cells, tmp_path, lambda f, m: reported.append((f, m)), shard_cells=SHARD
    )
    assert counts == {"shards": 4, "shards_embedded_by_this_job": 4}
    assert reported == [(0.95 * k / 4, f"embedded {k} of 4 shards") for k in range(1, 5)]
