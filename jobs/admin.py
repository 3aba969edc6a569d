from django.contrib import admin

from jobs.models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin[Job]):
    list_display = ("id", "project", "kind", "status", "progress", "message", "created_at", "finished_at")
    list_filter = ("kind", "status")
