from django.apps import AppConfig


class AnnotationConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "annotation"
    verbose_name = "Cell annotation"

    def ready(self) -> None:
        # Register job handlers with the task dispatcher.
        from annotation import jobs  # noqa: F401
