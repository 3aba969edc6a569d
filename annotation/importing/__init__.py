"""Importing cell images: where they come from (sources), whether they are sound (images), and how they
land in the database (service)."""
