"""Exports on real cells: ImageFolder zip and CSV import back with the same cells and labels; JSON
Lines and COCO carry labels, history and predictions; the TorchScript bundle runs in a fresh Python
with plain torch and agrees with the platform's classifier; only leads and admins may export."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.test import Client

from annotation.importing.service import LabelMode, import_cells
from annotation.labels import LabelStatus, cell_labels
from annotation.models import Annotation, Cell, Membership, Project
from annotation.services.annotations import annotation_create, annotation_withdraw
from annotation.services.memberships import membership_set
from annotation.services.projects import project_create
from exports.service import export_path, export_request
from jobs.models import Job
from jobs.services import job_create
from learning.export import readme_code
from learning.shift import ABSTAIN_RATIO, SUGGESTION_MIN_CONFIDENCE
from loop.handlers.artifacts import classifier, index_embeddings
from loop.handlers.training_set import rows_of
from loop.models import ModelVersion, QueryBatch
from loop.selectors import latest_version
from loop.services.batches import batch_submit
from tests.abstention_by_hand import distance_ratio_by_hand
from tests.conftest import run_queued_jobs

pytestmark = [pytest.mark.django_db, pytest.mark.realdata, pytest.mark.usefixtures("own_artifacts")]


def run_export(project: Project, fmt: str, user: User) -> Path:
    job = export_request(project=project, fmt=fmt, created_by=user)
    run_queued_jobs()
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.progress == 1.0 and job.result["format"] == fmt
    path = export_path(job)
    assert path.is_file() and path.parent.name == "exports"
    assert path.parent.parent.name == f"project-{project.pk}"
    return path


def labels_by_hash(project: Project) -> dict[str, str]:
    states = cell_labels(project=project)
    return {
        cell.content_hash: str(states[cell.pk].label)
        for cell in Cell.objects.filter(project=project)
        if cell.pk in states and states[cell.pk].status is LabelStatus.LABELLED
    }


def label_with_history(project: Project, annotator: User) -> dict[str, str]:
    """Label 20 cells with their reference labels (one after changing its mind, one with an attribute),
    take one label back, flag one cell unsure; returns the expected {content hash: current label}."""
    cells = list(Cell.objects.filter(project=project).select_related("reference_label").order_by("pk"))
    classes = list(project.classes.all())
    attribute, values = next(iter(project.attribute_values().items()))
    first = cells[0]
    wrong = next(c for c in classes if c != first.reference_label)
    annotation_create(cell=first, annotator=annotator, label=wrong)  # superseded below
    for i, cell in enumerate(cells[:20]):
        attributes = {attribute: values[0]} if i == 1 else None
        annotation_create(cell=cell, annotator=annotator, label=cell.reference_label, attributes=attributes)
    taken_back = annotation_create(cell=cells[20], annotator=annotator, label=wrong)
    annotation_withdraw(annotation=taken_back, user=annotator)
    annotation_create(cell=cells[21], annotator=annotator, label=None, unsure=True)
    return {c.content_hash: c.reference_label.name for c in cells[:20] if c.reference_label is not None}


def test_imagefolder_zip_and_csv_import_back_with_the_same_cells_and_labels(
    loop_project: Project, annotator: User, lead: User
) -> None:
    expected = label_with_history(loop_project, annotator)
    assert len(expected) == 20 and labels_by_hash(loop_project) == expected
    attribute, values = next(iter(loop_project.attribute_values().items()))
    second = Cell.objects.filter(project=loop_project).order_by("pk")[1]

    archive = run_export(loop_project, "imagefolder", lead)
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        manifest = list(csv.DictReader(io.StringIO(zf.read("manifest.csv").decode())))
    images = [n for n in names if n != "manifest.csv"]
    assert len(images) == 20 and all(n.count("/") == 1 for n in images)
    assert {row["path"] for row in manifest} == set(images)
    assert all(row["path"].split("/")[0] == row["label"] for row in manifest)

    copy = project_create(name="from-zip")
    report = import_cells(project=copy, source=archive, labels=LabelMode.ANNOTATIONS)
    assert report.imported == 20 and not report.errors, report.as_dict()
    assert labels_by_hash(copy) == expected
    again = Cell.objects.get(project=copy, content_hash=second.content_hash)
    assert cell_labels(project=copy)[again.pk].attributes == {attribute: values[0]}
    assert again.role == second.role and again.source == second.source

    table = run_export(loop_project, "csv", lead)
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 72 and rows[0].keys() >= {"path", "label", "annotations", "predicted_label"}
    history = {int(r["cell_id"]): json.loads(r["annotations"]) for r in rows}
    cells = list(Cell.objects.filter(project=loop_project).order_by("pk"))
    assert [a["state"] for a in history[cells[0].pk]] == ["superseded", "current"]
    assert [a["state"] for a in history[cells[20].pk]] == ["withdrawn"]
    assert history[cells[21].pk][0]["unsure"] is True and history[cells[0].pk][0]["annotator"] == "annotator"
    review = next(r for r in rows if int(r["cell_id"]) == cells[21].pk)
    assert review["label"] == "" and review["label_status"] == "review"

    # Paths are relative to the folder the cells came from: the CSV imports from there.
    root = Path(cells[0].image_root)
    assert rows[0]["path"] == cells[0].image and (root / rows[0]["path"]).is_file()
    from_csv = project_create(name="from-csv")
    shutil.copyfile(table, root / "export.csv")
    report = import_cells(project=from_csv, source=root / "export.csv", labels=LabelMode.ANNOTATIONS)
    assert report.imported == 72 and not report.errors, report.as_dict()
    assert labels_by_hash(from_csv) == expected
    assert set(Cell.objects.filter(project=from_csv).values_list("content_hash", flat=True)) == {
        c.content_hash for c in cells
    }


def run_loop_to_a_classifier(project: Project, annotator: User) -> ModelVersion:
    job_create(kind=Job.Kind.PRETRAIN, project=project)
    run_queued_jobs()
    batch = QueryBatch.objects.get(project=project)
    for item in batch.items.select_related("cell__reference_label"):
        annotation_create(cell=item.cell, annotator=annotator, label=item.cell.reference_label)
    batch_submit(batch=batch, user=annotator)
    run_queued_jobs()
    version = latest_version(project, ModelVersion.Kind.CLASSIFIER)
    assert version is not None, list(Job.objects.values_list("kind", "status", "error"))
    return version


# Runs in a fresh interpreter: the README's own code, then the cells through the model.
DRIVER = """
import json, sys
import numpy as np
{readme}
model, labels, geometry = load_bundle(sys.argv[1])
paths = json.loads(open(sys.argv[2]).read())
probs = predict(model, paths, geometry).numpy()
np.save(sys.argv[3], probs)
json.dump(labels, open(sys.argv[4], "w"))
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("annotation", "learning", "models_zoo"))
assert not leaked, leaked
"""


def run_in_fresh_python(
    driver: str, readme: str, bundle: Path, cells: list[Cell], folder: Path, *outputs: str
) -> None:
    """Run ``driver`` (the bundle README's code, then its own lines) in an isolated interpreter that has
    neither leukoloop nor Django on its path: ``driver bundle paths.json *outputs``, in ``folder``."""
    script = folder / "run_bundle.py"
    script.write_text(driver.format(readme=readme_code(readme)))
    (folder / "paths.json").write_text(json.dumps([str(c.image_path) for c in cells]))
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "DJANGO_SETTINGS_MODULE"}}
    done = subprocess.run(
        [sys.executable, "-I", str(script), str(bundle), "paths.json", *outputs],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_jsonl_coco_and_torchscript_carry_the_model(
    loop_project: Project,
    annotator: User,
    lead: User,
    tmp_path: Path,
    make_manifest: Any,
) -> None:
    # 36 more real cells (the first 8 of each class are already in: the importer reports them as
    # already present), so that 100 cells go through the exported model.
    more = import_cells(
        project=loop_project, source=make_manifest(per_class=12, folder="more"), labels=LabelMode.REFERENCE
    )
    assert more.imported == 36 and more.already_present == 72, more.as_dict()
    version = run_loop_to_a_classifier(loop_project, annotator)
    assert version.parent is not None
    clf = classifier(version)
    ids, emb = index_embeddings(version.parent)
    cells = list(Cell.objects.filter(project=loop_project).order_by("pk")[:100])
    assert len(cells) == 100
    cell_ids = np.array([c.pk for c in cells], dtype=np.int64)
    rows, found = rows_of(ids, cell_ids)
    assert found.all()
    platform = np.asarray(clf.predict_proba(emb[rows]))
    # Each prediction's distance to the cells the classifier was trained on (and to those of the class
    # it predicts), by hand.
    trained_labels = dict(
        Annotation.objects.filter(pk__in=version.trained_on).values_list("cell_id", "label__name")
    )
    trained = sorted(trained_labels)
    trained_rows, _ = rows_of(ids, np.asarray(trained, dtype=np.int64))
    trained_emb = emb[trained_rows]
    labels = np.array([trained_labels[c] for c in trained])
    by_hand = np.array(
        [
            # A training cell is measured to the others.
            distance_ratio_by_hand(
                trained_emb, labels, emb[row], clf.classes[int(p.argmax())], np.asarray(trained) == cell_id
            )
            for cell_id, p, row in zip(cell_ids, platform, rows, strict=True)
        ]
    )
    # The lead's suggestion threshold at the median confidence of the cells near the labelled ones, so
    # that the export shows all three outcomes: unlike, below the threshold, answered.
    loop_project.suggestion_min_confidence = float(np.median(platform.max(axis=1)[by_hand <= ABSTAIN_RATIO]))
    loop_project.save(update_fields=["suggestion_min_confidence"])

    lines = run_export(loop_project, "jsonl", lead).read_text().splitlines()
    records = {r["cell_id"]: r for r in map(json.loads, lines)}
    assert len(records) == 108
    reasons = []
    for cell_id, probs, ratio in zip(cell_ids, platform, by_hand, strict=True):
        prediction = records[int(cell_id)]["prediction"]
        assert prediction["model_version"] == version.version
        assert prediction["label"] == clf.classes[int(probs.argmax())]
        assert abs(prediction["confidence"] - float(probs.max())) < 1e-5
        assert prediction["labelled_distance_ratio"] == pytest.approx(ratio, rel=1e-3, abs=1e-3)
        expected = (
            "unlike_labelled"
            if ratio > ABSTAIN_RATIO
            else "low_confidence"
            if prediction["confidence"] < loop_project.suggestion_min_confidence
            else ""
        )
        assert (prediction["abstain_reason"], prediction["abstained"]) == (expected, bool(expected))
        reasons.append(expected)
    assert set(reasons) == {"unlike_labelled", "low_confidence", ""}, reasons  # every outcome exercised
    labelled = [r for r in records.values() if r["label"] is not None]
    assert len(labelled) == 12 and all(r["annotations"][0]["origin"] == "manual" for r in labelled)

    coco = json.loads(run_export(loop_project, "coco", lead).read_text())
    assert len(coco["images"]) == 108 and len(coco["categories"]) == loop_project.classes.count()
    names = {c["id"]: c["name"] for c in coco["categories"]}
    assert {a["image_id"]: names[a["category_id"]] for a in coco["annotations"]} == {
        r["cell_id"]: r["label"] for r in labelled
    }

    bundle = run_export(loop_project, "torchscript", lead)
    with zipfile.ZipFile(bundle) as zf:
        assert set(zf.namelist()) == {"model.pt", "labels.json", "preprocessing.json", "README.md"}
        readme = zf.read("README.md").decode()
        spec = json.loads(zf.read("preprocessing.json"))
        # A new project's model sees the cell's square: the bundle says so, and its README code (run
        # below on the files) crops the same square.
        assert (spec["image_size"], spec["crop"], loop_project.input_crop) == (32, "cell", "cell")
        assert "nucleus" in spec["caller"]["crop"]
    run_in_fresh_python(DRIVER, readme, bundle, cells, tmp_path, "probs.npy", "labels.json")
    exported = np.load(tmp_path / "probs.npy")
    assert json.loads((tmp_path / "labels.json").read_text()) == list(clf.classes)
    assert exported.shape == platform.shape
    assert (exported.argmax(axis=1) == platform.argmax(axis=1)).all()
    assert np.abs(exported - platform).max() < 1e-4


ATTRIBUTE_DRIVER = """
import json, sys
import numpy as np
{readme}
model, labels, geometry = load_bundle(sys.argv[1])
paths = json.loads(open(sys.argv[2]).read())
np.savez(sys.argv[3], **{{k: v.numpy() for k, v in predict_attributes(model, paths, geometry).items()}})
"""


def test_the_torchscript_bundle_carries_the_attribute_heads(
    loop_project: Project, annotator: User, lead: User, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Labelled with attributes, the bundle's ``attributes`` method gives, in a fresh Python with plain
    torch, what the platform's embedding heads give on the same cells' stored embeddings."""
    from loop.handlers import attribute_suggestions
    from loop.handlers.attribute_suggestions import fit_embedding_attribute_heads
    from loop.handlers.retraining import class_names
    from loop.handlers.training_set import build_training_set
    from tests.loop.test_attribute_suggestions import second_batch

    monkeypatch.setattr(attribute_suggestions, "MIN_ATTRIBUTE_CELLS", 4)
    second_batch(loop_project, annotator, first_batch=24)
    version = latest_version(loop_project, ModelVersion.Kind.CLASSIFIER)
    assert version is not None and version.parent is not None
    ids, emb = index_embeddings(version.parent)
    data = build_training_set(loop_project, ids, class_names(loop_project))
    heads = fit_embedding_attribute_heads(loop_project, emb, ids, data, seed=version.version)
    assert heads is not None and len(heads.trained_) >= 5

    bundle = run_export(loop_project, "torchscript", lead)
    with zipfile.ZipFile(bundle) as zf:
        described = json.loads(zf.read("attributes.json"))["attributes"]
        readme = zf.read("README.md").decode()
        meta = json.loads(zf.read("labels.json"))["model"]
    # Every attribute with two or more values among the labelled cells, in the schema's value order.
    trained = [n for n in heads.trained_ if len(heads.embedding_heads_[n].seen_) > 1]
    assert sorted(described) == sorted(trained)
    assert all(described[n] == loop_project.learnable_attributes()[n] for n in described)
    assert meta["attribute_cells"] >= 4 and "predict_attributes" in readme

    cells = list(Cell.objects.filter(project=loop_project).order_by("pk")[:40])
    rows, found = rows_of(ids, np.array([c.pk for c in cells], dtype=np.int64))
    assert found.all()
    platform = heads.predict_proba(emb[rows], None)
    run_in_fresh_python(ATTRIBUTE_DRIVER, readme, bundle, cells, tmp_path, "attributes.npz")
    exported = np.load(tmp_path / "attributes.npz")
    assert sorted(exported.files) == sorted(described)
    for name in described:
        assert exported[name].shape == platform[name].shape
        assert np.abs(exported[name] - platform[name]).max() < 1e-4, name


def login(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_only_leads_export_and_the_file_downloads(
    loop_project: Project, lead: User, annotator: User, outsider: User
) -> None:
    membership_set(project=loop_project, user=annotator, role=Membership.Role.ANNOTATOR)
    cell = Cell.objects.filter(project=loop_project).select_related("reference_label").first()
    assert cell is not None
    annotation_create(cell=cell, annotator=annotator, label=cell.reference_label)
    url = f"/api/projects/{loop_project.pk}/exports/"
    assert login(annotator).post(url, {"format": "csv"}).status_code == 403
    assert login(annotator).get(url).status_code == 403
    assert login(outsider).post(url, {"format": "csv"}).status_code == 404
    assert login(outsider).get(url).status_code == 404
    assert Client().post(url, {"format": "csv"}).status_code in (401, 403)
    client = login(lead)
    assert client.post(url, {"format": "pdf"}).status_code == 400
    response = client.post(url, {"format": "csv"})
    assert response.status_code == 202, response.content
    job_id = response.json()["id"]
    assert Job.objects.get(pk=job_id).kind == Job.Kind.EXPORT
    download = f"/api/exports/{job_id}/download"
    assert client.get(download).status_code == 409  # still queued
    run_queued_jobs()
    listing = client.get(url).json()["results"]
    assert [(j["id"], j["status"], j["format"]) for j in listing] == [(job_id, "succeeded", "csv")]
    assert listing[0]["download_url"] == download
    assert login(annotator).get(download).status_code == 403
    assert login(outsider).get(download).status_code == 404
    got = client.get(download)
    assert got.status_code == 200 and "attachment" in got["Content-Disposition"]
    body = b"".join(got.streaming_content).decode()  # type: ignore[attr-defined]
    rows = list(csv.DictReader(io.StringIO(body)))
    assert len(rows) == 72
    assert {r["label"] for r in rows if int(r["cell_id"]) == cell.pk} == {cell.reference_label.name}  # type: ignore[union-attr]
    assert Annotation.objects.filter(cell=cell).count() == 1
    # No classifier yet: the model export fails with a reason, and there is nothing to download.
    failed = client.post(url, {"format": "torchscript"}).json()["id"]
    run_queued_jobs()
    job = Job.objects.get(pk=failed)
    assert job.status == Job.Status.FAILED and "no trained classifier" in job.error
    assert client.get(f"/api/exports/{failed}/download").status_code == 409


def test_the_benchmarks_confidence_threshold_is_the_projects_default() -> None:
    """The loop benchmark scores what the product answers with learning.shift's threshold: it must be
    the default a new project gets."""
    assert Project._meta.get_field("suggestion_min_confidence").default == SUGGESTION_MIN_CONFIDENCE
