from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from annotation.models import Cell, Membership, Project
from jobs.models import Job
from loop.models import ModelVersion

pytestmark = pytest.mark.django_db


def test_bootstrap_demo_creates_admin_and_a_marked_synthetic_project() -> None:
    out = StringIO()
    call_command("bootstrap_demo", stdout=out)
    admin = User.objects.get(username="admin")
    password = out.getvalue().split("admin login: admin / ")[1].split()[0]
    assert admin.is_superuser and admin.check_password(password)
    project = Project.objects.get(is_synthetic_demo=True)
    assert "SYNTHETIC" in project.description
    cells = Cell.objects.filter(project=project)
    assert cells.count() == 9 * 12
    assert set(cells.values_list("source", flat=True)) == {"synthetic"}
    assert Membership.objects.filter(project=project, user=admin, role=Membership.Role.ADMIN).exists()

    # The loop starts by itself: validation cells held out, the first batch on its way from the initial
    # (ImageNet) weights, and label-free pretraining waiting for that batch.
    assert cells.filter(role=Cell.Role.VALIDATION).count() == 9 * 2
    encoder = ModelVersion.objects.get(project=project, kind=ModelVersion.Kind.ENCODER)
    assert encoder.artifacts["method"] == "none"
    assert encoder.artifacts["backbone_kwargs"] == {"pretrained": True}
    embed = Job.objects.get(project=project, kind=Job.Kind.EMBED)
    assert embed.status == Job.Status.QUEUED and embed.params["encoder_version"] == encoder.pk
    pretrain = Job.objects.get(project=project, kind=Job.Kind.PRETRAIN)
    assert pretrain.status == Job.Status.WAITING and pretrain.params == {"minutes": 3.0}
    assert "in the background" in out.getvalue()

    call_command("bootstrap_demo", stdout=StringIO())  # a second `make run` changes nothing
    assert Cell.objects.filter(project=project).count() == 9 * 12
    assert User.objects.get(username="admin").check_password(password)
    assert cells.filter(role=Cell.Role.VALIDATION).count() == 9 * 2
    assert Job.objects.filter(project=project).count() == 2
    assert ModelVersion.objects.filter(project=project).count() == 1


@pytest.mark.realdata
def test_bootstrap_demo_with_data_imports_real_cells(make_manifest) -> None:
    call_command("bootstrap_demo", data=make_manifest(per_class=1), stdout=StringIO())
    project = Project.objects.get(is_synthetic_demo=False)
    assert project.cells.count() == 9
    assert not Project.objects.filter(is_synthetic_demo=True).exists()
