from django.apps import AppConfig


class EvaluationReportConfig(AppConfig):
    name = "evaluation_report"
