"""The embedded broker never hands a worker a message that is still being written (config/broker.py)."""

from __future__ import annotations

import os
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
from django.conf import settings
from kombu import Connection

import config.broker
from config.broker import AtomicFilesystemTransport
from config.celery import app


def test_the_embedded_default_uses_the_atomic_transport() -> None:
    if not settings.CELERY_BROKER_URL.startswith("filesystem://"):
        pytest.skip("runs on the embedded broker")
    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, AtomicFilesystemTransport)


def test_a_message_is_invisible_to_workers_until_it_is_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "queue"
    folder.mkdir()
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder), "store_processed": False}
    with Connection("filesystem://", transport=AtomicFilesystemTransport, transport_options=options) as conn:
        channel: Any = conn.default_channel
        seen_while_writing: list[object] = []
        real_replace = os.replace

        def replace(src: str, dst: str) -> None:
            # The payload is on disk, not yet under its name: a worker polling now finds nothing.
            assert Path(src).read_bytes() and not Path(dst).exists()
            try:
                seen_while_writing.append(channel._get("train"))
            except Empty:
                seen_while_writing.append(None)
            real_replace(src, dst)

        monkeypatch.setattr(config.broker.os, "replace", replace)
        channel._put("train", {"body": "job 7"})
        assert seen_while_writing == [None]
        assert channel._get("train") == {"body": "job 7"}
        assert os.listdir(folder) == []
