"""Evaluation report of a classifier version on a project's test cells (e.g. an imported external cohort)."""
