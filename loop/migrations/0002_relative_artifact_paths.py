import os

from django.conf import settings
from django.db import migrations

# Model versions recorded the absolute paths of their files; they now record them relative to
# LEUKOLOOP_ARTIFACTS_DIR, so a restore into another folder finds them. A path outside that folder is not
# ours to move and is kept as it is (it is still read as an absolute path).
PATH_KEYS = ('checkpoint', 'classifier', 'embeddings', 'index')


def _roots():
    root = os.path.abspath(settings.LEUKOLOOP_ARTIFACTS_DIR)
    return {root, os.path.realpath(root)}


def _rewrite(apps, convert):
    version_model = apps.get_model('loop', 'ModelVersion')
    changed = []
    for version in version_model.objects.only('id', 'artifacts').iterator(chunk_size=1000):
        artifacts = dict(version.artifacts or {})
        new = {k: convert(v) if k in PATH_KEYS and isinstance(v, str) else v for k, v in artifacts.items()}
        if new != artifacts:
            version.artifacts = new
            changed.append(version)
    version_model.objects.bulk_update(changed, ['artifacts'], batch_size=500)


def to_relative(apps, schema_editor):
    roots = _roots()

    def convert(value):
        if not os.path.isabs(value):
            return value
        path = os.path.normpath(value)
        for root in roots:
            if path.startswith(root.rstrip(os.sep) + os.sep):
                return os.path.relpath(path, root).replace(os.sep, '/')
        return value

    _rewrite(apps, convert)


def to_absolute(apps, schema_editor):
    root = str(settings.LEUKOLOOP_ARTIFACTS_DIR)
    _rewrite(apps, lambda value: value if os.path.isabs(value) else os.path.join(root, value))


class Migration(migrations.Migration):

    dependencies = [
        ('loop', '0001_initial'),
    ]

    operations = [
        migrations.RunPython(to_relative, to_absolute),
    ]
