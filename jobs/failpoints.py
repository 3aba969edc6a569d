"""Fault-injection points (as in etcd's gofail or TiKV's fail-rs) for crash tests: a job can be held at a
named point so that a test kills its worker there. Inactive unless ``LEUKOLOOP_FAILPOINTS`` is set,
e.g. ``LEUKOLOOP_FAILPOINTS="retrain.before_commit=60"`` pauses 60 s at that point."""

from __future__ import annotations

import logging
import os
import time

logger = logging.getLogger(__name__)


def _points() -> dict[str, float]:
    spec = os.environ.get("LEUKOLOOP_FAILPOINTS", "")
    points: dict[str, float] = {}
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        name, _, seconds = entry.partition("=")
        points[name] = float(seconds or 0)
    return points


def failpoint(name: str) -> None:
    seconds = _points().get(name)
    if seconds:
        logger.warning("failpoint %s: pausing %.1f s", name, seconds)
        time.sleep(seconds)
