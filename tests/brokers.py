"""Brokers that go away and come back, for the delivery tests: this process's Celery app (what the web
server sends jobs with) pointed at a dead broker or at a private one, and a private Redis server that a
test may kill and start again without touching the machine's shared one."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from config.celery import app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port_url() -> str:
    """A Redis URL nothing listens on: kombu's real connection error (refused) on every send."""
    return f"redis://127.0.0.1:{free_port()}/0"


def _drop_connections() -> None:
    # Celery keeps a connection pool and a producer pool built from the broker settings it read first.
    # They are forgotten, not closed: kombu's registry hands the same pool back for the same broker URL,
    # and a closed one would refuse every later send of the session ("Acquire on closed pool").
    app._pool = None
    amqp = app.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None


@contextmanager
def producer_broker(
    url: str, *, transport: Any = None, options: dict[str, Any] | None = None
) -> Iterator[None]:
    """Send this process's jobs to another broker for the block: ``url`` (a Redis URL), or with
    ``transport`` and its ``options`` (the filesystem transport). Workers are not affected."""
    conf = app.conf
    # The write URL: Celery reads the broker URL from $CELERY_BROKER_URL before its own setting.
    keys = ("broker_write_url", "broker_transport", "broker_transport_options")
    saved = {key: conf.get(key) for key in keys}
    _drop_connections()
    conf.update(broker_write_url=url, broker_transport=transport, broker_transport_options=options or {})
    try:
        yield
    finally:
        _drop_connections()
        conf.update(saved)


def filesystem_options(folder: Path) -> dict[str, Any]:
    for name in ("queue", "control"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    queue = str(folder / "queue")
    return {
        "data_folder_in": queue,
        "data_folder_out": queue,
        "control_folder": str(folder / "control"),
        "store_processed": False,
    }


def _job_id(payload: dict[str, Any]) -> int:
    body = json.loads(base64.b64decode(payload["body"]))
    return int(body[0][0])  # protocol 2: [args, kwargs, embed]; run_job's only argument is the job id


def filesystem_job_ids(folder: Path, queue: str = "celery") -> list[int]:
    """The job ids of the run_job messages waiting in a filesystem broker's ``queue``, oldest first."""
    files = sorted((folder / "queue").glob(f"*.{queue}.msg"))
    return [_job_id(json.loads(f.read_text())) for f in files]


class RedisServer:
    """A private ``redis-server`` on a free port, without persistence: stopping it loses what it held, as
    a restarted broker without an append-only file does."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=(self.folder / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        """Killed, as a crash or an OOM kill would: no save, connections dropped."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def queued_job_ids(self, queue: str = "celery") -> list[int]:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port)
        try:
            return [_job_id(json.loads(raw)) for raw in reversed(client.lrange(queue, 0, -1))]
        finally:
            client.close()
