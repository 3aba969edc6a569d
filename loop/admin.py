from django.contrib import admin

from loop.models import ModelVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin[ModelVersion]):
    list_display = ("project", "kind", "version", "label_count", "created_at")
