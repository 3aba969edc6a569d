from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from annotation.models import Cell, Membership, Project
from jobs.models import Job

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

    # The loop starts by itself: validation cells held out, pretraining queued.
    assert cells.filter(role=Cell.Role.VALIDATION).count() == 9 * 2
    assert Job.objects.filter(project=project, kind=Job.Kind.PRETRAIN, status=Job.Status.QUEUED).count() == 1

    call_command("bootstrap_demo", stdout=StringIO())  # a second `make run` changes nothing
    assert Cell.objects.filter(project=project).count() == 9 * 12
    assert User.objects.get(username="admin").check_password(password)
    assert cells.filter(role=Cell.Role.VALIDATION).count() == 9 * 2
    assert Job.objects.filter(project=project, kind=Job.Kind.PRETRAIN).count() == 1


@pytest.mark.realdata
def test_bootstrap_demo_with_data_imports_real_cells(make_manifest) -> None:
    call_command("bootstrap_demo", data=make_manifest(per_class=1), stdout=StringIO())
    project = Project.objects.get(is_synthetic_demo=False)
    assert project.cells.count() == 9
    assert not Project.objects.filter(is_synthetic_demo=True).exists()
