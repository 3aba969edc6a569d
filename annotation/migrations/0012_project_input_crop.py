from django.db import migrations, models


class Migration(migrations.Migration):
    """Projects that exist keep the centre crop their encoders were trained with; new ones start
    cell-centred (the field's default)."""

    dependencies = [("annotation", "0011_project_query_source")]

    operations = [
        migrations.AddField(
            model_name="project",
            name="input_crop",
            field=models.CharField(
                choices=[
                    ("cell", "Cell-centred, scaled to the nucleus"),
                    ("centre", "Centre square of the file"),
                ],
                default="centre",
                max_length=8,
            ),
        ),
        migrations.AlterField(
            model_name="project",
            name="input_crop",
            field=models.CharField(
                choices=[
                    ("cell", "Cell-centred, scaled to the nucleus"),
                    ("centre", "Centre square of the file"),
                ],
                default="cell",
                help_text="What of each image the model sees: a square around the cell's nucleus at a "
                "fixed multiple of its size (the same picture whichever lab cropped it), or the file's "
                "centre square. Takes effect with the next encoder; the original images are never changed.",
                max_length=8,
            ),
        ),
    ]
