from django.contrib import admin
from django.http import HttpRequest

from annotation.models import Annotation, Cell, LabelClass, Membership, Project


class LabelClassInline(admin.TabularInline[LabelClass, Project]):
    model = LabelClass
    extra = 0


class MembershipInline(admin.TabularInline[Membership, Project]):
    model = Membership
    extra = 0


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin[Project]):
    list_display = ("name", "query_strategy", "query_batch_size", "label_budget", "created_at")
    inlines = [LabelClassInline, MembershipInline]


@admin.register(Cell)
class CellAdmin(admin.ModelAdmin[Cell]):
    list_display = ("id", "project", "original_name", "source", "role", "width", "height")
    list_filter = ("project", "role", "source")
    search_fields = ("original_name", "content_hash", "patient_id", "slide_id")

    def has_delete_permission(self, request: HttpRequest, obj: Cell | None = None) -> bool:
        # A cell leaves only with its project: its labels, the index's rows and ``Project.cell_count``
        # all assume so.
        return False


@admin.register(Annotation)
class AnnotationAdmin(admin.ModelAdmin[Annotation]):
    list_display = ("id", "cell", "annotator", "label", "unsure", "origin", "created_at", "superseded_by")
    list_filter = ("origin", "unsure")
    raw_id_fields = ("cell", "superseded_by")
