"""Simulated annotators on the labelling page (locust), for `bench/load_test.py`.

Each simulated user does what static/js/label/ does in a browser:
- logs in through the login page (a session cookie, as a person would; the image URLs are pages that only
  take the session, not an API token), opens the labelling page and reads its ``label-config`` (the API
  URLs and the classes), then loads the current batch;
- polls the loop's state every ``poll_ms`` (1.5 s) in its own greenlet, as the page's ``setInterval`` does,
  and loads the newest batch when the poll shows one and its own batch is done;
- labels the next open cell of its batch every 1-3 s: fetches the cell's image (the page's tile), then
  POSTs the label with a fresh ``client_key`` (the page's idempotency key); now and then it sends the same
  request again with the same key, as the page does after a lost answer, and checks that the answer is a
  replay of the first (``Idempotent-Replayed: true``, same annotation id);
- submits the batch when every cell is labelled (the page submits by itself then), and now and then
  earlier, as the submit key does with cells still open.

Run by `bench/load_test.py`, which sets the environment below; by hand:

    LOADTEST_PROJECT=1 LOADTEST_PASSWORD=... .venv/bin/python -m locust -f bench/locustfile.py \
        --headless -u 50 -r 5 -t 3m --host http://127.0.0.1:8000

Environment: ``LOADTEST_PROJECT`` (project id), ``LOADTEST_PASSWORD`` (every annotator's),
``LOADTEST_USER_PREFIX`` (usernames ``<prefix>001`` ...), ``LOADTEST_RECORD`` (where the acknowledged
client keys and every request's timing are written when locust quits; load_test.py checks them against
the database).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
from locust import between, events, task
from locust.contrib.fasthttp import FastHttpUser, FastResponse

PROJECT = int(os.environ.get("LOADTEST_PROJECT", "1"))
PASSWORD = os.environ.get("LOADTEST_PASSWORD", "")
USER_PREFIX = os.environ.get("LOADTEST_USER_PREFIX", "annotator")
RECORD = os.environ.get("LOADTEST_RECORD", "")

# How often a label request is sent a second time with the same key (a retry after a lost answer), how
# often a user submits with cells still open, and how often it flags a cell unsure instead of labelling.
REPEAT_SHARE = 0.05
EARLY_SUBMIT_SHARE = 0.02
UNSURE_SHARE = 0.05
# Share of labels that take the model's suggestion when there is one (the page's "accept" key).
ACCEPT_SHARE = 0.6

_usernames = (f"{USER_PREFIX}{n:03d}" for n in itertools.count(1))
_CONFIG = re.compile(r'<script id="label-config" type="application/json">(.*?)</script>', re.S)


@dataclass
class Record:
    """What every user saw, written as JSON when locust quits (one process, so one list suffices)."""

    acked: list[dict[str, Any]] = field(default_factory=list)  # label POSTs answered 2xx
    unanswered: list[dict[str, Any]] = field(default_factory=list)  # no answer, or 5xx: fate unknown
    replays: list[dict[str, Any]] = field(default_factory=list)  # repeats of an acknowledged request
    submits: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[float, str, float, int]] = field(default_factory=list)  # start, name, ms, status


RECORDED = Record()


@events.request.add_listener
def _time_request(
    name: str,
    response_time: float,
    response: Any,
    start_time: float | None = None,
    **_: Any,
) -> None:
    # locust's own stats round response times above 100 ms and lose the status codes; these are exact.
    status = int(getattr(response, "status_code", 0) or 0)
    RECORDED.requests.append((start_time or time.time(), name, round(response_time, 2), status))


@events.quitting.add_listener
def _write_record(**_: Any) -> None:
    if RECORD:
        Path(RECORD).write_text(json.dumps(RECORDED.__dict__))


class Annotator(FastHttpUser):
    wait_time = between(1.0, 3.0)  # a keyboard-first expert: one cell every 1-3 s
    # One connection for the polls and one for the labels, as a browser keeps several open.
    concurrency = 4

    def on_start(self) -> None:
        self.username = next(_usernames)
        self.batch: dict[str, Any] | None = None
        self.newest_batch_id: int | None = None
        self.submitted: set[int] = set()
        self._log_in()
        self.config = self._open_label_page()
        self.api: dict[str, str] = self.config["api"]
        self.classes = [c["name"] for c in self.config["classes"]]
        self._load_batch()
        self.poller = gevent.spawn(self._poll_forever, self.config["poll_ms"] / 1000)

    def on_stop(self) -> None:
        self.poller.kill(block=False)

    # --- the page's set-up ------------------------------------------------------------------------------
    def _log_in(self) -> None:
        self.client.get("/accounts/login/", name="login page")
        form = {"username": self.username, "password": PASSWORD, "csrfmiddlewaretoken": self._csrf()}
        with self.client.post(
            "/accounts/login/", data=form, name="login", allow_redirects=False, catch_response=True
        ) as response:
            if response.status_code != 302:  # Django's LoginView redirects only on success
                response.failure(f"log-in of {self.username} refused ({response.status_code})")
                raise RuntimeError(f"log-in of {self.username} refused")

    def _csrf(self) -> str:
        for cookie in self.client.cookiejar:
            if cookie.name == "csrftoken" and cookie.value:
                return cookie.value
        return ""

    def _open_label_page(self) -> dict[str, Any]:
        response = self.client.get(f"/projects/{PROJECT}/label/", name="label page")
        found = _CONFIG.search(response.text or "")
        if found is None:
            raise RuntimeError(f"no label-config on the labelling page ({response.status_code})")
        config: dict[str, Any] = json.loads(found.group(1))
        return config

    def _json_headers(self) -> dict[str, str]:
        # api.js sends every call as JSON with the CSRF token (session authentication checks it).
        return {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "X-CSRFToken": self._csrf(),
        }

    # --- polling (api.js loop(), main.js poll()) ----------------------------------------------------------
    def _poll_forever(self, period: float) -> None:
        while True:
            started = time.monotonic()
            self._poll()
            gevent.sleep(max(0.0, period - (time.monotonic() - started)))

    def _poll(self) -> None:
        response = self.client.get(self.api["loop"], name="GET loop (poll)", headers=self._json_headers())
        if response.status_code != 200:
            return
        newest = (response.json() or {}).get("batch")
        if newest is None:
            return
        self.newest_batch_id = newest["id"]
        if self.batch is None or (newest["id"] != self.batch["id"] and self._batch_done()):
            self._load_batch()

    def _load_batch(self) -> None:
        response = self.client.get(
            self.api["batch"], name="GET batch (current)", headers=self._json_headers()
        )
        if response.status_code == 200:
            self.batch = (response.json() or {}).get("batch")

    def _batch_done(self) -> bool:
        return self.batch is not None and all(i["mine"] or i["skipped"] for i in self.batch["items"])

    # --- labelling ----------------------------------------------------------------------------------------
    @task
    def label_next_cell(self) -> None:
        if self.batch is None:
            return
        open_items = [i for i in self.batch["items"] if not (i["mine"] or i["skipped"])]
        if not open_items:
            self._finish_batch()
            return
        item = open_items[0]
        self.client.get(item["image_url"], name="GET cell image")
        self._label(item)
        if random.random() < EARLY_SUBMIT_SHARE:
            self._submit()

    def _finish_batch(self) -> None:
        """The page submits a batch by itself when its last cell is labelled, then polls; a newer batch is
        loaded by that poll (here: by the poller, or at once when it already saw one)."""
        assert self.batch is not None
        if self.batch["id"] not in self.submitted:
            self._submit()
        if self.newest_batch_id is not None and self.newest_batch_id != self.batch["id"]:
            self._load_batch()

    def _label_body(self, item: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "cells": [item["cell"]],
            "seconds_spent": round(random.uniform(1.0, 3.0), 2),
            "client_key": str(uuid.uuid4()),
        }
        if random.random() < UNSURE_SHARE:
            body["unsure"] = True
        elif item.get("suggestion") and random.random() < ACCEPT_SHARE:
            body["label"] = item["suggestion"]
        else:
            body["label"] = random.choice(self.classes)
        return body

    def _label(self, item: dict[str, Any]) -> None:
        body = self._label_body(item)
        response = self._post_label(body, name="POST label")
        if response is None:
            return
        saved = response.json()["annotations"]
        item["mine"] = saved[0]
        RECORDED.acked.append(
            {
                "user": self.username,
                "key": body["client_key"],
                "cell": item["cell"],
                "ids": [a["id"] for a in saved],
            }
        )
        if random.random() < REPEAT_SHARE:
            self._repeat(body, first_ids=[a["id"] for a in saved])

    def _repeat(self, body: dict[str, Any], first_ids: list[int]) -> None:
        """The same request, same key, again: it must write nothing and answer like the first."""
        response = self._post_label(body, name="POST label (repeat, same client_key)")
        if response is None:
            return
        ids = [a["id"] for a in response.json()["annotations"]]
        headers = response.headers
        RECORDED.replays.append(
            {
                "user": self.username,
                "key": body["client_key"],
                "replayed_header": headers is not None and headers.get("Idempotent-Replayed") == "true",
                "same_ids": ids == first_ids,
            }
        )

    def _post_label(self, body: dict[str, Any], name: str) -> FastResponse | None:
        """POST a label; the answer when it is 2xx, else None (an unanswered or failed request is recorded:
        it may or may not have landed, so it counts neither as acknowledged nor as lost)."""
        with self.client.post(
            self.api["annotate"],
            data=json.dumps(body),
            headers=self._json_headers(),
            name=name,
            catch_response=True,
        ) as response:
            if 200 <= response.status_code < 300:
                return response
            RECORDED.unanswered.append(
                {"user": self.username, "key": body["client_key"], "status": response.status_code}
            )
            response.failure(f"{response.status_code}: {(response.text or '')[:200]}")
        return None

    def _submit(self) -> None:
        assert self.batch is not None
        batch_id = self.batch["id"]
        url = self.api["submit"].replace("{id}", str(batch_id))
        response = self.client.post(url, name="POST batch submit", headers=self._json_headers())
        RECORDED.submits.append({"user": self.username, "batch": batch_id, "status": response.status_code})
        if response.status_code == 202:
            self.submitted.add(batch_id)
