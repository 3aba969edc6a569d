"""Writes, one module per concern. Every change to projects, memberships, annotations and cells goes
through these functions (keyword-only, typed, transactional), so views, tasks, commands and tests share
one path."""
