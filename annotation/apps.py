from django.apps import AppConfig


class AnnotationConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "annotation"
    verbose_name = "Cell annotation"

    def ready(self) -> None:
        # The import job's handler registers itself with the job dispatcher (jobs.registry).
        from annotation import handlers  # noqa: F401
