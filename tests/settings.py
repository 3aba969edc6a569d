"""The suite's settings: config.settings with a fixed key that only tests use.

config.settings refuses to load with DEBUG off and no DJANGO_SECRET_KEY. The key is put in the environment
(before config.settings reads it), so the worker and server processes the tests start inherit it too.
pytest (pyproject: DJANGO_SETTINGS_MODULE) and mypy's Django plugin load this module.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "leukoloop-tests-only-key-" + "t" * 40)

from config.settings import *  # noqa: F403
