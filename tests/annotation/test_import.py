"""Import of real cells: folders, manifests, zips, dedupe, conflicts, bad files, label modes."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from annotation.importing.service import LabelMode, StoreMode, import_cells
from annotation.importing.sources import SourceError
from annotation.models import Annotation, Cell, Project
from annotation.services.projects import project_create
from tests.annotation.badfiles import image_folder_with_bad_files, write_zip
from tests.conftest import ManifestWriter

pytestmark = [pytest.mark.realdata, pytest.mark.django_db]

# The shared set's one cross-class duplicate (see ../shared/data/leukocytes/README.md).
CONFLICT_PAIR = ("images/eosinophil/EO_225902.jpg", "images/neutrophil/BNE_191112.jpg")


@pytest.fixture
def project() -> Project:
    return project_create(name="pbc-test")


def test_manifest_import_creates_cells_with_reference_labels_and_attributes(
    project: Project, make_manifest: ManifestWriter, manifest_rows: list[dict[str, str]]
) -> None:
    manifest = make_manifest(per_class=2)
    report = import_cells(project=project, source=manifest, labels=LabelMode.REFERENCE)

    assert report.errors == []
    assert report.imported == 18 == Cell.objects.filter(project=project).count()
    by_path = {r["path"]: r for r in manifest_rows}
    for cell in Cell.objects.filter(project=project).select_related("reference_label"):
        row = by_path[cell.original_name]
        assert cell.reference_label is not None and cell.reference_label.name == row["label"]
        assert cell.source == row["source"]
        assert (cell.width, cell.height) == (224, 224)
        assert cell.image_path == (manifest.parent / row["path"]).absolute()
        if row["cell_size"]:
            assert cell.reference_attributes is not None
            assert cell.reference_attributes["cell_size"] == row["cell_size"]
    assert Annotation.objects.count() == 0


def test_duplicates_and_the_cross_class_conflict_are_reported_and_imported_once(
    project: Project, make_manifest: ManifestWriter
) -> None:
    manifest = make_manifest(per_class=1, extra=CONFLICT_PAIR)
    report = import_cells(project=project, source=manifest)

    assert len(report.duplicates) == 1
    [conflict] = report.conflicts
    assert {conflict.name, conflict.same_as} == set(CONFLICT_PAIR)
    assert set(conflict.labels) == {"eosinophil", "neutrophil"}
    assert Cell.objects.filter(project=project).count() == report.listed - 1


def test_second_run_adds_nothing(project: Project, make_manifest: ManifestWriter) -> None:
    manifest = make_manifest(per_class=2)
    first = import_cells(project=project, source=manifest)
    second = import_cells(project=project, source=manifest)

    assert first.imported == 18
    assert second.imported == 0
    assert second.already_present == 18
    assert Cell.objects.filter(project=project).count() == 18


def test_labels_as_annotations_create_import_annotations(
    project: Project, make_manifest: ManifestWriter
) -> None:
    report = import_cells(project=project, source=make_manifest(per_class=1), labels=LabelMode.ANNOTATIONS)

    assert report.annotations_created == 9
    annotations = Annotation.objects.filter(cell__project=project).select_related("label", "cell")
    assert {a.label.name for a in annotations if a.label} == {c.name for c in project.classes.all()}
    assert all(a.origin == Annotation.Origin.IMPORT and a.annotator is None for a in annotations)
    assert not Cell.objects.filter(reference_label__isnull=False).exists()


def test_labels_none_ignores_labels(project: Project, make_manifest: ManifestWriter) -> None:
    report = import_cells(project=project, source=make_manifest(per_class=1), labels=LabelMode.NONE)

    assert report.imported == 9
    assert Annotation.objects.count() == 0
    assert not Cell.objects.filter(reference_label__isnull=False).exists()


def test_bad_files_are_reported_one_by_one_while_good_ones_import(
    project: Project, make_manifest: ManifestWriter, tmp_path: Path
) -> None:
    folder = image_folder_with_bad_files(tmp_path, make_manifest)
    report = import_cells(project=project, source=folder)

    errors = {e.name: e.message for e in report.errors}
    assert set(errors) == {"basophil/cut_short.jpg", "monocyte/notes.jpg", "platelet/huge.png"}
    assert "truncated" in errors["basophil/cut_short.jpg"]
    assert "not an image" in errors["monocyte/notes.jpg"]
    assert "decompression bomb" in errors["platelet/huge.png"]
    assert report.imported == 18
    # No half-written rows: nothing of the bad files is in the database.
    names = set(Cell.objects.filter(project=project).values_list("original_name", flat=True))
    assert not names & set(errors)


def test_zip_slip_entries_are_refused_and_the_rest_imports(
    project: Project, make_manifest: ManifestWriter, tmp_path: Path
) -> None:
    manifest = make_manifest(per_class=1)
    real_files = sorted((manifest.parent / "images").rglob("*.jpg"))[:3]
    entries = {f"{p.parent.name}/{p.name}": p.read_bytes() for p in real_files}
    entries["../../etc/evil.jpg"] = real_files[0].read_bytes()[::-1]
    entries["/abs/evil2.jpg"] = b"x"
    archive = write_zip(tmp_path / "upload.zip", entries)

    report = import_cells(project=project, source=archive)

    assert {e.name for e in report.errors} == {"../../etc/evil.jpg", "/abs/evil2.jpg"}
    assert all("escapes the archive" in e.message for e in report.errors)
    assert report.imported == 3
    assert not (tmp_path.parent / "etc").exists()


def test_zip_holding_a_manifest_imports_paths_relative_to_it(
    project: Project, make_manifest: ManifestWriter, tmp_path: Path
) -> None:
    manifest = make_manifest(per_class=1)
    entries = {"data/manifest.csv": manifest.read_bytes()}
    for image in (manifest.parent / "images").rglob("*.jpg"):
        entries[f"data/{image.relative_to(manifest.parent).as_posix()}"] = image.read_bytes()
    report = import_cells(project=project, source=write_zip(tmp_path / "m.zip", entries))

    assert report.errors == []
    assert report.imported == 9
    assert Cell.objects.filter(project=project, reference_label__isnull=False).count() == 9


def test_manifest_problems_are_reported_per_row(project: Project, make_manifest: ManifestWriter) -> None:
    manifest = make_manifest(per_class=1)
    rows = manifest.read_text().splitlines()
    header = rows[0].split(",")
    good = rows[1].split(",")
    missing = list(good)
    missing[0] = "images/none/gone.jpg"
    unknown = rows[2].split(",")
    unknown[header.index("label")] = "megakaryocyte"
    bad_attr = rows[3].split(",")
    bad_attr[header.index("cell_size")] = "enormous"
    lines = [
        rows[0],
        *rows[4:],
        ",".join(missing),
        ",".join(unknown),
        ",".join(bad_attr),
        "only,three,fields",
    ]
    manifest.write_text("\n".join(lines) + "\n")

    report = import_cells(project=project, source=manifest)

    messages = [e.message for e in report.errors]
    assert len(messages) == 4, messages
    assert any("missing file" in m for m in messages)
    assert any("unknown label 'megakaryocyte'" in m for m in messages)
    assert any("cell_size='enormous'" in m for m in messages)
    assert any("malformed row" in m for m in messages)
    # the three rows that had a problem only with labels are not half-imported
    assert report.imported == 9 - 3


def test_source_that_is_not_a_dataset_is_refused(project: Project, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        import_cells(project=project, source=tmp_path / "nowhere")
    no_path = tmp_path / "m.csv"
    no_path.write_text("file,label\na.jpg,blast\n")
    with pytest.raises(SourceError, match="no 'path' column"):
        import_cells(project=project, source=no_path)


def test_command_prints_one_error_line_per_bad_file_and_a_summary(
    make_manifest: ManifestWriter, tmp_path: Path
) -> None:
    folder = image_folder_with_bad_files(tmp_path, make_manifest)
    write_zip(folder / "slip.zip", {})  # not an image extension: skipped, not an error
    out, err = StringIO(), StringIO()
    call_command("import_cells", str(folder), project="cmd", no_progress=True, stdout=out, stderr=err)

    error_lines = [line for line in err.getvalue().splitlines() if line.startswith("error:")]
    assert len(error_lines) == 3
    assert "imported 18 cells" in out.getvalue()
    assert "3 errors" in out.getvalue()
    assert Project.objects.get(name="cmd").cells.count() == 18


def test_copy_mode_keeps_a_content_addressed_copy_and_reference_mode_points_at_the_file(
    make_manifest: ManifestWriter,
) -> None:
    manifest = make_manifest(per_class=1)
    copied = project_create(name="copied")
    referenced = project_create(name="referenced")
    import_cells(project=copied, source=manifest, store=StoreMode.COPY)
    import_cells(project=referenced, source=manifest, store=StoreMode.REFERENCE)

    for cell in copied.cells.all():
        assert not Path(cell.image).is_absolute()
        assert cell.image_path.name.startswith(cell.content_hash)
        assert cell.image_path.read_bytes() == (manifest.parent / cell.original_name).read_bytes()
    for cell in referenced.cells.all():
        assert cell.image_path == (manifest.parent / cell.original_name).absolute()


def test_zip_members_are_always_copied(
    project: Project, make_manifest: ManifestWriter, tmp_path: Path
) -> None:
    manifest = make_manifest(per_class=1)
    image = next((manifest.parent / "images").rglob("*.jpg"))
    archive = write_zip(tmp_path / "one.zip", {f"blast/{image.name}": image.read_bytes()})
    import_cells(project=project, source=archive, store=StoreMode.REFERENCE)

    cell = Cell.objects.get(project=project)
    assert cell.image_path.is_file()
    assert cell.image_path.read_bytes() == image.read_bytes()


def test_cells_imported_meanwhile_by_someone_else_fall_back_to_one_by_one_inserts(
    project: Project, make_manifest: ManifestWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from annotation.importing import service

    import_cells(project=project, source=make_manifest(per_class=1, folder="first"))
    # Pretend the project looked empty when this import started, as if another import ran meanwhile:
    # the chunk insert clashes and every cell is retried in its own transaction.
    monkeypatch.setattr(service, "frozenset", lambda _rows: frozenset(), raising=False)
    report = import_cells(project=project, source=make_manifest(per_class=2, folder="second"))

    assert report.imported == 9
    assert report.already_present == 9
    assert Cell.objects.filter(project=project).count() == 18
    assert Cell.objects.filter(project=project, reference_label__isnull=True).count() == 0
