from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard"

    def ready(self) -> None:
        # This app's background job registers its handler with jobs.registry.
        from dashboard import handlers  # noqa: F401
