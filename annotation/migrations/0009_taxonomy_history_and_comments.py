# Classes can be retired or merged (labels kept), taxonomy changes are recorded, members comment on cells.
# Only additions: reversing drops the new columns and tables.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('annotation', '0008_page_preferences'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='labelclass',
            name='merged_into',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.RESTRICT, related_name='merged_from', to='annotation.labelclass'),
        ),
        migrations.AddField(
            model_name='labelclass',
            name='retired_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.CreateModel(
            name='Comment',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('text', models.TextField(max_length=2000)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('author', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('cell', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='comments', to='annotation.cell')),
            ],
            options={
                'ordering': ['created_at', 'id'],
                'indexes': [models.Index(fields=['cell', 'created_at'], name='annotation__cell_id_3504aa_idx')],
            },
        ),
        migrations.CreateModel(
            name='TaxonomyChange',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('action', models.CharField(choices=[('add', 'Added'), ('rename', 'Renamed'), ('merge', 'Merged'), ('retire', 'Retired'), ('restore', 'Restored')], max_length=16)),
                ('summary', models.CharField(help_text='One readable sentence: what changed.', max_length=300)),
                ('before', models.JSONField(blank=True, default=dict)),
                ('after', models.JSONField(blank=True, default=dict)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('actor', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('label_class', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='changes', to='annotation.labelclass')),
                ('project', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='taxonomy_changes', to='annotation.project')),
            ],
            options={
                'ordering': ['-created_at', '-id'],
                'indexes': [models.Index(fields=['project', '-created_at'], name='annotation__project_3ab558_idx')],
            },
        ),
    ]
