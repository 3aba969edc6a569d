from django.apps import AppConfig


class LoopConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "loop"
    verbose_name = "Active-learning loop"

    def ready(self) -> None:
        # Pretrain, embed, retrain, query and fine-tune register their handlers with jobs.registry.
        from loop.handlers import kinds  # noqa: F401
