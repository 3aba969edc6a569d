"""Tests of the evaluation report of a model version on an external test set."""
