"""Writes of the loop, one module per concern."""
