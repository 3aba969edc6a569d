"""Keep the labelling page's poll out of the terminal.

Every open labelling page asks for the loop's state every 1.5 s (``GET /api/projects/<id>/loop/``);
logged at INFO that is 40 lines a minute per page, which buries everything else `make run` prints. The
poll's successful answers are demoted to DEBUG here, for runserver (the ``django.server`` logger) and for
gunicorn's access log; a poll that fails (4xx, 5xx) is still logged as before.
"""

from __future__ import annotations

import logging
import re

# The requests a page repeats on a timer, as (method, path) patterns.
POLL_PATH = re.compile(r"^/api/projects/\d+/loop/$")


def is_quiet_poll(method: str, path: str, status: int) -> bool:
    """A successful repeat of a page's poll: nothing an operator needs to see at INFO."""
    return method == "GET" and status < 400 and POLL_PATH.match(path.split("?", 1)[0]) is not None


class DemotePollRequests(logging.Filter):
    """On ``django.server``: a poll's record becomes a DEBUG record, which INFO handlers then drop."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        # runserver logs '"%s" %s %s' with the request line, the status and the size.
        if len(args) >= 2 and isinstance(args[0], str):
            method, _, rest = args[0].partition(" ")
            path = rest.rsplit(" ", 1)[0]
            try:
                status = int(str(args[1]))
            except (TypeError, ValueError):
                return True
            if is_quiet_poll(method, path, status):
                record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True
