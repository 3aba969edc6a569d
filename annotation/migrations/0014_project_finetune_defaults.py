import django.core.validators
from django.db import migrations, models

FINETUNE_IMAGE_SIZE_HELP = (
    "Side in pixels the fine-tuned encoder sees (0: the same as the encoder it starts from). Larger is "
    "more accurate and slower to fine-tune and embed."
)


class Migration(migrations.Migration):
    """New projects fine-tune every 8 batches at 128 px (bench/README.md: 0.95 macro-F1 at 810 labels in the
    loop). Projects that exist keep what they had: no scheduled fine-tune (the old default's 0 stays in
    their rows) and, asked for one, one at their encoder's own size (0)."""

    dependencies = [("annotation", "0013_membership_labelling_paused")]

    operations = [
        migrations.AddField(
            model_name="project",
            name="finetune_image_size",
            field=models.PositiveIntegerField(
                default=0,
                help_text=FINETUNE_IMAGE_SIZE_HELP,
                validators=[django.core.validators.MaxValueValidator(512)],
            ),
        ),
        migrations.AlterField(
            model_name="project",
            name="finetune_image_size",
            field=models.PositiveIntegerField(
                default=128,
                help_text=FINETUNE_IMAGE_SIZE_HELP,
                validators=[django.core.validators.MaxValueValidator(512)],
            ),
        ),
        migrations.AlterField(
            model_name="project",
            name="finetune_every",
            field=models.PositiveIntegerField(
                default=8,
                help_text="Fine-tune the whole encoder on the labels every N submitted batches (0: never). "
                "It runs on a training worker while labelling goes on; the loop switches to it when it is "
                "done.",
            ),
        ),
        migrations.AlterField(
            model_name="project",
            name="image_size",
            field=models.PositiveIntegerField(
                default=64,
                help_text="Side in pixels of what the starting and pretrained encoders see.",
                validators=[
                    django.core.validators.MinValueValidator(16),
                    django.core.validators.MaxValueValidator(512),
                ],
            ),
        ),
    ]
