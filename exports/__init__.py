"""Exports of labelled datasets and trained models, run as background jobs."""
