from django.apps import AppConfig


class AnnotationConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "annotation"
    verbose_name = "Cell annotation"

    def ready(self) -> None:
        # Register job handlers with the task dispatcher: import, the embedding map and exports here,
        # the learning loop's jobs (pretrain, embed, retrain, query) in the learning engine's service layer.
        from annotation import jobs  # noqa: F401
        from annotation.dashboard import jobs as map_jobs  # noqa: F401
        from annotation.exports import jobs as export_jobs  # noqa: F401
        from learning.service import jobs as learning_jobs  # noqa: F401
