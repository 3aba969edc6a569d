from django.apps import AppConfig


class ExportsConfig(AppConfig):
    name = "exports"

    def ready(self) -> None:
        # This app's background job registers its handler with jobs.registry.
        from exports import handlers  # noqa: F401
