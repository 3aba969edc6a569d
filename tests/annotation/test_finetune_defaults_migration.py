"""Projects that existed before the fine-tuning defaults keep what they had (no scheduled fine-tune, a
requested one at their encoder's size); projects created afterwards fine-tune every 8 batches at 128 px."""

from __future__ import annotations

import pytest

from annotation.models import Project
from tests.annotation.test_input_crop_migration import _latest, _migrate

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.migration]

BEFORE = [("annotation", "0013_membership_labelling_paused")]


def test_existing_projects_keep_no_scheduled_fine_tune_and_new_ones_fine_tune_at_128_px() -> None:
    apps = _migrate(BEFORE)
    old = apps.get_model("annotation", "Project").objects.create(name="frozen features")
    _migrate(_latest())
    kept = Project.objects.get(pk=old.pk)
    assert (kept.finetune_every, kept.finetune_image_size, kept.image_size) == (0, 0, 64)
    new = Project.objects.create(name="new")
    assert (new.finetune_every, new.finetune_image_size, new.image_size) == (8, 128, 64)
